"""
Speed of the unmasking loop: every policy under every KV-cache mode, with accuracy, NFE, milliseconds per generated
sequence, the speed-up over no cache, how many rows a dLLM forward carries, what the dLLM forward reaches against
the device's own matmul rate, and the split of a step into dLLM forward / policy / the rest. Its own file because it
measures rather than evaluates: eval.py's rows are about accuracy, these are about time on one machine.

    python -m support.bench                                # the CPU shapes: the tiny world, then a mid-size transformer
    python -m support.bench --shape tiny                   # shipped tiny dLLM, chain task, L 32, BL 8, 500 problems
    python -m support.bench --shape mid                    # random d_model 1024 x 8 layers, prompt 200, L 256, BL 32
    python -m support.bench --shape llada --device cuda    # LLaDA-8B's exact shape, random weights (no download), bf16
    python -m support.bench --shape modes --device cuda    # one forward per decoding mode at LLaDA-8B's shape, and more
    python -m support.bench --shape grpo --device cuda     # one GRPO round at the paper's shapes, per cache, peak memory
    python -m support.bench --plan --model llada           # the memory plan of the paper's shapes, per cache and T
    python -m support.bench --shape update                 # one tiny-world GRPO update, each of its two savings on and off

Every policy, cache and shape is run once untimed before it is timed (the first call of a shape pays for kernel
selection and allocation). The mid, llada and grpo shapes have random weights: their accuracy means nothing (shown as
'-'); their NFE follows each rule on a model that is never confident (threshold 0.9 falls back to one token a step).
The learned policy is a fresh one (unmask p 0.12 per masked token a step) unless --policy names a checkpoint.
"""
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from common.cli import check_args, check_counts, check_threads, interrupted, option, parse_config
from decode import evaluate, parse_policy
from env import CACHES, generate, row_keys
from common.memory import GiB, decode_plan, grpo_plan
from common.memory import check as check_memory
from common.hub import SHAPES as MODEL_SHAPES
from common.hub import config_fields, resolve_device
from model import DLLM, ModelConfig, Transformer, load_dllm
from policy import READS, Knobs, Learned, LearnedPolicy, PolicyConfig

SHAPES = {  # name -> L, BL, prompt length, sequences, batch size, and the heuristics timed by default
    "tiny": dict(L=32, BL=8, policies="threshold:0.9,topk:steps=8"),
    "mid": dict(L=256, BL=32, P=200, n=1, batch=1, policies="threshold:0.9,topk:steps=64"),
    "small": dict(L=64, BL=16, P=32, n=4, batch=4, policies="threshold:0.9,topk:steps=16"),   # a dry run of the others
    "llada": dict(L=256, BL=32, P=200, n=16, batch=16, policies="threshold:0.9,topk:steps=64"),
}


@dataclass
class BenchConfig:
    shape: str = option("tiny,mid", "comma-separated: tiny, mid, small, llada, modes, grpo, update")
    policies: str = option(None, "hand-rule specs (default: threshold:0.9 and top-k at L/4 steps)")
    policy: str = option(None, "a learned checkpoint to time (default: a fresh learned policy)")
    caches: str = option("none,prefix,dual", "comma-separated cache modes")
    num_problems: int = option(500, "tiny shape: problems (--n for short)")
    batch_size: int = option(128, "tiny shape: prompts per generate call")
    threads: int = option(0, "torch threads on CPU (0: torch's default)")
    device: str = option(None, "cuda, mps or cpu (default: autodetect)")
    compile: bool = option(False, "torch.compile the dLLM's forward (DLLM.compile); the warm-up is then a whole untimed run")
    grpo_model: str = option(None, "grpo shape: the random model's shape, llada, mid or small (default: llada on CUDA, mid "
                                   "elsewhere)")
    temperature: float = option(0.0, "the dLLM's sampling temperature in the random shapes and the GRPO round")
    merge: bool = option(False, "merge q/k/v and gate/up in the random shapes on a CPU too (load_dllm does on CUDA)")
    plan: bool = option(False, "print the memory plan of --model's paper shapes per cache and temperature, run nothing")
    model: str = option("llada", "--plan: llada or dream")
    device_memory: float = option(80.0, "--plan: the device's memory in GiB to compare with")


class Meter:
    """What a run spends: wall time of the dLLM forwards and of the policy's act (CUDA events on a GPU, so nothing
    waits for the device), the forwards and the rows they carried. wrap() instruments a function."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.t, self.events = defaultdict(float), defaultdict(list)
        self.forwards, self.rows, self.flops, self.steps = 0, 0, 0.0, 0

    def wrap(self, name, fn, count=None):
        def timed(*a, **k):
            if count:
                count(*a, **k)
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*a, **k)
                end.record()
                self.events[name].append((start, end))
                return out
            t0 = time.perf_counter()
            out = fn(*a, **k)
            self.t[name] += time.perf_counter() - t0
            return out
        return timed

    def seconds(self, name):
        if self.cuda:
            torch.cuda.synchronize()
            return self.t[name] + sum(s.elapsed_time(e) for s, e in self.events[name]) / 1000
        return self.t[name]


def forward_flops(c, rows, n, context, read):
    """Matmul FLOPs of one forward of `rows` sequences computing n positions each, attending to `context` positions,
    with the LM head on `read` of them: 2 per weight per token, and the attention's two matmuls."""
    d, hd = c.d_model, c.d_model // c.n_heads
    per_token = 2 * (d * (c.n_heads + 2 * c.n_kv_heads) * hd + c.n_heads * hd * d + 3 * d * c.mlp_hidden)
    attention = 4 * c.n_heads * hd * context
    return rows * (n * c.n_layers * (per_token + attention) + read * 2 * d * c.vocab_size)


def matmul_rate(device):
    """The device's own dense matmul rate (FLOP/s): an 8192^3 bf16 matmul on a GPU, 2048^3 float32 on a CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    t0, reps = time.perf_counter(), 10 if device.type == "cuda" else 3
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def instrument(dllm, policy, meter):
    """Wrap the dLLM's forwards and the policy's act with meter (rows, forwards, FLOPs); -> a function that undoes it."""
    c = dllm.net.c
    saved = dllm.logits, dllm.logits_span, policy.act

    def full(x, am=None, start=0, **k):
        meter.forwards += 1
        meter.rows += x.shape[0]
        meter.flops += forward_flops(c, x.shape[0], x.shape[1], x.shape[1], x.shape[1] - start)

    def span(x, am, start, lo, hi, cache, run_to=None):
        n = (run_to if run_to is not None else hi) - lo
        meter.forwards += 1
        meter.rows += x.shape[0]
        meter.flops += forward_flops(c, x.shape[0], n, x.shape[1], hi - lo)
    def step(obs):
        meter.steps += 1
    dllm.logits = meter.wrap("dllm", dllm.logits, full)
    dllm.logits_span = meter.wrap("dllm", dllm.logits_span, span)
    policy.act = meter.wrap("policy", policy.act, step)

    def undo():
        dllm.logits, dllm.logits_span = saved[:2]
        policy.act = saved[2]
    return undo


def measure(dllm, policy, run, warm, rate):
    """warm() untimed (the same shapes, a smaller run), then run() timed -> (its result, seconds, dict of the split
    and the forward's figures)."""
    warm()
    meter = Meter(dllm.device)
    undo = instrument(dllm, policy, meter)
    sync = torch.cuda.synchronize if dllm.device.type == "cuda" else (lambda: None)
    try:
        sync()
        t0 = time.perf_counter()
        out = run()
        sync()
        total = time.perf_counter() - t0
        fwd, pol = meter.seconds("dllm"), meter.seconds("policy")
    finally:
        undo()
    return out, total, dict(dllm_frac=fwd / total, policy_frac=pol / total, other_frac=1 - (fwd + pol) / total,
                            forwards=meter.forwards, forwards_per_step=meter.forwards / max(meter.steps, 1),
                            rows_per_forward=meter.rows / max(meter.forwards, 1),
                            tflops=meter.flops / max(fwd, 1e-9) / 1e12, of_rate=meter.flops / max(fwd, 1e-9) / rate)


DIMS = dict(mid=dict(vocab_size=32000, d_model=1024, n_layers=8, n_heads=16, n_kv_heads=16, mlp_hidden=2816),
            small=dict(vocab_size=4096, d_model=256, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=512))


def shape_config(shape):
    """The ModelConfig of a random model: our own mid and small shapes, or a real model's (llada, dream)."""
    return ModelConfig(**(DIMS[shape] if shape in DIMS else config_fields(MODEL_SHAPES[shape])[0]))


def dtype_bytes(device):
    return 2 if device.type == "cuda" else 4   # bf16 on CUDA, float32 elsewhere


def random_dllm(shape, device, merge=None):
    """A randomly initialised dLLM of a given shape (bf16 on CUDA), with made-up special ids; its projections merged
    as load_dllm merges them (on CUDA; merge=True forces it anywhere)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        net = Transformer(shape_config(shape)).to(dtype)
    if shape not in DIMS:
        for p in net.parameters():   # LLaDA-like scale, so activations stay finite in bf16
            torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
    if merge or (merge is None and device.type == "cuda"):
        net.merge_projections()
    V = net.c.vocab_size
    return DLLM(net, None, shape, mask_id=V - 1, eos_id=1, pad_id=0)


def policies(specs, ckpt, device, init_bias=-2.0):
    """The hand rules of specs, and the checkpoint or a fresh learned policy (unmask p = sigmoid(init_bias))."""
    out = [parse_policy(s, device) for s in specs.split(",") if s.strip()]
    if ckpt:
        out.append(parse_policy(ckpt, device))
    else:
        torch.manual_seed(0)
        out.append(Learned(LearnedPolicy(PolicyConfig(init_bias=init_bias)).to(device).eval(), Knobs(),
                           f"learned (fresh, p {torch.sigmoid(torch.tensor(init_bias)).item():.2f})"))
    return out


def bench_tiny(cfg, device, rate):
    from tasks import get_problems
    dllm = load_dllm("tiny", device=device)
    if cfg.compile:
        dllm.compile()
    problems = get_problems("chain", cfg.num_problems, 0, "test")
    rows, c = [], SHAPES["tiny"]
    for pol in policies(cfg.policies or c["policies"], cfg.policy, device, init_bias=0.0):   # as train.py in blocks
        for cache in cfg.caches:
            run = lambda n: evaluate(dllm, pol, problems[:n], "chain", c["L"], c["BL"], cfg.batch_size,
                                     progress=False, cache=cache)[0]
            whole = lambda: run(len(problems))   # compiled: warm up on the whole run (every shape it meets)
            row, secs, split = measure(dllm, pol, whole, whole if cfg.compile else lambda: run(cfg.batch_size), rate)
            rows.append(dict(shape="tiny", policy=pol.spec, cache=cache, accuracy=row["accuracy"], nfe=row["mean_nfe"],
                             sec_per_seq=secs / len(problems), **split))
            print(line(rows[-1], rows), flush=True)
    return rows


def prompts(dllm, n, P, device):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, dllm.vocab_size - 1, (n, P), generator=g).to(device)
    return ids, torch.ones_like(ids)


def bench_random(cfg, device, shape, rate):
    c = SHAPES[shape]
    dllm = random_dllm(shape, device, cfg.merge or None)
    if cfg.compile:
        dllm.compile()
    ids, am = prompts(dllm, c["n"], c["P"], device)
    rows = []
    for pol in policies(cfg.policies or c["policies"], cfg.policy, device):
        for cache in cfg.caches:
            def run(L=c["L"]):
                nfe = 0
                for i in range(0, c["n"], c["batch"]):
                    r = generate(dllm, pol, ids[i:i + c["batch"]], am[i:i + c["batch"]], L, c["BL"], cfg.temperature,
                                 keys=row_keys(0, torch.arange(i, i + c["batch"])), cache=cache)
                    nfe += r.nfe.sum().item()
                return nfe / c["n"]
            with torch.no_grad():   # warm-up: two blocks (a refresh and the cached steps after it); compiled: all
                nfe, secs, split = measure(dllm, pol, run, run if cfg.compile else lambda: run(2 * c["BL"]), rate)
            rows.append(dict(shape=shape, policy=pol.spec, cache=cache, accuracy=None, nfe=nfe,
                             sec_per_seq=secs / c["n"], **split))
            print(line(rows[-1], rows), flush=True)
    return rows


def grpo_round(dllm, ids, am, G, L, BL, cache, temperature=0.0, chunk=None, sync=lambda: None, init_bias=-2.0):
    """One GRPO round as train.py runs it: G rollouts of a fresh policy and 1 of threshold:0.9 per prompt (ids, am:
    (P, prompt length)), random correctness (the weights are random), then the update (two optimizer steps over every
    recorded step, `chunk` at a time: default all); the fresh policy unmasks p = sigmoid(init_bias).
    -> (rollout seconds, update seconds, policy NFE, recorded steps)."""
    from grpo import advantages, collate, concat_batches, grpo_loss, old_expert_log_probs, rewards
    P, device = len(ids), ids.device
    torch.manual_seed(0)
    pol = LearnedPolicy(PolicyConfig(init_bias=init_bias)).to(device)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        mine = generate(dllm, Learned(pol.eval(), Knobs(fallback=False)), ids.repeat_interleave(G, 0),
                        am.repeat_interleave(G, 0), L, BL, temperature, record=READS,
                        keys=row_keys(0, torch.arange(P * G)), cache=cache)
        theirs = generate(dllm, parse_policy("threshold:0.9"), ids, am, L, BL, temperature,
                          record=READS, keys=row_keys(1, torch.arange(P)), cache=cache)
    sync()
    t_roll = time.perf_counter() - t0
    correct = torch.rand(P * (G + 1), generator=torch.Generator().manual_seed(0)).to(device) < 0.5
    R = rewards(correct, torch.cat([mine.nfe, theirs.nfe]), L, 3.0)
    A = advantages(torch.cat([R[:P * G].view(P, G), R[P * G:].view(P, 1)], 1).reshape(-1), G + 1).view(P, G + 1)
    A = torch.cat([A[:, :G].reshape(-1), A[:, G:].reshape(-1)])
    nfe = mine.nfe.float().mean().item()
    eb = collate(theirs.steps, expert=True)
    batch = collate(mine.steps)
    del mine, theirs
    chunk = chunk or len(batch["row"]) + len(eb["row"])
    old_expert_log_probs(pol, eb, (G, 1), chunk)
    batch = concat_batches(batch, eb, P * G)
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(pol.parameters(), lr=3e-5)
    pol.train()
    for k in range(2):
        opt.zero_grad(set_to_none=True)
        grpo_loss(pol, batch, A, len(A), 0.5, chunk=chunk, mixture_sizes=(G, 1), metrics=k == 1)
        opt.step()
    sync()
    return t_roll, time.perf_counter() - t0, nfe, len(batch["row"])


def bench_grpo(cfg, device):
    """One GRPO round at the paper's shapes: 16 prompts x (8 rollouts of a fresh policy + 1 of threshold:0.9), L 256,
    BL 32, prompt 200 (the small shape: 4 prompts x (4 + 1), L 64, BL 16, prompt 32), on a random model (LLaDA-8B's
    shape on CUDA): per cache, the rollouts and the update (loss chunks of 16 x L steps, train.py's), each with its
    peak device memory beside the plan's."""
    shape = cfg.grpo_model or ("llada" if device.type == "cuda" else "mid")
    P, G, L, BL, prompt = GRPO_SHAPE[shape == "small"]
    dllm = random_dllm(shape, device, cfg.merge or None)
    if cfg.compile:
        dllm.compile()
    ids, am = prompts(dllm, P, prompt, device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(f"grpo: {shape} shape, {P} prompts x ({G} + 1 expert) rollouts, L {L}, BL {BL}, prompt {prompt}, "
          f"T {cfg.temperature:g}", flush=True)
    rows = []
    for cache in cfg.caches:
        plan = grpo_plan(dllm.net.c, dtype_bytes(device), P, G, 1, prompt, L, cache, cfg.temperature, 16 * L,
                         device.type)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t_roll, t_upd, nfe, steps = grpo_round(dllm, ids, am, G, L, BL, cache, cfg.temperature, 16 * L, sync)
        peak = torch.cuda.max_memory_allocated(device) / GiB if cuda else float("nan")   # the CPU's: tests/test_memory.py
        plan_gib = (plan.total - plan.terms["runtime"]) / GiB
        rows.append(dict(shape="grpo", cache=cache, rollout_s=t_roll, update_s=t_upd, peak_gib=peak, plan_gib=plan_gib,
                         nfe=nfe, steps=steps))
        print(f"grpo   cache {cache:<6} rollouts {t_roll:7.1f} s (policy NFE {nfe:.1f}, {steps} recorded steps)   "
              f"update {t_upd:6.1f} s   peak memory {peak:.1f} GiB (plan {plan_gib:.1f})", flush=True)
    return rows


def timed(fn, sync, reps):
    """Median seconds of fn() over reps calls, after one untimed call."""
    fn()
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return sorted(out)[len(out) // 2]


def bench_modes(cfg, device, rate):
    """One forward per decoding mode at the paper's shapes (prompt 200, L 256, BL 32; the small shape on a CPU):
    uncached, a block's first step (which also returns the cache), a prefix-cache step and a dual-cache step, at batch
    16 and 64, with projections merged as load_dllm merges them; then what a padding mask costs, the cache's bytes
    against what it needs, token_stats, the policy's act at 16 and 128 rows, and one compiled dual step. Each figure
    is printed as soon as it is measured."""
    from common.memory import kv_bytes
    from env import Obs
    from steps import token_stats
    shape = cfg.grpo_model or ("llada" if device.type == "cuda" else "small")
    dllm = random_dllm(shape, device, merge=True)
    c, cuda = dllm.net.c, device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    P, L, BL, reps = (200, 256, 32, 5) if shape != "small" else (32, 64, 16, 2)
    lo, hi = BL, 2 * BL                                          # the second block
    rows = []

    def report(name, b, secs, flops=None, extra=""):
        r = dict(shape="modes", what=name, batch=b, ms=secs * 1000, tflops=flops / secs / 1e12 if flops else None,
                 of_rate=flops / secs / rate if flops else None)
        rows.append(r)
        fl = f"{r['tflops']:8.2f} TFLOP/s {100 * r['of_rate']:5.1f}% of the matmul rate" if flops else ""
        print(f"modes  {name:<28} batch {b:>3} {secs * 1000:9.2f} ms {fl} {extra}", flush=True)
    print(f"modes: {shape} shape, merged projections, prompt {P}, L {L}, BL {BL}, "
          f"{'bf16' if cuda else 'float32'}", flush=True)
    for b in (16, 64) if shape != "small" else (4, 8):
        ids, _ = prompts(dllm, b, P, device)
        x = torch.cat([ids, torch.full((b, L), dllm.mask_id, device=device)], 1)
        N = P + L
        with torch.no_grad():
            report("uncached", b, timed(lambda: dllm.logits(x, None, start=P), sync, reps), forward_flops(c, b, N, N, L))
            ones = torch.ones_like(x)
            report("uncached, padding mask", b, timed(lambda: dllm.logits(x, ones, start=P), sync, reps),
                   forward_flops(c, b, N, N, L))
            report("block-first (returns cache)", b, timed(lambda: dllm.logits(x, None, start=P, return_kv=True), sync,
                                                           reps), forward_flops(c, b, N, N, L))
            _, kv = dllm.logits(x, None, start=P, return_kv=True)
            held = sum(t.untyped_storage().nbytes() for K, V in kv for t in (K, V))
            need = kv_bytes(c, dtype_bytes(device), b, N)
            report("prefix step", b, timed(lambda: dllm.logits_span(x, None, P, lo, hi, kv, run_to=L), sync, reps),
                   forward_flops(c, b, L - lo, N, BL))
            report("dual step", b, timed(lambda: dllm.logits_span(x, None, P, lo, hi, kv), sync, reps),
                   forward_flops(c, b, BL, N, BL), f"  cache holds {held / 2 ** 20:.1f} MiB, needs {need / 2 ** 20:.1f} "
                   f"({held / need:.3f}x)")
            logits = dllm.logits_span(x, None, P, lo, hi, kv)
            seeds = torch.arange(b, device=device)
            for T in (0.0, 0.8):
                report(f"token_stats, T {T:g}", b, timed(lambda: token_stats(logits, T, seeds if T else None), sync, reps))
            del kv, logits
    torch.manual_seed(0)
    net = LearnedPolicy(PolicyConfig()).to(device).eval()
    for b in (16, 128):
        conf = torch.rand(b, L, device=device)
        masked = torch.rand(b, L, device=device) < 0.5
        cand = masked & (torch.arange(L, device=device) // BL == 1)
        obs = Obs(conf.long(), conf, masked, cand, torch.full((b,), 0.3, device=device),
                  torch.zeros(b, dtype=torch.long, device=device), L // BL, torch.arange(b, device=device))
        report("policy act (float32)", b, timed(lambda: net.act(obs), sync, 10 * reps))
    if cfg.compile:
        b = 16 if shape != "small" else 4
        ids, _ = prompts(dllm, b, P, device)
        x = torch.cat([ids, torch.full((b, L), dllm.mask_id, device=device)], 1)
        dllm.compile()
        with torch.no_grad():
            _, kv = dllm.logits(x, None, start=P, return_kv=True)
            t0 = time.perf_counter()
            dllm.logits_span(x, None, P, lo, hi, kv)
            sync()
            print(f"modes  compiling the dual step took {time.perf_counter() - t0:.1f} s", flush=True)
            report("dual step, compiled", b, timed(lambda: dllm.logits_span(x, None, P, lo, hi, kv), sync, reps),
                   forward_flops(c, b, BL, P + L, BL))
            report("uncached, compiled", b, timed(lambda: dllm.logits(x, None, start=P), sync, reps),
                   forward_flops(c, b, P + L, P + L, L))
    return rows


GRPO_SHAPE = {False: (16, 8, 256, 32, 200), True: (4, 4, 64, 16, 32)}   # prompts, G, L, BL, prompt length (small?)


def check_shapes(cfg, shapes, device):
    """Each random shape's memory plan against the device, before any model is built."""
    lower = "--shape / --grpo-model (the llada shape needs a GPU)"
    for shape in shapes:
        for cache in cfg.caches:
            if shape in ("mid", "small", "llada"):
                c = SHAPES[shape]
                plan = decode_plan(shape_config(shape), dtype_bytes(device), c["batch"], c["P"], c["L"], cache,
                                   cfg.temperature, device=device.type, what=f"the {shape} shape, cache {cache}")
            elif shape == "grpo":
                model = cfg.grpo_model or ("llada" if device.type == "cuda" else "mid")
                P, G, L, _, prompt = GRPO_SHAPE[model == "small"]
                plan = grpo_plan(shape_config(model), dtype_bytes(device), P, G, 1, prompt, L, cache, cfg.temperature,
                                 16 * L, device.type)
            else:
                continue
            check_memory(plan, device, lower, loaded=("runtime",))


def print_plan(cfg):
    """The memory plan of --model's paper shapes (prompt 200, L 256, BL 32, bf16): decoding batches of 16 and 64 and
    one GRPO round of 16 x (8 + 1) rollouts (loss chunks of 16 x L steps), per cache and temperature, against
    --device-memory GiB."""
    c, have = shape_config(cfg.model), cfg.device_memory * GiB
    print(f"memory plan: {cfg.model} (bf16), prompt 200, L 256, BL 32; a device of {cfg.device_memory:g} GiB")
    print(f"{'run':<26} {'cache':<7} {'T':>4} {'GiB':>7}  fits  largest terms (GiB)")
    rows = []
    for cache in cfg.caches:
        for T in (0.0, 0.8):
            plans = [(f"decode, batch {b}", decode_plan(c, 2, b, 200, 256, cache, T, device="cuda")) for b in (16, 64)]
            plans.append(("GRPO round 16 x (8 + 1)", grpo_plan(c, 2, 16, 8, 1, 200, 256, cache, T, 16 * 256, "cuda")))
            for name, p in plans:
                rows.append(dict(run=name, cache=cache, temperature=T, gib=p.total / GiB, fits=p.total <= have))
                print(f"{name:<26} {cache:<7} {T:4.1f} {p.total / GiB:7.1f}  {'yes' if p.total <= have else 'NO ':<4}  "
                      f"{p.line()}")
    return rows


def per_position_modulation(self, masked, t, alpha=None):
    """LearnedPolicy.modulation as it was first written: ada applied to the conditioning at every position."""
    from policy import alpha_features, sinusoidal
    cond = self.mask_emb(masked.long()) + self.time_mlp(sinusoidal(t, self.c.width))[:, None]
    if self.conditioned:
        cond = cond + self.alpha_mlp(alpha_features(alpha, self.c.alpha_hi, self.c.width))[:, None]
    return self.ada(cond)


def bench_update(cfg, device):
    """One GRPO update (train.py's two optimizer steps' losses and backwards) on the recorded steps of a tiny-world
    batch: 16 prompts x 8 rollouts of a fresh semi-AR policy (BL 8, unmask p 0.5, alpha 3: the suite's start), timed
    with and without the two savings: no backward for zero-advantage rollouts, and the per-row modulation."""
    from grpo import advantages, collate, grpo_loss, rewards
    from tasks import get_problems, grade_many, prompts_of
    dllm = load_dllm("tiny", device=device)
    problems = get_problems("chain", 16, 0, "train")
    ids, am = prompts_of(dllm, problems)
    ids, am = ids.repeat_interleave(8, 0), am.repeat_interleave(8, 0)
    torch.manual_seed(0)
    pol = LearnedPolicy(PolicyConfig(init_bias=0.0)).to(device).eval()
    r = generate(dllm, Learned(pol, Knobs(fallback=False)), ids, am, 32, 8, record=READS,
                 keys=row_keys(0, torch.arange(len(ids))))
    correct = torch.tensor(grade_many("chain", [problems[i // 8] for i in range(len(ids))],
                                      [dllm.decode(x.tolist()) for x in r.tokens.cpu()]), device=device)
    A = advantages(rewards(correct, r.nfe, 32, 3.0, "mult"), 8)
    batch = collate(r.steps)
    zero = (A[batch["row"]] == 0).float().mean().item()
    print(f"update: {len(batch['row'])} recorded steps of {len(A)} rollouts, {100 * zero:.1f}% of them in "
          f"zero-advantage rollouts ({100 * correct.float().mean().item():.1f}% of the rollouts right)")
    pol.train()
    rows = []
    for name, skip, modulation in (("every step, per-position ada", False, per_position_modulation),
                                   ("every step, per-row ada", False, None),
                                   ("skip zero-adv, per-row ada (train.py)", True, None)):
        saved = LearnedPolicy.modulation
        if modulation:
            LearnedPolicy.modulation = modulation
        try:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for k in range(2):
                    pol.zero_grad(set_to_none=True)
                    if skip:
                        grpo_loss(pol, batch, A, len(A), 0.5, chunk=128 * 32, metrics=k == 1)
                    else:   # the objective over every step, 128 rollouts' worth at a time
                        every_step(pol, batch, A, 128 * 32)
                best = min(best, time.perf_counter() - t0)
        finally:
            LearnedPolicy.modulation = saved
        rows.append(dict(shape="update", what=name, seconds=best))
        print(f"update  {name:<40} {best:7.2f} s  {rows[0]['seconds'] / best:5.2f}x", flush=True)
    return rows


def every_step(pol, batch, A, chunk):
    """grpo_objective back-propagated over every recorded step, zero-advantage ones included (what grpo_loss saves)."""
    from grpo import grpo_objective, step_log_prob
    row = batch["row"]
    steps = torch.zeros(len(A)).index_add_(0, row, torch.ones_like(row, dtype=torch.float))[row]
    for i in range(0, len(row), chunk):
        sl = slice(i, i + chunk)
        _, logp = step_log_prob(pol, batch, sl)
        grpo_objective(logp, batch["logp_old"][sl], A[row[sl]], steps[sl], len(A), 0.5).backward()


HEAD = (f"{'shape':<6} {'policy':<24} {'cache':<7} {'acc %':>5} {'NFE':>7} {'ms / seq':>10} {'speed':>6} {'fwd/step':>8} "
        f"{'rows/fwd':>8} {'TFLOP/s':>8} {'of rate':>7}  {'dLLM%':>5} {'policy%':>7} {'other%':>6}")


def line(r, rows):
    base = next((x for x in rows if x["shape"] == r["shape"] and x["policy"] == r["policy"] and x["cache"] == "none"), r)
    acc = f"{r['accuracy']:5.1f}" if r["accuracy"] is not None else "    -"
    return (f"{r['shape']:<6} {r['policy'][:24]:<24} {r['cache']:<7} {acc} {r['nfe']:7.2f} {r['sec_per_seq'] * 1000:10.1f} "
            f"{base['sec_per_seq'] / r['sec_per_seq']:5.2f}x {r['forwards_per_step']:8.2f} {r['rows_per_forward']:8.1f} "
            f"{r['tflops']:8.2f} {100 * r['of_rate']:6.1f}%  {100 * r['dllm_frac']:5.1f} {100 * r['policy_frac']:7.1f} "
            f"{100 * r['other_frac']:6.1f}")


def main(argv=None):
    try:
        cfg, _ = parse_config(BenchConfig, argv, "time the unmasking loop per policy and KV-cache mode",
                              "python -m support.bench")
        check_counts(num_problems=(cfg.num_problems, 1), batch_size=(cfg.batch_size, 1))
        check_threads(cfg.threads)
        caches = [c for c in cfg.caches.split(",") if c.strip()]
        shapes = [s for s in cfg.shape.split(",") if s.strip()]
        bad = [c for c in caches if c not in CACHES]
        bad += [s for s in shapes if s not in SHAPES and s not in ("update", "grpo", "modes")]
        bad += [cfg.grpo_model] if cfg.grpo_model not in (None, "llada", "mid", "small") else []
        if bad or not shapes or not caches:
            raise ValueError(f"unknown or missing --shape / --caches / --grpo-model {bad}: shapes tiny, mid, small, llada, "
                             f"modes, grpo, update; caches {CACHES}; grpo models llada, mid, small")
        cfg = dataclasses.replace(cfg, caches=caches)
        if cfg.plan:
            if cfg.model not in ("llada", "dream"):
                raise ValueError(f"--plan --model {cfg.model!r}: use llada or dream")
            return print_plan(cfg)
        check_args(temperature=(cfg.temperature, ">= 0"), device_memory=(cfg.device_memory, "> 0"))
        device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        check_shapes(cfg, shapes, device)
        rate = matmul_rate(device) if set(shapes) & (set(SHAPES) | {"modes"}) else 1.0
        print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
              + (f"; measured matmul rate {rate / 1e12:.2f} TFLOP/s" if rate > 1 else ""))
        if set(shapes) & set(SHAPES):
            print(HEAD)
        rows = []
        for shape in shapes:
            rows += (bench_tiny(cfg, device, rate) if shape == "tiny" else bench_update(cfg, device) if shape == "update"
                     else bench_grpo(cfg, device) if shape == "grpo" else bench_modes(cfg, device, rate)
                     if shape == "modes" else bench_random(cfg, device, shape, rate))
    except KeyboardInterrupt:
        raise interrupted("interrupted") from None
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")
    return rows


if __name__ == "__main__":
    main()
