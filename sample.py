"""
Compare unmasking policies on a task: accuracy, mean NFE, tokens per NFE and seconds for each,
through the one env.generate loop, and show generations with the step at which each token was
revealed. With --samples K each problem is decoded K times (distinct noise for the dLLM and the
policy): pass@k by the unbiased estimator 1 - C(K - c, k) / C(K, k) for c right of K, and majority
vote (the final answer given most often, right when it is the gold one). Under torchrun each rank
decodes its share of the problems and rank 0 prints the table: the rows are those of one process.

    python sample.py                                                            # the shipped policy vs hand rules
    python sample.py --block-length 8 --temperature 0.8                        # ... in blocks of 8, sampling
    python sample.py --policies "topk:steps=32,threshold:0.9,band:hi=0.9:lo=0.08" --n 500
    python sample.py --policy out/ckpt.pt --policies "threshold:0.9" --show 2   # model, L, BL from the checkpoint
    python sample.py --policies threshold:0.6 --temperature 0.8 --samples 4 --n 32 --block-length 8   # pass@k
    torchrun --nproc_per_node=2 sample.py --policies threshold:0.9 --num-problems 500 --device cpu
"""
from common.start import quiet_ctrl_c

quiet_ctrl_c(__name__)

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass

import torch

from common.checkpoints import read_checkpoint
from common.cli import (MAX_COUNT, append_records, check_args, check_counts, check_out_file,
                        check_seed, check_threads, failed, interrupted, option, parse_config,
                        waiting_lock, write_json)
from common.dist import finish, gather, init_ranks, on_sigterm, stopped
from common.hub import check_model_name, resolve_device
from common.memory import check_buffer
from decode import checkpoint_of, decode, parse_policies, records_of, row_of
from env import check_decoding
from model import load_dllm
from policy import Learned
from tasks import check_split, check_task, get_problems, prompts_of


# What `python sample.py` with no policy flag compares: the shipped policy (one for every block
# length and dLLM temperature, read here in full diffusion at T = 0 unless flags say otherwise) and
# these hand rules.
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "policy.pt")
HEURISTICS = "topk:steps=32,threshold:0.9,eb:gamma=0.01,pc:lam=1:steps=8,band:hi=0.9:lo=0.08"
# unless a checkpoint sets them
SETUP_DEFAULTS = dict(model="tiny", task="chain", gen_length=32, block_length=32)


@dataclass
class SampleConfig:
    model: str = option(
        None,
        "dLLM: tiny, tiny-b, llada, llada-1.5, dream, a local dir or *.pt (default tiny, or the "
        "checkpoint's)")
    task: str = option(
        None,
        "chain, sub (tiny world), gsm8k, math500, humaneval, mbpp (default chain, or the "
        "checkpoint's)")
    policies: str = option(
        None, "comma-separated policy specs, e.g. 'topk:steps=32,threshold:0.9,out/ckpt.pt' (none "
        "given: the shipped policy and five hand rules)")
    policy: str = option(
        None, "a learned policy checkpoint (ckpt.pt, ckpt.pt:alpha=A); sets model, task, L and BL "
        "unless given")
    gen_length: int = option(None, "L, the generation buffer (default 32, or the checkpoint's)")
    block_length: int = option(None,
                               "BL; BL == L is full diffusion (default 32, or the checkpoint's)")
    num_problems: int = option(500, "number of problems (--n for short)")
    samples: int = option(
        1, "completions per problem (distinct noise each): pass@k and majority vote when > 1")
    batch_size: int = option(128, "completions per generate call")
    temperature: float = option(0.0, "dLLM sampling temperature (0: greedy)")
    tau: float = option(
        None, "policy temperature for the learned policies (default: the one stored in each)")
    seed: int = option(0, "problem set and every random draw")
    data: str = option(None,
                       "local jsonl for gsm8k / math500 / humaneval / mbpp (official layouts)")
    split: str = option("test", "problem split: train, validation (tiny tasks, MBPP) or test")
    json: str = option(None, "write the rows to this JSON file (its folder is created)")
    records: str = option(
        None, "write every completion (text, both graders' answers and verdicts, NFE) as a JSON "
        "line to this file (default with --json: beside it, NAME.records.jsonl)")
    show: int = option(
        0, "print K generations per policy with the step at which each token was revealed")
    cache: str = option("none",
                        "KV cache: none, prefix, dual (semi-AR only; approximate, see env.py)")
    device: str = option(
        None, "cuda, cuda:N, mps or cpu (default: autodetect; under torchrun each rank's GPU)")
    revision: str = option(None, "hub revision of the dLLM")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    compile: bool = option(
        False, "torch.compile the dLLM's forward, cached or not (logits within ~1e-5 of eager)")


# --------------------------------------------------------------------------------------------------
# the script

def show_generation(dllm, problem, tokens, order, text, ok):
    """Two aligned lines: each generated token, and the step (NFE) at which it was unmasked."""
    toks = [("." if t == dllm.eos_id else dllm.decode([t]) or "?")
            if dllm.is_tiny else dllm.tokenizer.decode([t]) for t in tokens.tolist()]
    steps = [str(s) if s else "-" for s in order.tolist()]
    w = [max(len(a), len(b)) + 1 for a, b in zip(toks, steps)]
    print(
        f"  prompt {problem.question!r}  gold {problem.gold!r}  -> {text!r} "
        f"{'correct' if ok else 'WRONG'}")
    print("  token " + "".join(a.rjust(k) for a, k in zip(toks, w)))
    print("  step  " + "".join(b.rjust(k) for b, k in zip(steps, w)))


PROGRESS_LINE = 2000   # completions from which each policy's start is printed
ROW_ID = ("policy", "model", "task", "gen_length", "block_length", "cache", "temperature", "seed",
          "n", "samples")


def row_id(r):
    return tuple(r.get(k) for k in ROW_ID)


def old_rows(path):
    """The rows already in a --json file (a list of rows this script wrote), else one clear error: a
    file of another kind is never overwritten."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            rows = json.load(f)
    except (ValueError, UnicodeDecodeError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "policy" in r for r in rows):
        raise ValueError(
            f"--json {path} exists and is not a rows file of sample.py: pass another --json")
    return rows


def outside(policy, L, BL):
    """Whether a learned checkpoint decodes at another L or BL than it was trained at."""
    trained = getattr(policy, "trained", None)
    return trained is not None and (trained[0] != L or BL not in trained[1])


def table(rows):
    """The rows as a text table; pass@k and majority-vote columns when any row has several samples.
    """
    ks = sorted({int(k) for r in rows for k in r.get("pass_at", {})})
    vote = any("majority" in r for r in rows)
    head = (f"{'policy':<28} {'accuracy':>8} {'mean NFE':>9} {'tok/NFE':>8} {'seconds':>8} {'n':>5}"
            + "".join(f" {f'pass@{k}':>8}" for k in ks) + (f" {'majority':>8}" if vote else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["policy"] if "outside_training" not in r else "*" + r["policy"]
        lines.append(
            f"{name:<28} {r['accuracy']:>8.1f} {r['mean_nfe']:>9.2f} {r['tokens_per_nfe']:>8.2f} "
            f"{r['seconds']:>8.1f} {r['n']:>5}" + "".join(
                f" {r['pass_at'][str(k)]:>8.1f}" if str(k) in r.get("pass_at", {}) else f" {'':>8}"
                for k in ks) +
            (f" {r['majority']:>8.1f}" if "majority" in r else (f" {'':>8}" if vote else "")))
    lines += [
        f"* outside its training setting ({r['outside_training']})" for r in rows
        if "outside_training" in r]
    return "\n".join(lines)


def resolve(cfg):
    """Explicit flags win, then the learned policy's checkpoint, then SETUP_DEFAULTS. No policy flag
    at all: the shipped learned policy beside the paper's heuristics, PC-Sampler and the band rule
    (HEURISTICS)."""
    if not cfg.policy and cfg.policies is None:
        cfg.policies = HEURISTICS
        if os.path.isfile(SHIPPED):
            cfg.policy = os.path.relpath(SHIPPED)
    stored = read_checkpoint(checkpoint_of(cfg.policy) or cfg.policy)["args"] if cfg.policy else {}
    cfg.from_checkpoint = {k for k in SETUP_DEFAULTS if getattr(cfg, k) is None and k in stored}
    for k, v in SETUP_DEFAULTS.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, stored.get(k, v))
    return cfg


def check(cfg, policies):
    """Every setting, before any model is loaded (a real one is 16 GB): one clear error each."""
    check_args(temperature=(cfg.temperature, ">= 0"), tau=(cfg.tau, "> 0"))
    check_counts(num_problems=(cfg.num_problems, 1), samples=(cfg.samples, 1),
                 batch_size=(cfg.batch_size, 1), gen_length=(cfg.gen_length, 1),
                 block_length=(cfg.block_length, 1), show=(cfg.show, 0))
    check_seed(cfg.seed)
    check_threads(cfg.threads)
    if cfg.num_problems * cfg.samples * len(policies) > MAX_COUNT:
        raise ValueError(
            f"--num-problems {cfg.num_problems:,} x --samples {cfg.samples:,} x {len(policies)} "
            f"policies is {cfg.num_problems * cfg.samples * len(policies):,} completions: at most "
            f"{MAX_COUNT:,}")
    check_split(cfg.task, cfg.split)
    check_decoding(cfg.gen_length, cfg.block_length, cfg.cache)
    check_task(cfg.task, cfg.data)
    if cfg.tau is not None and not any(isinstance(p, Learned) for p in policies):
        raise ValueError(
            "--tau sets a learned policy's temperature, and no checkpoint is among the policies")
    for pol in policies:
        pol.check(cfg.gen_length, cfg.block_length)
    inputs = [("--policy", checkpoint_of(p.spec)) for p in policies if isinstance(p, Learned)]
    inputs += [("--data", cfg.data), ("--model", cfg.model)]
    if cfg.json:
        check_out_file(cfg.json, "--json", inputs)
        old_rows(cfg.json)
    if records_path(cfg):
        check_out_file(records_path(cfg), "--records",
                       inputs + ([("--json", cfg.json)] if cfg.json else []))


def records_path(cfg):
    """--records, or beside --json: NAME.records.jsonl (None: no records)."""
    return cfg.records or (os.path.splitext(cfg.json)[0] + ".records.jsonl" if cfg.json else None)


def setup(cfg):
    """Settings, policies, problems and the dLLM, each checked -> (policies, problems, dllm, rank,
    world)."""
    cfg = resolve(cfg)
    # on the CPU, before the model
    policies = parse_policies(",".join(s for s in (cfg.policy, cfg.policies) if s))
    check(cfg, policies)
    try:
        check_model_name(cfg.model)
    except (ValueError, FileNotFoundError) as e:
        if "model" not in getattr(cfg, "from_checkpoint", ()):
            raise
        raise type(
            e)(f"{e} (the model stored in --policy {cfg.policy}: pass --model to use another)"
               ) from None
    resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    problems = get_problems(cfg.task, cfg.num_problems, cfg.seed, cfg.split, cfg.data)
    rank, world, _, device = init_ranks(cfg.device)
    dllm = load_dllm(cfg.model, device=resolve_device(device), revision=cfg.revision,
                     compile=cfg.compile)
    needs = {n for p in policies for n in getattr(p, "needs", ())}
    check_buffer(dllm, min(cfg.batch_size,
                           len(problems) * cfg.samples),
                 prompts_of(dllm, problems)[0].shape[1], cfg.gen_length, cfg.cache, cfg.temperature,
                 needs)
    for i, pol in enumerate(policies):
        if isinstance(pol, Learned):
            pol.net.to(dllm.device)
            if cfg.tau is not None:
                knobs = dataclasses.replace(pol.knobs, tau=cfg.tau)
                policies[i] = dataclasses.replace(pol, knobs=knobs,
                                                  spec=f"{pol.spec}:tau={cfg.tau}")
    return cfg, policies, problems, dllm, rank, world


def main(argv=None):
    signal.signal(signal.SIGINT, signal.default_int_handler)   # from here Ctrl-C is handled below
    try:
        cfg, _ = parse_config(SampleConfig, argv, "compare unmasking policies on a task",
                              "python sample.py")
        on_sigterm()
        cfg, policies, problems, dllm, rank, world = setup(cfg)
        rows = compare(cfg, policies, problems, dllm, rank, world)
    except KeyboardInterrupt:
        raise interrupted(stopped("nothing was written")) from None
    except (ValueError, RuntimeError, OSError) as e:
        raise failed(e)
    finish(world)
    return rows


def compare(cfg, policies, problems, dllm, rank, world):
    """Each policy over the problems (this rank's share), gathered and printed by rank 0 -> the rows
    (rank 0)."""
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"model {dllm.name} on {dllm.device} ({dllm.net.tok_emb.weight.dtype}), task {cfg.task}, "
        f"L={cfg.gen_length} BL={cfg.block_length}, n={len(problems)}, samples {cfg.samples}, "
        f"T={cfg.temperature}, cache {cfg.cache}"
        + (f", {world} ranks" if world > 1 else ""))
    rows, records = [], []
    away = {p.spec: p.trained for p in policies if outside(p, cfg.gen_length, cfg.block_length)}
    for spec, (L, BLs) in away.items():
        say(f"warning: {spec} was trained at L {L}, BL {','.join(map(str, BLs))} and runs here at "
            f"L {cfg.gen_length}, BL {cfg.block_length}: a learned policy is not known to work "
            "outside its training setting (its rows say so)")
    for pol in policies:
        # a long run says where it is, bar or no bar
        if len(problems) * cfg.samples >= PROGRESS_LINE:
            say(f"{pol.spec}: {len(problems):,} problems x {cfg.samples} samples ...", flush=True)
        t0 = time.time()
        comps, shown = decode(dllm, pol, problems, cfg.task, cfg.gen_length, cfg.block_length,
                              cfg.batch_size, cfg.temperature, cfg.seed, cfg.samples, cfg.cache,
                              shard=(rank, world), progress=rank == 0,
                              keep=cfg.show if rank == 0 else 0)
        every = gather(comps, rank, world)
        if rank:
            continue
        row = row_of(pol.spec, [c for part in every for c in part], problems, cfg.task, cfg.samples,
                     time.time() - t0)
        row.update(model=cfg.model, task=cfg.task, gen_length=cfg.gen_length,
                   block_length=cfg.block_length, cache=cfg.cache, temperature=cfg.temperature,
                   seed=cfg.seed)
        if pol.spec in away:
            row["outside_training"] = "L {}, BL {}".format(away[pol.spec][0],
                                                           ",".join(map(str, away[pol.spec][1])))
        rows.append(row)
        setting = dict(policy=pol.spec, model=cfg.model, task=cfg.task, gen_length=cfg.gen_length,
                       block_length=cfg.block_length, temperature=cfg.temperature, cache=cfg.cache,
                       seed=cfg.seed, samples=cfg.samples, n=len(problems))
        records += records_of([c for part in every for c in part], problems, setting)
        for s in shown:
            print(f"[{pol.spec}]")
            show_generation(dllm, *s)
    if rank:
        return None
    print(table(rows))
    if cfg.json:
        # another sample.py may write the same file: its rows are kept
        with waiting_lock(cfg.json):
            kept = [r for r in old_rows(cfg.json) if row_id(r) not in {row_id(x) for x in rows}]
            write_json(cfg.json, kept + rows)
        print(f"wrote {cfg.json}" + (f" ({len(kept)} rows of other runs kept)" if kept else ""))
    if records_path(cfg):
        with waiting_lock(records_path(cfg)):
            append_records(records_path(cfg), records)
        print(f"wrote {records_path(cfg)} ({len(records)} completions)")
    return rows


if __name__ == "__main__":
    main()
