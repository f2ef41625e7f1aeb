"""
Benchmarks: evaluate a set of policies over a set of settings (dLLM, task, L, BL) and keep one JSON row per
(policy, setting, seed). The rows file is resumable: a rerun skips rows already there, and each row is merged in
under a lock and the file rewritten atomically, so an interrupted run loses at most the row in progress and two
runs writing one file keep each other's rows. The tiny-world suite (support/suite.py) is built on run().

    python eval.py --model tiny --task chain --gen-length 32 --block-lengths 8,32 --sweep all,band \
        --policies weights/policy_full.pt --taus 0.5,1 --seeds 0,1,2 --out out/mine.json --plot
    python eval.py --model llada --task gsm8k --gen-length 256 --block-lengths 32,256 --sweep threshold,eb \
        --policies out/llada_bl32.pt --n 1319 --batch-size 16 --out out/llada_gsm8k.json
"""
import argparse
import hashlib
import json
import os
from dataclasses import dataclass

import torch

from env import CACHES, ForwardMemo, check_decoding
from model import check_model_name, load_dllm, resolve_device
from policy import LearnedPolicy, parse_policy, read_checkpoint
from sample import evaluate
from support import report
from support.cli import check_args, check_out_file, merged
from tasks import check_task, get_problems

# Sweep grids: dense enough that a gap in a heuristic's front never counts as a win for a learned policy. Fixed-step
# rules get every valid step count up to L/2 (a multiple of the L / BL blocks), then L.
GRIDS = dict(threshold=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999], factor=[0.25, 0.5, 1, 2, 4, 6, 8, 12, 16],
             eb=[0.001, 0.01, 0.03, 0.1, 0.3, 0.6, 1, 3])
STEP_RULES = ("topk", "random", "margin", "entropy")
# The end-of-text-aware rules (PC-Sampler, EOSER) run on the top-k schedule: every step count, at these settings.
SCHEDULED = dict(pc=("lam", [0.25, 1.0]), eosdamp=("g", [0.4]))
# The band rule (policy.Band): every (hi, lo) pair of these grids.
BAND = dict(hi=[0.7, 0.8, 0.9, 0.95], lo=[0.05, 0.08, 0.12])
ALL = ("topk", "random", "threshold", "factor", "eb")    # what --sweep all means (margin/entropy on request)
KEY = ("model", "task", "gen_length", "block_length", "policy", "n", "seed", "temperature", "cache")  # a row's identity


def sweep_specs(names, L, BL):
    """Heuristic names -> policy specs over their grids, valid for this (L, BL)."""
    specs, blocks = [], L // BL
    step_counts = [*range(blocks, L // 2 + 1, blocks), L]
    for name in names:
        if name in STEP_RULES:
            specs += [f"{name}:steps={k}" for k in step_counts]
        elif name in SCHEDULED:
            key, values = SCHEDULED[name]
            specs += [f"{name}:{key}={v:g}:steps={k}" for v in values for k in step_counts]
        elif name == "band":
            specs += [f"band:hi={h}:lo={l}" for h in BAND["hi"] for l in BAND["lo"]]
        elif name in GRIDS:
            key = {"threshold": "", "factor": "", "eb": "gamma="}[name]
            specs += [f"{name}:{key}{v}" for v in GRIDS[name]]
        else:
            raise ValueError(f"unknown sweep {name!r}: use 'all' or some of {list(STEP_RULES) + list(GRIDS) + list(SCHEDULED) + ['band']}")
    return specs


def learned_specs(paths, taus, alphas=None, betas=None):
    """Checkpoint specs over the tau grid (and the beta grid, if given), and over the alpha grid for
    alpha-conditioned checkpoints."""
    out = []
    for p in paths:
        cond = read_checkpoint(p)["policy_config"].get("alpha_hi") is not None
        if cond and not alphas:
            raise ValueError(f"{p} is alpha-conditioned: pass --alphas to pick points on its front")
        if alphas and not cond:
            raise ValueError(f"--alphas: {p} is not alpha-conditioned (it was trained for one alpha)")
        out += [f"{p}:tau={float(t)}" + (f":beta={float(b):g}" if b is not None else "") + (f":alpha={float(a):g}" if cond else "")
                for t in taus for b in (betas or [None]) for a in (alphas if cond else [None])]
    return out


def ckpt_path(spec):
    """The checkpoint file of a learned spec ('dir/ckpt.pt:tau=1.0:alpha=3' -> 'dir/ckpt.pt'), None for a heuristic."""
    head = spec.split(":")[0]
    return head if head.endswith(".pt") else None


# ----------------------------------------------------------------------------------------------------
# the rows file: a JSON list, appended to and resumed

def load_rows(path):
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            rows = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a results file (not JSON); move it away or pass another --out") from None
    if isinstance(rows, list):
        for r in rows:
            if isinstance(r, dict):
                r.setdefault("cache", "none")   # rows written before KV caches existed
    if not isinstance(rows, list) or any(not isinstance(r, dict) or not set(KEY) <= set(r) for r in rows):
        raise ValueError(f"{path} is not a results file written by eval.py (a JSON list of rows with {KEY}); "
                         f"move it away or pass another --out")
    return rows


def save_rows(path, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(rows, f, indent=1)
    os.replace(path + ".tmp", path)   # atomic: the file is always the old or the new list, never half of one


def row_key(r, skip=()):
    """A row's identity; rows from before KV caches existed were uncached."""
    return tuple(r.get(k, "none") if k == "cache" else r[k] for k in KEY if k not in skip)


@dataclass
class Setting:
    model: str
    task: str
    gen_length: int
    block_length: int
    specs: list          # policy specs to evaluate here
    name: str = ""       # label in the report, e.g. "full diffusion"
    cache: str = "none"  # KV cache mode (env.CACHES; semi-AR settings only)


def check_setting(s):
    check_decoding(s.gen_length, s.block_length, s.cache)


def canonical(spec):
    """The spec string a row is stored under (heuristics: as the policy prints itself)."""
    return parse_policy(spec).spec if not ckpt_path(spec) else spec


def run(out, settings, n=500, seeds=(0,), batch_size=128, temperature=0.0, device=None, data=None, split="test",
        progress=True, compile=False):
    """Evaluate every (setting, spec, seed) that has no row in `out` yet; returns the rows asked for (evaluated
    now or found in the file), not the file's other rows. compile: torch.compile each dLLM it loads (DLLM.compile)."""
    for s in settings:
        check_setting(s)
    rows = load_rows(out)
    have = {row_key(r): r for r in rows}
    trained = {}   # checkpoint spec -> its training setup; a row of an older state of that file is stale

    def done(key):
        spec = key[KEY.index("policy")]
        if ckpt_path(spec):
            trained.setdefault(spec, trained_on(spec))
            return key in have and have[key].get("trained") == trained[spec]
        return key in have

    dllm, loaded, asked, memo_of = None, None, [], None
    for s in settings:
        problems = {seed: get_problems(s.task, n, seed, split, data) for seed in seeds}   # cheap; before the model
        keys = {(spec, seed): (s.model, s.task, s.gen_length, s.block_length, spec, len(problems[seed]), seed,
                               temperature, s.cache) for spec in map(canonical, s.specs) for seed in seeds}
        asked += keys.values()
        todo = [(spec, seed) for (spec, seed), key in keys.items() if not done(key)]
        if not todo:
            continue
        if loaded != s.model:   # one dLLM in memory at a time (real ones are 16 GB)
            dllm = None
            dllm, loaded = load_dllm(s.model, device=device), s.model
            if compile:
                if s.cache != "none":
                    raise ValueError("--compile is for the uncached forward (a cached step's shapes differ every block)")
                dllm.compile()
        if memo_of != (s.model, s.task, s.gen_length):   # the forwards' outputs, shared by the policies (and BLs)
            memo_of, memos = (s.model, s.task, s.gen_length), {seed: ForwardMemo() for seed in seeds}
        for spec, seed in todo:
            pol = parse_policy(spec, dllm.device)
            pol.check(s.gen_length, s.block_length)
            row, _ = evaluate(dllm, pol, problems[seed], s.task, s.gen_length, s.block_length, batch_size,
                              temperature, seed, progress, cache=s.cache, memo=memos[seed])
            row.update(model=s.model, task=s.task, gen_length=s.gen_length, block_length=s.block_length,
                       policy=spec, seed=seed, temperature=temperature, setting=s.name, cache=s.cache)
            if isinstance(pol, LearnedPolicy):
                row["trained"] = trained[spec]
            have[row_key(row)] = row
            with merged(out):   # another eval.py may have added rows to the file meanwhile: keep them
                rows = [r for r in load_rows(out) if row_key(r) != row_key(row)] + [row]
                save_rows(out, rows)
            if progress:
                print(f"[{s.name or s.model}] {s.task} L={s.gen_length} BL={s.block_length} cache {s.cache} seed {seed} "
                      f"{spec:<40} {row['accuracy']:5.1f}% @ {row['mean_nfe']:6.2f} NFE ({row['seconds']:.1f} s; "
                      f"{memo_read(memos[seed])} of the setting's row-forwards read from the memo)")
    return [have[k] for k in dict.fromkeys(asked)]


def memo_read(memo):
    return f"{100 * memo.hits / max(memo.hits + memo.misses, 1):.0f}%"


def weights_digest(state_dict):
    """A short fingerprint of a policy's weights (sha256 over names, shapes, dtypes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def trained_on(spec):
    """The training setup of a checkpoint policy, stored in its rows (the report groups policies by alpha), with
    its weights' digest: a file retrained to the same setup and step (a deleted out/ folder trained again, whose
    first runs may not be bit-identical to the old ones) is a different policy, and its old rows are stale."""
    ck = read_checkpoint(ckpt_path(spec))
    a = ck["args"]
    t = dict(model=a["model"], task=a["task"], gen_length=a["gen_length"], block_length=a["block_length"],
             alpha=a["alpha"], reward=a["reward"], step=ck["step"], alpha_range=a.get("alpha_range"),
             weights=weights_digest(ck["policy"]))
    if a.get("expert"):   # the variants of paper App. E / F (absent from older rows' keys, so those stay valid)
        t.update(expert=a["expert"], expert_block_length=a["expert_block_length"])
    if a.get("actions", "bernoulli") != "bernoulli":
        t["actions"] = a["actions"]
    if a.get("width", 128) != 128:        # the default width is left out, so older rows' keys stay valid
        t["width"] = a["width"]
    return t


def summarize(rows):
    """Mean and spread over seeds: one dict per (setting, policy) with accuracy/mean_nfe means and sds."""
    groups = {}
    for r in rows:
        groups.setdefault(row_key(r, skip=("seed",)), []).append(r)
    out = []
    for g in groups.values():
        acc = torch.tensor([r["accuracy"] for r in g], dtype=torch.float64)
        nfe = torch.tensor([r["mean_nfe"] for r in g], dtype=torch.float64)
        s = dict(g[0])
        s.update(accuracy=acc.mean().item(), mean_nfe=nfe.mean().item(), seeds=len(g),
                 accuracy_sd=acc.std().item() if len(g) > 1 else 0.0, mean_nfe_sd=nfe.std().item() if len(g) > 1 else 0.0,
                 tokens_per_nfe=sum(r["tokens_per_nfe"] for r in g) / len(g), seconds=sum(r["seconds"] for r in g))
        out.append(s)
    return out


def comma(cast):
    def parse(text):
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {cast.__name__}s") from None
    return parse


def main(argv=None):
    p = argparse.ArgumentParser(description="evaluate unmasking policies over settings; resumable JSON rows",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="dLLM: tiny, tiny-b, llada, llada-1.5, dream, a local dir or *.pt")
    p.add_argument("--task", default="chain", help="chain, sub (tiny world) or gsm8k, math500")
    p.add_argument("--gen-length", type=int, default=32, help="L, the generation buffer (real models: 256)")
    p.add_argument("--block-lengths", type=comma(int), default="32", help="comma-separated BLs; BL == L is full diffusion")
    p.add_argument("--sweep", default="", help="heuristic sweeps: 'all' (topk,random,threshold,factor,eb) and/or some of those, margin, entropy, pc, eosdamp, band")
    p.add_argument("--policies", default="", help="extra specs: heuristics ('threshold:0.9') or checkpoints ('ckpt.pt')")
    p.add_argument("--taus", type=comma(float), default=None, help="policy-temperature grid for the checkpoints in --policies (default 1)")
    p.add_argument("--betas", type=comma(float), default=None, help="test-time beta grid for the checkpoints in --policies (paper Fig. 6: unmask p = min(1, beta * sigmoid))")
    p.add_argument("--alphas", type=comma(float), default=None, help="alpha grid for alpha-conditioned checkpoints (train.py --alpha-range)")
    p.add_argument("--n", type=int, default=500, help="problems per row")
    p.add_argument("--seeds", type=comma(int), default="0", help="comma-separated seeds (problem set and policy randomness); mean and sd reported")
    p.add_argument("--batch-size", type=int, default=128, help="prompts per generate call")
    p.add_argument("--temperature", type=float, default=0.0, help="dLLM sampling temperature")
    p.add_argument("--data", default=None, help="local jsonl for gsm8k / math500 / humaneval / mbpp (official layouts)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="problem split")
    p.add_argument("--out", default="out/eval.json", help="rows file (resumed if it exists)")
    p.add_argument("--plot", action="store_true", help="also draw accuracy vs NFE to a PNG beside --out (needs matplotlib)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--cache", default="none", choices=CACHES, help="KV cache (semi-AR only; prefix and dual are approximate, see env.py)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: autodetect)")
    p.add_argument("--compile", action="store_true", help="torch.compile the dLLM (one-off ~25 s on CPU, then ~1.4x "
                   "faster rows in the tiny world; logits within ~1e-5 of eager; not with --cache)")
    args = p.parse_args(argv)
    try:
        if args.plot:
            report.need_matplotlib()
        check_args(threads=(args.threads, ">= 0"))
        if args.threads:
            torch.set_num_threads(args.threads)
        L = args.gen_length
        BLs, taus, seeds = args.block_lengths, args.taus or [1.0], args.seeds
        check_args(n=(args.n, "> 0"), batch_size=(args.batch_size, "> 0"), temperature=(args.temperature, ">= 0"),
                   gen_length=(L, "> 0"))
        for BL in BLs:
            check_args(block_lengths=(BL, "> 0"))
            if L % BL:
                raise ValueError(f"--gen-length {L} must be a multiple of each of --block-lengths (not {BL})")
        for t in taus:
            check_args(taus=(t, "> 0"))
        for b in args.betas or []:
            check_args(betas=(b, "> 0"))
        if not BLs or not seeds:
            raise ValueError("--block-lengths and --seeds need at least one value each")
        check_task(args.task, args.data)
        names = [n for s in args.sweep.split(",") if s.strip() for n in (ALL if s.strip() == "all" else [s.strip()])]
        ckpts = [s for s in args.policies.split(",") if s.strip().endswith(".pt")]
        others = [s for s in args.policies.split(",") if s.strip() and s not in ckpts]
        for a in args.alphas or []:
            check_args(alphas=(a, ">= 0"))
        settings = [Setting(args.model, args.task, L, BL, sweep_specs(names, L, BL) + others
                            + learned_specs(ckpts, taus, args.alphas, args.betas), cache=args.cache) for BL in BLs]
        if not any(s.specs for s in settings):
            raise ValueError("nothing to evaluate: pass --sweep and/or --policies")
        if (args.taus or args.betas) and not ckpts:
            raise ValueError("--taus / --betas set learned policies' knobs, and no checkpoint is in --policies")
        if args.compile and args.cache != "none":
            raise ValueError("--compile is for the uncached forward: drop --cache or --compile")
        check_out_file(args.out, "--out")
        load_rows(args.out)                                   # a file that is not ours: refused before any work
        resolve_device(args.device)
        check_model_name(args.model)
        for s in settings:
            check_setting(s)
            for spec in s.specs:
                parse_policy(spec).check(L, s.block_length)    # fail before loading a model, not midway
        rows = run(args.out, settings, args.n, seeds, args.batch_size, args.temperature, args.device, args.data,
                   args.split, compile=args.compile)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    mine = summarize(rows)
    for BL in BLs:
        print(f"\n{args.model} {args.task} L={L} BL={BL}, mean over {len(seeds)} seed(s) (± sd)")
        print(report.markdown_table([r for r in mine if r["block_length"] == BL]))
    if args.plot:
        png = os.path.splitext(args.out)[0] + ".png"
        report.plot_fronts({f"{args.model} {args.task} L={L} BL={BL}": [r for r in mine if r["block_length"] == BL]
                            for BL in BLs}, png)
        print(f"wrote {png}")
    return rows


if __name__ == "__main__":
    main()
