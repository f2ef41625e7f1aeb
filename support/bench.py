"""
Speed of the unmasking loop: every policy under every KV-cache mode, with accuracy, NFE, seconds per generated
sequence and the split of a step into dLLM forward / policy forward / everything else. Its own file because it
measures rather than evaluates: eval.py's rows are about accuracy, these are about time on one machine.

    python -m support.bench                                # both CPU shapes: the tiny world, then a mid-size transformer
    python -m support.bench --shape tiny                   # shipped tiny dLLM, chain task, L 32, BL 8, 500 problems
    python -m support.bench --shape mid                    # random d_model 1024 x 8 layers, prompt 200, L 256, BL 32
    python -m support.bench --shape llada --device cuda    # LLaDA-8B's exact shape, random weights (no download), bf16
    python -m support.bench --shape update                 # one tiny-world GRPO update, each of its two savings on and off

The mid and llada shapes have random weights: their accuracy means nothing (shown as '-'); their NFE follows the
policies' rules on a model that is never confident (threshold 0.9 falls back to one token per step). The learned
policy is a fresh one (unmask p = 0.12 per masked token a step) unless --policy names a checkpoint.
"""
import argparse
import time
from collections import defaultdict

import torch

from common.cli import check_args
from env import CACHES, generate, row_keys
from model import DLLM, ModelConfig, Transformer, build_shape, load_dllm, resolve_device
from policy import Knobs, Learned, LearnedPolicy, PolicyConfig, parse_policy
from sample import evaluate

SHAPES = {  # name -> L, BL, prompt length, sequences, batch size, and the heuristics timed by default
    "tiny": dict(L=32, BL=8, policies="threshold:0.9,topk:steps=8"),
    "mid": dict(L=256, BL=32, P=200, n=1, batch=1, policies="threshold:0.9,topk:steps=64"),
    "llada": dict(L=256, BL=32, P=200, n=16, batch=16, policies="threshold:0.9,topk:steps=64"),
}


class Clock:
    """Wall time of named calls, with the device synchronised around each (CUDA kernels are asynchronous)."""

    def __init__(self, device):
        self.t = defaultdict(float)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def wrap(self, name, fn):
        def timed(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            self.sync()
            self.t[name] += time.perf_counter() - t0
            return out
        return timed


def timed(dllm, policy, run):
    """Run `run()` with the dLLM's forwards and the policy's act timed -> (result, seconds, split dict)."""
    clock = Clock(dllm.device)
    saved = dllm.logits, dllm.logits_span, policy.act
    dllm.logits, dllm.logits_span = clock.wrap("dllm", dllm.logits), clock.wrap("dllm", dllm.logits_span)
    policy.act = clock.wrap("policy", policy.act)
    try:
        clock.sync()
        t0 = time.perf_counter()
        out = run()
        clock.sync()
        total = time.perf_counter() - t0
    finally:
        dllm.logits, dllm.logits_span = saved[:2]
        policy.act = saved[2]
    return out, total, dict(dllm_frac=clock.t["dllm"] / total, policy_frac=clock.t["policy"] / total,
                            other_frac=1 - (clock.t["dllm"] + clock.t["policy"]) / total)


def random_dllm(shape, device):
    """A randomly initialised dLLM of a given shape (bf16 on CUDA), with made-up special ids."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if shape == "mid":
        with torch.device(device):
            net = Transformer(ModelConfig(vocab_size=32000, d_model=1024, n_layers=8, n_heads=16, n_kv_heads=16,
                                          mlp_hidden=2816)).to(dtype)
    else:
        net = build_shape(shape, device).to(dtype)
        for p in net.parameters():   # LLaDA-like scale, so activations stay finite in bf16
            torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
    V = net.c.vocab_size
    return DLLM(net, None, shape, mask_id=V - 1, eos_id=1, pad_id=0)


def policies(specs, ckpt, device):
    out = [parse_policy(s, device) for s in specs.split(",") if s.strip()]
    if ckpt:
        out.append(parse_policy(ckpt, device))
    else:
        torch.manual_seed(0)
        out.append(Learned(LearnedPolicy(PolicyConfig()).to(device).eval(), Knobs(), "learned (fresh)"))
    return out


def bench_tiny(args, device):
    from tasks import get_problems
    dllm = load_dllm("tiny", device=device)
    problems = get_problems("chain", args.n, 0, "test")
    evaluate(dllm, parse_policy("threshold:0.9"), problems[:8], "chain", 32, 8, progress=False)   # warm-up
    rows = []
    c = SHAPES["tiny"]
    for pol in policies(args.policies or c["policies"], args.policy, device):
        for cache in args.caches:
            run = lambda: evaluate(dllm, pol, problems, "chain", c["L"], c["BL"], args.batch_size, progress=False,
                                   cache=cache)[0]
            row, secs, split = timed(dllm, pol, run)
            rows.append(dict(shape="tiny", policy=pol.spec, cache=cache, accuracy=row["accuracy"],
                             nfe=row["mean_nfe"], sec_per_seq=secs / len(problems), **split))
            print(line(rows[-1], rows), flush=True)
    return rows


def bench_random(args, device, shape):
    c = SHAPES[shape]
    dllm = random_dllm(shape, device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, dllm.vocab_size - 1, (c["n"], c["P"]), generator=g).to(device)
    am = torch.ones_like(ids)
    dllm.logits(ids[:1], am[:1])                                       # warm-up
    rows = []
    for pol in policies(args.policies or c["policies"], args.policy, device):
        for cache in args.caches:
            def run():
                nfe = 0
                for i in range(0, c["n"], c["batch"]):
                    r = generate(dllm, pol, ids[i:i + c["batch"]], am[i:i + c["batch"]], c["L"], c["BL"],
                                 keys=row_keys(0, torch.arange(i, i + c["batch"])), cache=cache)
                    nfe += r.nfe.sum().item()
                return nfe / c["n"]
            with torch.no_grad():
                nfe, secs, split = timed(dllm, pol, run)
            rows.append(dict(shape=shape, policy=pol.spec, cache=cache, accuracy=None, nfe=nfe,
                             sec_per_seq=secs / c["n"], **split))
            print(line(rows[-1], rows), flush=True)
    return rows


def per_position_modulation(self, masked, t, alpha=None):
    """LearnedPolicy.modulation as it was first written: ada applied to the conditioning at every position."""
    from policy import alpha_features, sinusoidal
    cond = self.mask_emb(masked.long()) + self.time_mlp(sinusoidal(t, self.c.width))[:, None]
    if self.conditioned:
        cond = cond + self.alpha_mlp(alpha_features(alpha, self.c.alpha_hi, self.c.width))[:, None]
    return self.ada(cond)


def bench_update(args, device):
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
    r = generate(dllm, Learned(pol, Knobs(fallback=False)), ids, am, 32, 8, record=True,
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


def line(r, rows):
    base = next((x for x in rows if x["shape"] == r["shape"] and x["policy"] == r["policy"] and x["cache"] == "none"), r)
    acc = f"{r['accuracy']:5.1f}" if r["accuracy"] is not None else "    -"
    return (f"{r['shape']:<6} {r['policy']:<20} {r['cache']:<7} {acc} {r['nfe']:7.2f} {r['sec_per_seq'] * 1000:10.1f} "
            f"{base['sec_per_seq'] / r['sec_per_seq']:6.2f}x  {100 * r['dllm_frac']:5.1f} {100 * r['policy_frac']:7.1f} "
            f"{100 * r['other_frac']:6.1f}")


HEAD = (f"{'shape':<6} {'policy':<20} {'cache':<7} {'acc %':>5} {'NFE':>7} {'ms / seq':>10} {'speed':>7}  "
        f"{'dLLM%':>5} {'policy%':>6} {'other%':>5}")


def main(argv=None):
    p = argparse.ArgumentParser(description="time the unmasking loop per policy and KV-cache mode",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shape", default="tiny,mid", help="comma-separated: tiny, mid, llada, update")
    p.add_argument("--policies", default=None, help="heuristic specs (default: threshold:0.9 and top-k at L/4 steps)")
    p.add_argument("--policy", default=None, help="a learned checkpoint to time (default: a fresh learned policy)")
    p.add_argument("--caches", default="none,prefix,dual", help="comma-separated cache modes")
    p.add_argument("--n", type=int, default=500, help="tiny shape: problems")
    p.add_argument("--batch-size", type=int, default=128, help="tiny shape: prompts per generate call")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: autodetect)")
    args = p.parse_args(argv)
    try:
        check_args(n=(args.n, "> 0"), batch_size=(args.batch_size, "> 0"), threads=(args.threads, ">= 0"))
        args.caches = [c for c in args.caches.split(",") if c.strip()]
        shapes = [s for s in args.shape.split(",") if s.strip()]
        bad = [c for c in args.caches if c not in CACHES] + [s for s in shapes if s not in SHAPES and s != "update"]
        if bad or not shapes or not args.caches:
            raise ValueError(f"unknown or missing --shape / --caches {bad}: shapes tiny, mid, llada, update; "
                             f"caches {CACHES}")
        device = resolve_device(args.device)
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
        if set(shapes) - {"update"}:
            print(HEAD)
        rows = []
        for shape in shapes:
            rows += (bench_tiny(args, device) if shape == "tiny" else bench_update(args, device) if shape == "update"
                     else bench_random(args, device, shape))
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    return rows


if __name__ == "__main__":
    main()
