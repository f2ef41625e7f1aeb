"""
Benchmarks: evaluate a set of policies over a set of settings (dLLM, task, L, BL) and keep one JSON
row per (policy, setting, seed). The rows file is resumable: a rerun skips rows already there, and
each row is merged in under a lock and the file rewritten atomically, so an interrupted run loses at
most the row in progress and two runs writing one file keep each other's rows. Under torchrun each
rank decodes its share of every row's problems (on cuda:LOCAL_RANK, or the CPU with gloo) and rank 0
writes the rows, which are those of one process. The tiny-world suite (support/suite.py) is built on
run().

    python eval.py --sweep all,band --block-lengths 8,32 --policies weights/policy_full.pt --taus 0.5,1 \
        --seeds 0,1,2 --out out/mine.json --plot
    torchrun --nproc_per_node=2 eval.py --policies threshold:0.9,weights/policy_semi.pt --block-lengths 8 \
        --num-problems 64 --threads 1 --device cpu --out out/two.json
    python eval.py --model llada --task gsm8k --gen-length 256 --block-lengths 32,256 --sweep threshold,eb \
        --policies out/llada_bl32.pt --num-problems 1319 --batch-size 16 --out out/llada_gsm8k.json
"""
from common.start import quiet_ctrl_c

quiet_ctrl_c(__name__)

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field

import torch

from common.checkpoints import read_checkpoint
from common.cli import (MAX_COUNT, Waited, append_records, check_args, check_counts, check_out_file,
                        check_seed, check_threads, failed, interrupted, option, parse_config,
                        waiting_lock, write_json)
from common.dist import broadcast, finish, gather, init_ranks, on_sigterm, stopped
from common.hub import check_model_name, resolve_device
from common.specs import COARSE_STEP_COUNTS, STEP_COUNTS, value_text
from decode import checkpoint_of, decode, parse_policy, records_of, row_of
from env import check_decoding
from model import load_dllm
from policy import RULES, Learned
from steps import ForwardMemo
from tasks import check_split, check_task, get_problems


KEY = ("model", "task", "gen_length", "block_length", "policy", "n", "seed", "temperature", "cache",
       "samples", "split")
# what rows written before these fields existed meant
ROW_DEFAULTS = dict(cache="none", samples=1, split="test")
# matched NFE: a hand rule within 10% more NFE than a learned policy's counts as matched
SLACK = 1.1


@dataclass
class EvalConfig:
    model: str = option("tiny", "dLLM: tiny, tiny-b, llada, llada-1.5, dream, a local dir or *.pt")
    task: str = option("chain", "chain, sub (tiny world), gsm8k, math500, humaneval, mbpp")
    gen_length: int = option(32, "L, the generation buffer (real models: 256)")
    block_lengths: str = option("32", "comma-separated BLs; BL == L is full diffusion")
    sweep: str = option(
        "", "hand-rule sweeps: 'all' (" + ", ".join(r.name for r in RULES.values() if r.in_all) +
        ") and/or any of " + ", ".join(RULES))
    policies: str = option("",
                           "more specs: hand rules ('threshold:0.9') or checkpoints ('ckpt.pt')")
    taus: str = option(None,
                       "policy-temperature grid for the checkpoints in --policies (default 1)")
    betas: str = option(
        None,
        "test-time beta grid for the checkpoints (paper Fig. 6: unmask p = min(1, beta * sigmoid))")
    alphas: str = option(None,
                         "alpha grid for alpha-conditioned checkpoints (train.py --alpha-range)")
    num_problems: int = option(500, "problems per row (--n for short)")
    seeds: str = option(
        "0", "comma-separated seeds (problem set and every random draw); mean and sd reported")
    samples: int = option(1,
                          "completions per problem: pass@k and majority vote when > 1 (sample.py)")
    batch_size: int = option(128, "completions per generate call")
    temperature: float = option(0.0, "dLLM sampling temperature")
    data: str = option(None,
                       "local jsonl for gsm8k / math500 / humaneval / mbpp (official layouts)")
    split: str = option("test", "problem split: train, validation (tiny tasks, MBPP) or test")
    out: str = option("out/eval.json", "rows file (resumed if it exists)")
    records: str = option(
        None, "every completion as a JSON line: text, both graders' answers and verdicts, NFE "
        "(default: beside --out, NAME.records.jsonl)")
    plot: bool = option(False, "also draw accuracy vs NFE to a PNG beside --out (needs matplotlib)")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    cache: str = option("none",
                        "KV cache: none, prefix, dual (semi-AR only; approximate, see env.py)")
    device: str = option(
        None, "cuda, cuda:N, mps or cpu (default: autodetect; under torchrun each rank's GPU)")
    compile: bool = option(
        False, "torch.compile the dLLM's forward, cached or not (logits within ~1e-5 of eager)")


def step_counts(L, BL, coarse=False):
    """The step counts a fixed-step rule is swept over: every valid count up to L/2 (a multiple of
    the L / BL blocks), then L - dense enough that a gap in a hand rule's front never counts as a
    win for a learned policy; coarse: the blocks times 1, 2, 4, ... up to L/2, then L (for a rule
    that is below another one's front everywhere)."""
    blocks = L // BL
    if coarse:
        return [blocks * 2 ** i for i in range(L.bit_length()) if blocks * 2 ** i <= L // 2] + [L]
    return [*range(blocks, L // 2 + 1, blocks), L]


def sweep_specs(names, L, BL, grids=None):
    """Hand-rule names -> specs over each rule's declared grid (policy.Arg.grid), valid for this (L,
    BL). grids: {"rule.arg": values} replaces some of them (the tests' shrunken suite)."""
    specs = []
    for name in names:
        if name not in RULES:
            raise ValueError(f"unknown sweep {name!r}: use 'all' or some of {list(RULES)}")
        combos = [[]]
        for a in RULES[name].args:
            values = (grids or {}).get(f"{name}.{a.name}", a.grid)
            if values in (STEP_COUNTS, COARSE_STEP_COUNTS):
                values = step_counts(L, BL, values == COARSE_STEP_COUNTS)
            text = lambda v: f"{a.name}={value_text(v)}" if a.keyword else value_text(v)
            combos = [c + [text(v)] for c in combos for v in values]
        specs += [":".join([name, *c]) for c in combos]
    return specs


def sweep_names(text):
    """'all,band' -> the rule names ('all': the rules marked in_all)."""
    names = []
    for s in (s.strip() for s in text.split(",") if s.strip()):
        names += [r.name for r in RULES.values() if r.in_all] if s == "all" else [s]
    return names


def learned_specs(paths, taus, alphas=None, betas=None):
    """Checkpoint specs over the tau grid (None: the stored tau), the beta grid, if given, and the
    alpha grid for alpha-conditioned checkpoints."""
    out = []
    for p in paths:
        cond = read_checkpoint(p)["policy_config"]["alpha_hi"] is not None
        if cond and not alphas:
            raise ValueError(f"{p} is alpha-conditioned: pass --alphas to pick points on its front")
        if alphas and not cond:
            raise ValueError(
                f"--alphas: {p} is not alpha-conditioned (it was trained for one alpha)")
        out += [
            p + (f":tau={float(t)}" if t is not None else "") +
            (f":beta={float(b):g}" if b is not None else "") +
            (f":alpha={float(a):g}" if cond else "") for t in (taus or [None])
            for b in (betas or [None]) for a in (alphas if cond else [None])]
    return out


def canonical(spec):
    """The spec a row is stored under (a hand rule: as it prints itself; a checkpoint: as given)."""
    return spec if checkpoint_of(spec) else parse_policy(spec).spec


# --------------------------------------------------------------------------------------------------
# the rows file: a JSON list, merged into and resumed

def load_rows(path):
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            rows = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(
            f"{path} is not a results file (not JSON); move it away or pass another --out"
        ) from None
    if not isinstance(rows, list) or any(not isinstance(r, dict) for r in rows):
        raise ValueError(
            f"{path} is not a results file written by eval.py (a JSON list of rows); move it away "
            "or pass another --out")
    rows = [{**ROW_DEFAULTS, **r} for r in rows]
    if any(not set(KEY) <= set(r) for r in rows):
        raise ValueError(
            f"{path} is not a results file written by eval.py (its rows lack some of {KEY}); move "
            "it away or pass another --out")
    return rows


def row_key(r, skip=()):
    return tuple(r.get(k, ROW_DEFAULTS.get(k)) for k in KEY if k not in skip)


WAIT_S = 600   # how long a row waits for another eval.py that holds the rows file's lock


def pending_path(path):
    return os.path.splitext(path)[0] + ".pending.json"


def merge_row(path, row, say=print):
    """Merge one row into the rows file under its lock (another eval.py may have added rows
    meanwhile: they are kept). If the lock is held too long, the row is kept beside the file
    (pending_path), the next run takes it in, and the error says so."""
    try:
        with waiting_lock(path, WAIT_S, say):
            write_json(path, [r for r in load_rows(path) if row_key(r) != row_key(row)] + [row])
    except Waited as e:
        pending = pending_path(path)
        kept = load_rows(pending) if os.path.exists(pending) else []
        write_json(pending, [r for r in kept if row_key(r) != row_key(row)] + [row])
        raise RuntimeError(
            f"{e}: the row just computed is kept in {pending} (the next run on {path} takes it "
            "in); rerun when the other process is done") from None


def write_records(path, records, say=print):
    """Append a row's completion records under the file's lock, before the row is written (a rerun
    redoes both)."""
    try:
        with waiting_lock(path, WAIT_S, say):
            append_records(path, records)
    except Waited as e:
        raise RuntimeError(
            f"{e}: rerun when the other process is done (the rows file is as it was)") from None


def take_pending(path, say=print):
    """Rows a run kept in pending_path (its lock was held too long) go into the rows file now."""
    pending = pending_path(path)
    if os.path.exists(pending):
        rows = load_rows(pending)
        with waiting_lock(path, WAIT_S, say):
            keys = {row_key(r) for r in rows}
            write_json(path, [r for r in load_rows(path) if row_key(r) not in keys] + rows)
        os.remove(pending)
        say(f"took in {len(rows)} row(s) from {pending}")


@dataclass
class Setting:
    model: str
    task: str
    gen_length: int
    block_length: int
    specs: list          # policy specs to evaluate here
    name: str = ""       # label in the report, e.g. "full diffusion"
    cache: str = "none"  # KV cache mode (env.CACHES; semi-AR settings only)
    temperature: float = None   # dLLM temperature; None: run()'s
    n: int = None        # problems; None: run()'s
    samples: int = None  # completions per problem; None: run()'s
    split: str = None    # problem split; None: run()'s

    def resolved(self, n, temperature, samples, split):
        """(n, temperature, samples, split) of this setting, run()'s where it has none of its own.
        """
        pick = lambda mine, default: default if mine is None else mine
        return (pick(self.n, n), pick(self.temperature, temperature), pick(self.samples, samples),
                pick(self.split, split))


@dataclass
class Plan:
    """What run() evaluates, decided by rank 0: per setting its problems' seeds and the (spec, seed)
    rows to do."""
    todo: list = field(default_factory=list)     # (setting index, spec, seed, key)
    asked: list = field(default_factory=list)    # every key asked for, in order


def plan(out, settings, n, seeds, temperature, samples, split, data):
    """Which rows are missing (or stale: a checkpoint retrained since its row) -> (Plan, checkpoint
    spec -> its training setup)."""
    have = {row_key(r): r for r in load_rows(out)}
    trained, p, sizes = {}, Plan(), {}
    for si, s in enumerate(settings):
        sn, T, K, sp = s.resolved(n, temperature, samples, split)
        for spec in dict.fromkeys(map(canonical, s.specs)):
            for seed in seeds:
                # cheap, before any model: a real task may have fewer than n
                if (s.task, seed, sn, sp) not in sizes:
                    sizes[(s.task, seed, sn, sp)] = len(get_problems(s.task, sn, seed, sp, data))
                key = (s.model, s.task, s.gen_length, s.block_length, spec,
                       sizes[(s.task, seed, sn, sp)], seed, T, s.cache, K, sp)
                p.asked.append(key)
                ck = checkpoint_of(spec)
                if ck:
                    trained.setdefault(spec, trained_on(spec))
                if key not in have or (ck and have[key].get("trained") != trained[spec]):
                    p.todo.append((si, spec, seed, key))
    return p, trained


def records_path(out):
    """Where the completions of a rows file go by default: NAME.records.jsonl beside it."""
    return os.path.splitext(out)[0] + ".records.jsonl"


def run(out, settings, n=500, seeds=(0, ), batch_size=128, temperature=0.0, device=None, data=None,
        split="test", progress=True, compile=False, samples=1, records=None):
    """Evaluate every (setting, spec, seed) that has no row in `out` yet -> the rows asked for
    (evaluated now or found in the file), not the file's other rows (on rank 0; None on the other
    ranks under torchrun). A setting's own n, temperature, samples or split overrides run()'s.
    compile: torch.compile each dLLM it loads (DLLM.compile)."""
    for s in settings:
        check_decoding(s.gen_length, s.block_length, s.cache)
    rank, world, _, device = init_ranks(device)
    say = print if rank == 0 and progress else (lambda *a, **k: None)
    if rank == 0:
        take_pending(out, say)
    work, trained = broadcast(
        plan(out, settings, n, seeds, temperature, samples, split, data) if rank == 0 else None,
        rank, world)
    dllm, loaded, memos, problems = None, None, {}, {}
    heuristics = [spec for _, spec, _, _ in work.todo if not checkpoint_of(spec)]
    needs = {n for spec in heuristics for n in parse_policy(spec).needs}
    for si, spec, seed, key in work.todo:
        s = settings[si]
        sn, T, K, sp = s.resolved(n, temperature, samples, split)
        if loaded != s.model:   # one dLLM in memory at a time (real ones are 16 GB)
            dllm = None
            dllm = load_dllm(s.model, device=resolve_device(device), compile=compile)
            loaded = s.model
        # the forwards' outputs, shared by the policies and BLs
        where = (s.model, s.task, s.gen_length, seed, sn, sp)
        if where not in memos:
            memos[where], problems[where] = ForwardMemo(needs), get_problems(
                s.task, sn, seed, sp, data)
        memo, probs = memos[where], problems[where]
        pol = parse_policy(spec, dllm.device)
        pol.check(s.gen_length, s.block_length)
        t0 = time.time()
        comps, _ = decode(dllm, pol, probs, s.task, s.gen_length, s.block_length, batch_size, T,
                          seed, K, s.cache, memo, shard=(rank, world), progress=progress and
                          rank == 0)
        every = gather(comps, rank, world)
        if rank:
            continue
        comps = [c for part in every for c in part]
        row = row_of(spec, comps, probs, s.task, K, time.time() - t0)
        row.update(dict(zip(KEY, key)), setting=s.name)
        write_records(records or records_path(out), records_of(comps, probs, dict(zip(KEY, key))),
                      say)
        if isinstance(pol, Learned):
            row["trained"] = trained[spec]
        merge_row(out, row, say)
        say(f"[{s.name or s.model}] {s.task} L={s.gen_length} BL={s.block_length} T={T} seed "
            f"{seed} {spec:<40} {row['accuracy']:5.1f}% @ {row['mean_nfe']:6.2f} NFE "
            f"({row['seconds']:.1f} s; {100 * memo.hits / max(memo.hits + memo.misses, 1):.0f}% of "
            "the setting's row-forwards read from the memo)")
    if rank:
        return None
    have = {row_key(r): r for r in load_rows(out)}
    return [have[k] for k in dict.fromkeys(work.asked) if k in have]


def weights_digest(state_dict):
    """A short fingerprint of a policy's weights (sha256 over names, shapes, dtypes and bytes, in
    name order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def trained_on(spec):
    """The training setup of a checkpoint policy, stored in its rows (the report groups policies by
    it), with its weights' digest: a file retrained to the same setup and step is a different
    policy, and its old rows are stale. Settings at their default are left out, so that rows of
    files from before a setting existed stay valid."""
    ck = read_checkpoint(checkpoint_of(spec))
    a = ck["args"]
    t = dict(model=a["model"], task=a["task"], gen_length=a["gen_length"],
             block_length=a["block_length"], alpha=a["alpha"], reward=a["reward"], step=ck["step"],
             alpha_range=a["alpha_range"], weights=weights_digest(ck["policy"]))
    if a["expert"]:
        t.update(expert=a["expert"], expert_block_length=a["expert_block_length"])
    if a["actions"] != "bernoulli":
        t["actions"] = a["actions"]
    if a["width"] != 128:
        t["width"] = a["width"]
    for k in ("block_lengths", "temperature_range"):   # a policy trained over settings
        if a[k]:
            t[k] = a[k]
    return t


def summarize(rows):
    """Mean and spread over seeds: one dict per (setting, policy) with accuracy / mean_nfe means and
    sds."""
    groups = {}
    for r in rows:
        groups.setdefault(row_key(r, skip=("seed",)), []).append(r)
    out = []
    for g in groups.values():
        acc = torch.tensor([r["accuracy"] for r in g], dtype=torch.float64)
        nfe = torch.tensor([r["mean_nfe"] for r in g], dtype=torch.float64)
        s = dict(g[0])
        s.update(accuracy=acc.mean().item(), mean_nfe=nfe.mean().item(), seeds=len(g),
                 accuracy_sd=acc.std().item() if len(g) > 1 else 0.0,
                 mean_nfe_sd=nfe.std().item() if len(g) > 1 else 0.0,
                 tokens_per_nfe=sum(r["tokens_per_nfe"] for r in g) / len(g),
                 seconds=sum(r["seconds"] for r in g))
        out.append(s)
    return out


def best_at(rows, nfe, slack=SLACK):
    """The best accuracy among rows at matched NFE (mean NFE <= slack * nfe), or None if every one
    is slower."""
    acc = [r["accuracy"] for r in rows if r["mean_nfe"] <= slack * nfe]
    return max(acc) if acc else None


def table(rows):
    """Markdown: every row, and for a learned one the best hand rule at matched NFE and the gap to
    it."""
    hand = [r for r in rows if "trained" not in r]
    lines = [
        "| policy | accuracy % | mean NFE | tokens/NFE | best hand rule at matched NFE | gap |",
        "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: ("trained" in r, r["policy"].split(":")[0], r["mean_nfe"])):
        b = best_at(hand, r["mean_nfe"]) if "trained" in r else None
        sd = f" ± {r['accuracy_sd']:.1f}" if r.get("seeds", 1) > 1 else ""
        best, gap = ("", "") if b is None else (f"{b:.1f}", f"{r['accuracy'] - b:+.1f}")
        lines.append(
            f"| {r['policy']} | {r['accuracy']:.1f}{sd} | {r['mean_nfe']:.2f} | "
            f"{r['tokens_per_nfe']:.2f} | {best} | {gap} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# the script

def numbers(text, cast, flag):
    """'0.5,1' -> [0.5, 1.0]; None stays None."""
    if text is None:
        return None
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"{flag} {text!r} is not a comma-separated list of {cast.__name__}s") from None


def grids_of(cfg):
    """--block-lengths, --seeds, --taus, --betas, --alphas, parsed and checked."""
    L = cfg.gen_length
    BLs = numbers(cfg.block_lengths, int, "--block-lengths")
    seeds = numbers(cfg.seeds, int, "--seeds")
    taus, betas = numbers(cfg.taus, float, "--taus"), numbers(cfg.betas, float, "--betas")
    alphas = numbers(cfg.alphas, float, "--alphas")
    if not BLs or not seeds:
        raise ValueError("--block-lengths and --seeds need at least one value each")
    for BL in BLs:
        check_counts(block_lengths=(BL, 1))
        if L % BL:
            raise ValueError(f"--gen-length {L} must be a multiple of each of --block-lengths (not "
                             f"{BL})")
    for seed in seeds:
        check_seed(seed, "--seeds")
    for name, grid, rule in (("taus", taus, "> 0"), ("betas", betas, "> 0"),
                             ("alphas", alphas, ">= 0")):
        for v in grid or []:
            check_args(**{name: (v, rule)})
    return BLs, seeds, taus, betas, alphas


def settings_of(cfg):
    """The settings and grids of the command line, each value checked before a model is loaded."""
    if cfg.plot:
        from common.plots import need_matplotlib
        need_matplotlib()
    check_threads(cfg.threads)
    check_args(temperature=(cfg.temperature, ">= 0"))
    check_counts(num_problems=(cfg.num_problems, 1), batch_size=(cfg.batch_size, 1),
                 samples=(cfg.samples, 1), gen_length=(cfg.gen_length, 1))
    L = cfg.gen_length
    BLs, seeds, taus, betas, alphas = grids_of(cfg)
    check_split(cfg.task, cfg.split)
    check_task(cfg.task, cfg.data)
    specs = [s.strip() for s in cfg.policies.split(",") if s.strip()]
    ckpts = [s for s in specs if checkpoint_of(s) == s]
    # before it is built
    grid = len(ckpts) * len(taus or [1]) * len(betas or [1]) * len(alphas or [1])
    sweeps = sum(len(sweep_specs(sweep_names(cfg.sweep), L, BL)) for BL in BLs)
    rows = len(seeds) * (sweeps + len(BLs) * (len(specs) - len(ckpts) + grid))
    if rows > MAX_COUNT or rows * cfg.num_problems * cfg.samples > 1000 * MAX_COUNT:
        raise ValueError(
            f"{rows:,} rows of {cfg.num_problems:,} problems x {cfg.samples} samples "
            "(--block-lengths x --seeds x the policies and their --taus x --betas x --alphas): "
            f"more than any run needs; at most {MAX_COUNT:,} rows and {1000 * MAX_COUNT:,} "
            "completions")
    fixed = [s for s in specs if s not in ckpts]
    fixed += learned_specs(ckpts, taus or [1.0], alphas, betas)
    sweep = sweep_names(cfg.sweep)
    settings = [Setting(cfg.model, cfg.task, L, BL, sweep_specs(sweep, L, BL) + fixed,
                        cache=cfg.cache) for BL in BLs]
    if not any(s.specs for s in settings):
        raise ValueError("nothing to evaluate: pass --sweep and/or --policies")
    if (taus or betas) and not ckpts:
        raise ValueError(
            "--taus / --betas set learned policies' knobs, and no checkpoint is in --policies")
    inputs = [("--policies", c) for c in ckpts] + [("--data", cfg.data), ("--model", cfg.model)]
    check_out_file(cfg.out, "--out", inputs)
    check_out_file(cfg.records or records_path(cfg.out), "--records",
                   [("--out", cfg.out), ("--data", cfg.data)] + [("--policies", c) for c in ckpts])
    if cfg.plot:   # the picture is the run's other output: a file of its own
        check_out_file(plot_path(cfg.out), "--plot's picture",
                       [("--out", cfg.out)] + [("--policies", c) for c in ckpts])
    # a file that is not ours: refused before any work
    load_rows(cfg.out)
    resolve_device(cfg.device)
    check_model_name(cfg.model)
    for s in settings:
        check_decoding(s.gen_length, s.block_length, s.cache)
        for spec in s.specs:
            parse_policy(spec).check(L, s.block_length)    # fail before loading a model, not midway
    return settings, seeds


def main(argv=None):
    signal.signal(signal.SIGINT, signal.default_int_handler)   # from here Ctrl-C is handled below
    cfg = None
    try:
        cfg, _ = parse_config(EvalConfig, argv,
                              "evaluate unmasking policies over settings; resumable JSON rows",
                              "python eval.py")
        settings, seeds = settings_of(cfg)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        on_sigterm()
        rows = run(cfg.out, settings, cfg.num_problems, seeds, cfg.batch_size, cfg.temperature,
                   cfg.device, cfg.data, cfg.split, compile=cfg.compile, samples=cfg.samples,
                   records=cfg.records)
    except KeyboardInterrupt:
        raise interrupted(
            stopped(f"{cfg.out} keeps every row finished before; a rerun does the rest"
                    if cfg else "nothing was written")) from None
    except (ValueError, RuntimeError, OSError) as e:
        raise failed(e)
    finish(int(os.environ.get("WORLD_SIZE", 1)))
    if rows is None:   # another rank's process: rank 0 reports
        return None
    report(cfg, rows)
    return rows


def plot_path(out):
    return os.path.splitext(out)[0] + ".png"


def report(cfg, rows):
    mine = summarize(rows)
    for BL in sorted({r["block_length"] for r in mine}):
        print(
            f"\n{cfg.model} {cfg.task} L={cfg.gen_length} BL={BL}, mean over "
            f"{len(numbers(cfg.seeds, int, ''))} seed(s) (± sd)")
        print(table([r for r in mine if r["block_length"] == BL]))
    if cfg.plot:
        from common.plots import plot_fronts
        png = plot_path(cfg.out)
        BLs = sorted({r["block_length"] for r in mine})
        plot_fronts({f"{cfg.model} {cfg.task} L={cfg.gen_length} BL={BL}":
                     [r for r in mine if r["block_length"] == BL] for BL in BLs}, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
