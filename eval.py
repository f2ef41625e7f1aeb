"""
Benchmarks: evaluate a set of policies over a set of settings (dLLM, task, L, BL) and keep one JSON row per
(policy, setting, seed). The rows file is resumable: a rerun skips rows already there, and it is rewritten
atomically after every row, so an interrupted run loses at most the row in progress.
`--suite tiny` is the paper's experiments in the tiny world in one command: it pretrains the tiny dLLMs if
missing, trains the policies it needs with train.py, evaluates every setting (semi-AR, full diffusion, length,
model and domain transfer, the alpha and tau sweeps, the additive-reward ablation, and the appendices' expert
steering, DPLS actions and beta sweep) and writes results/tiny.json and the report results/tiny.md (report.py:
tables; verdicts.py: one verdict per paper claim).

    python eval.py --suite tiny --plot                 # everything; results/tiny.{json,md,png} (README: its measured time)
    python eval.py --model tiny --task chain --gen-length 32 --block-lengths 8,32 --sweep all \
        --policies out/ckpt.pt --taus 0.5,1 --seeds 0,1,2 --out out/mine.json --plot
    python eval.py --model llada --task gsm8k --gen-length 256 --block-lengths 32,256 --sweep threshold,eb \
        --policies out/llada_bl32.pt --n 1319 --batch-size 16 --out out/llada_gsm8k.json
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from cli import check_args, check_out_file
from env import CACHES, ForwardMemo, check_decoding, generate, row_keys
from model import check_model_name, load_dllm, resolve_device
from policy import LearnedPolicy, parse_policy, read_checkpoint
from sample import evaluate, prompts_of
from tasks import check_task, get_problems, grade
from verdicts import EOS_AWARE   # PC-Sampler and EOS damping: swept in the suite's in-domain settings

# Sweep grids: dense enough that a gap in a heuristic's front never counts as a win for a learned policy. Fixed-step
# rules get every valid step count up to L/2 (a multiple of the L / BL blocks), then L.
GRIDS = dict(threshold=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999], factor=[0.25, 0.5, 1, 2, 4, 6, 8, 12, 16],
             eb=[0.001, 0.01, 0.03, 0.1, 0.3, 0.6, 1, 3])
STEP_RULES = ("topk", "random", "margin", "entropy")
# The end-of-text-aware rules (PC-Sampler, EOSER) run on the top-k schedule: every step count, at these settings.
SCHEDULED = dict(pc=("lam", [0.25, 1.0]), eosdamp=("g", [0.4]))
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
        elif name in GRIDS:
            key = {"threshold": "", "factor": "", "eb": "gamma="}[name]
            specs += [f"{name}:{key}{v}" for v in GRIDS[name]]
        else:
            raise ValueError(f"unknown sweep {name!r}: use 'all' or some of {list(STEP_RULES) + list(GRIDS) + list(SCHEDULED)}")
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
            stale = have.get(row_key(row))
            rows = [r for r in rows if r is not stale] + [row]
            have[row_key(row)] = row
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


# ----------------------------------------------------------------------------------------------------
# the tiny-world suite

SUITE = dict(task="chain", ood_task="sub", model="tiny", other_model="tiny-b", L=32, semi_bl=8,
             alphas=(0, 0.3, 1, 3, 10), additive_alpha=10, taus=(0.5, 1.0, 2.0), steps=30, prompts=16, group=8, n=500,
             # one alpha-conditioned policy per block length, read at these alphas (the per-alpha ones and between)
             cond_range="0,10", cond_alphas=(0, 0.1, 0.3, 0.5, 1, 2, 3, 5, 10),
             # semi-AR policies start at unmask p = 0.5: at the paper's 0.12, 8 iterations a block leave a third of
             # each block masked, every rollout is wrong and the reward stays 0 (README, the learned policy)
             semi_init_bias=0.0,
             # paper App. F: expert steering in full diffusion, one ES policy per alpha (does the alpha spread collapse?);
             # the expert decodes in full diffusion too: in this world it starts GRPO where plain GRPO gets no signal
             # (README, the learned policy), while world 1's BL-8 expert stalled alpha 3 and 10 (results/world1)
             expert="threshold:0.9", expert_bl=32,
             # paper App. E: a DPLS policy at this alpha in both modes; Fig. 6: the plain policy of this alpha over a beta grid
             variant_alpha=3, betas=(0.25, 0.5, 1, 2, 4))


def claim(path):
    """Take path + '.lock' for this process -> a function that gives it back (and removes the file), or None while
    another process holds it. An flock: the kernel releases it when its holder exits however it exits, so a killed
    run leaves no stale claim. So that `--suite-part train` can run in as many processes as there are cores. Without
    fcntl (Windows) every claim is granted: run one trainer at a time there."""
    try:
        import fcntl
    except ImportError:
        return lambda: None
    lock = path + ".lock"
    while True:
        f = open(lock, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        try:
            mine = os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            mine = False
        if mine:
            def give_back():
                os.remove(lock)    # while still held: a process that opened it meanwhile finds it gone and retries
                f.close()
            return give_back
        f.close()                  # its holder removed it as we opened it: open the new one


def suite_policy(out_dir, BL, alpha, reward="mult", steps=SUITE["steps"], alpha_range=None, expert=None,
                 actions="bernoulli"):
    """Train (or finish, or reuse) one suite policy with train.py's loop; returns its checkpoint path, or None when
    another process is training it (claim). alpha_range: the alpha-conditioned policy of this block length instead
    of the one for `alpha`; expert: expert steering by that heuristic (at SUITE's expert_bl); actions: dpls for
    Plackett-Luce actions."""
    import train
    name = f"cond{alpha_range.replace(',', '-')}" if alpha_range else f"{'add' if reward == 'additive' else 'a'}{alpha:g}"
    name += ("_es" if expert else "") + ("_dpls" if actions == "dpls" else "")
    path = os.path.join(out_dir, f"policy_bl{BL}_{name}.pt")

    def done():
        if not os.path.exists(path):
            return False
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck["args"]["steps"] != steps:
            raise ValueError(f"{path} was trained for {ck['args']['steps']} steps, not {steps}: move {out_dir} away "
                             f"or pass --suite-steps {ck['args']['steps']}")
        return ck["step"] >= steps
    if done():
        return path
    os.makedirs(out_dir, exist_ok=True)
    give_back = claim(path)
    if give_back is None:
        print(f"{path}: another process is training it; skipped")
        return None
    try:
        if done():             # finished by the process that held it a moment ago
            return path
        print(f"training {path}: BL={BL} alpha={alpha_range or alpha} reward={reward}"
              f"{f' expert {expert}' if expert else ''} actions {actions}, {steps} GRPO steps")
        init = {} if BL == SUITE["L"] else dict(init_bias=SUITE["semi_init_bias"])
        train.train(train.TrainConfig(model=SUITE["model"], task=SUITE["task"], gen_length=SUITE["L"], block_length=BL,
                                      alpha=float(alpha or 0), reward=reward, steps=steps, eval_every=0, out=path,
                                      prompts_per_step=SUITE["prompts"], group_size=SUITE["group"],
                                      alpha_range=alpha_range, save_every=10, resume=os.path.exists(path),
                                      expert=expert, actions=actions,
                                      expert_block_length=SUITE["expert_bl"] if expert else None, **init))
    finally:
        give_back()
    return path


def suite_settings(pols=None, conds=None, variants=None):
    """pols[(BL, alpha, reward)] -> checkpoint, conds[BL] -> the alpha-conditioned one, variants[(BL, alpha, kind)]
    -> the expert-steered ('es') and Plackett-Luce ('dpls') ones. The paper's experiments (README: Reproducing the
    paper), its appendices' variants, the beta sweep and the alpha-conditioned policy, in the tiny world.
    pols None: the same settings with their heuristic specs only (what the suite evaluates before it trains)."""
    c, L, S = SUITE, SUITE["L"], SUITE["semi_bl"]
    variants = variants or {}
    if pols is None:
        cond = var = betas = taus = lambda BL: []
        tau1 = lambda BL, rewards=None: []
    else:
        cond = lambda BL: learned_specs([conds[BL]], [1.0], c["cond_alphas"])
        # the expert-steered policies (full diffusion) over the tau grid too, as the alpha-3 policy is read
        var = lambda BL: learned_specs([variants[k] for k in sorted(variants) if k[0] == BL], [1.0]) + \
            learned_specs([variants[k] for k in sorted(variants) if k[0] == BL and k[2] == "es"],
                          [t for t in c["taus"] if t != 1.0])
        betas = lambda BL: learned_specs([pols[(BL, c["variant_alpha"], "mult")]], [1.0], betas=c["betas"]) if variants else []
        tau1 = lambda BL, rewards=("mult",): learned_specs([pols[k] for k in sorted(pols) if k[0] == BL and k[2] in rewards], [1.0])
        taus = lambda BL: learned_specs([pols[(BL, 3, "mult")]], [t for t in c["taus"] if t != 1.0])
    return [
        Setting(c["model"], c["task"], L, S, sweep_specs(ALL + EOS_AWARE, L, S) + tau1(S) + taus(S) + cond(S)
                + var(S) + betas(S), "semi-AR"),
        Setting(c["model"], c["task"], L, L, sweep_specs(ALL + EOS_AWARE, L, L) + tau1(L, ("mult", "additive"))
                + taus(L) + cond(L) + var(L) + betas(L), "full diffusion"),
        Setting(c["model"], c["task"], 2 * L, S, sweep_specs(ALL, 2 * L, S) + tau1(S), "length transfer, semi-AR"),
        Setting(c["model"], c["task"], 2 * L, 2 * L, sweep_specs(ALL, 2 * L, 2 * L) + tau1(L), "length transfer, full"),
        Setting(c["other_model"], c["task"], L, S, sweep_specs(ALL, L, S) + tau1(S), "model transfer, semi-AR"),
        Setting(c["other_model"], c["task"], L, L, sweep_specs(ALL, L, L) + tau1(L), "model transfer, full"),
        Setting(c["model"], c["ood_task"], L, S, sweep_specs(ALL, L, S) + tau1(S), "domain transfer, semi-AR"),
        Setting(c["model"], c["ood_task"], L, L, sweep_specs(ALL, L, L) + tau1(L), "domain transfer, full"),
    ]


def unmask_orders(model, task, L, BL, specs, seed=0):
    """One problem decoded by each spec -> [(spec, token strings, step at which each was revealed, correct)]."""
    dllm = load_dllm(model)
    p = get_problems(task, 1, seed, "test")
    ids, am = prompts_of(dllm, p)
    out = []
    for spec in specs:
        r = generate(dllm, parse_policy(spec), ids, am, L, BL, keys=row_keys(seed, torch.arange(1)))
        toks = ["." if t == dllm.eos_id else dllm.decode([t]) or "?" for t in r.tokens[0].tolist()]
        out.append((spec, toks, r.order[0].tolist(), grade(task, p[0], dllm.decode(r.tokens[0].tolist()))))
    return p[0].question, out


def suite_policies(out_dir, steps):
    """Train (or finish, or reuse) every policy of the suite -> (pols, conds, variants) as suite_settings takes them."""
    pols = {}
    for BL in (SUITE["semi_bl"], SUITE["L"]):
        for a in SUITE["alphas"]:
            pols[(BL, a, "mult")] = suite_policy(out_dir, BL, a, steps=steps)
    pols[(SUITE["L"], SUITE["additive_alpha"], "additive")] = suite_policy(out_dir, SUITE["L"], SUITE["additive_alpha"],
                                                                          "additive", steps=steps)
    conds = {BL: suite_policy(out_dir, BL, None, steps=steps, alpha_range=SUITE["cond_range"])
             for BL in (SUITE["semi_bl"], SUITE["L"])}
    variants = {(SUITE["L"], a, "es"): suite_policy(out_dir, SUITE["L"], a, steps=steps, expert=SUITE["expert"])
                for a in SUITE["alphas"]}
    for BL in (SUITE["semi_bl"], SUITE["L"]):
        variants[(BL, SUITE["variant_alpha"], "dpls")] = suite_policy(out_dir, BL, SUITE["variant_alpha"], steps=steps, actions="dpls")
    return pols, conds, variants


SUITE_PARTS = ("all", "heuristics", "train")


def spawn_trainers(n, results_dir, out_dir, steps):
    """n processes of `suite(part='train')` at one thread each, logging to out_dir/train-worker-<i>.log; this
    process's SUITE (which tests shrink) goes with them. -> [(Popen, log path)]"""
    os.makedirs(out_dir, exist_ok=True)
    code = ("import json, sys, torch, eval; torch.set_num_threads(1); eval.SUITE.update(json.loads(sys.argv[1])); "
            "eval.suite(results_dir=sys.argv[2], out_dir=sys.argv[3], steps=int(sys.argv[4]), part='train')")
    procs = []
    for i in range(n):
        log = os.path.join(out_dir, f"train-worker-{i + 1}.log")
        with open(log, "w") as f:
            procs.append((subprocess.Popen([sys.executable, "-c", code, json.dumps(SUITE), results_dir, out_dir,
                                            str(steps)], stdout=f, stderr=subprocess.STDOUT,
                                           cwd=os.path.dirname(os.path.abspath(__file__))), log))
    return procs


def suite(results_dir="results", out_dir="out/suite", plot=False, steps=SUITE["steps"], part="all", compile=False,
          jobs=1):
    """The tiny-world suite. part 'heuristics': only the heuristic rows (they need no policy); 'train': only the GRPO
    runs (in as many processes as you like: each claims its policies); 'all' does everything, the heuristic rows
    first, so a run cut short keeps them, then the GRPO runs, the policies' rows and the report. jobs > 1 (part
    'all'): the heuristic rows and the GRPO runs in jobs processes at one thread each (this one and jobs - 1
    trainers, which take the policies this one has not claimed), then the rest at the thread count set before."""
    import report
    if part not in SUITE_PARTS:
        raise ValueError(f"unknown suite part {part!r}: use one of {SUITE_PARTS}")
    if jobs < 1 or (jobs > 1 and part != "all"):
        raise ValueError(f"--jobs {jobs}: a positive count, and more than 1 only for the whole suite (--suite-part all)")
    t0 = time.time()
    pretrain_min = {}
    for name in (SUITE["model"], SUITE["other_model"]):
        pretrain_min[name] = getattr(load_dllm(name), "meta", {}).get("minutes")   # pretrains out/<name>.pt if missing
    path = os.path.join(results_dir, "tiny.json")
    threads, procs = torch.get_num_threads(), []
    if jobs > 1:
        procs = spawn_trainers(jobs - 1, results_dir, out_dir, steps)
        print(f"{jobs - 1} GRPO trainer(s) started at one thread each: {', '.join(log for _, log in procs)}")
        torch.set_num_threads(1)
    try:
        if part != "train":
            run(path, suite_settings(), n=SUITE["n"], compile=compile)
        if part == "heuristics":
            return
        pols, conds, variants = suite_policies(out_dir, steps)
        for p, log in procs:
            if p.wait():
                raise RuntimeError(f"a GRPO trainer exited with status {p.returncode}: see {log}")
        if procs:
            pols, conds, variants = suite_policies(out_dir, steps)   # the trainers' policies too, now finished
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        torch.set_num_threads(threads)
    busy = sum(v is None for d in (pols, conds, variants) for v in d.values())
    if part == "train":
        if busy:
            print(f"{busy} suite policies skipped: other processes are training them")
        return
    if busy:
        raise ValueError(f"{busy} suite policies are being trained by other processes ({out_dir}/*.lock): run this "
                         f"again when they are done")
    settings = suite_settings(pols, conds, variants)
    rows = run(path, settings, n=SUITE["n"], compile=compile)
    by = report.by_setting(summarize(rows), settings)
    def log_of(p):   # a resumed run may have logged a step twice: keep the last
        by_step = {m["step"]: m for m in map(json.loads, open(os.path.splitext(p)[0] + ".jsonl"))}
        return [by_step[s] for s in sorted(by_step)]
    logs = {os.path.basename(p): (*k, log_of(p)) for k, p in pols.items()}   # name -> (BL, alpha, reward, log)
    cond_logs = {BL: log_of(p) for BL, p in conds.items()}
    variant_logs = {os.path.basename(p): log_of(p) for p in variants.values()}
    md = report.suite_report(by, SUITE, logs, (time.time() - t0) / 60, pretrain_min, rows, cond_logs, variant_logs)
    if plot:
        report.plot_fronts({report.title(k, v): v for k, v in by.items()}, os.path.join(results_dir, "tiny.png"))
        L = SUITE["L"]
        question, orders = unmask_orders(SUITE["model"], SUITE["task"], L, L,
                                         ["threshold:0.9", f"{pols[(L, 3, 'mult')]}:tau=1.0"])
        report.plot_orders(question, orders, os.path.join(results_dir, "tiny_order.png"))
        md += "\n![accuracy vs NFE](tiny.png)\n\n![unmask order](tiny_order.png)\n"
    with open(os.path.join(results_dir, "tiny.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {results_dir}/tiny.json and tiny.md in {(time.time() - t0) / 60:.1f} min")


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
    p.add_argument("--suite", default=None, help="'tiny': the paper's experiments in the tiny world, end to end")
    p.add_argument("--model", default="tiny", help="dLLM: tiny, tiny-b, llada, llada-1.5, dream, a local dir or *.pt")
    p.add_argument("--task", default="chain", help="chain, sub (tiny world) or gsm8k, math500")
    p.add_argument("--gen-length", type=int, default=32, help="L, the generation buffer (real models: 256)")
    p.add_argument("--block-lengths", type=comma(int), default="32", help="comma-separated BLs; BL == L is full diffusion")
    p.add_argument("--sweep", default="", help="heuristic sweeps: 'all' or some of topk,random,threshold,factor,eb,margin,entropy,pc,eosdamp")
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
    p.add_argument("--suite-steps", type=int, default=SUITE["steps"], help="GRPO steps per suite policy")
    p.add_argument("--suite-part", default="all",
                   help="all; heuristics: the heuristic rows only; train: the GRPO runs only (run both side by side, "
                        "--threads 1 each, then the default 'all' evaluates the policies and writes the report)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--jobs", type=int, default=1, help="--suite: run the heuristic rows and the GRPO runs in this "
                   "many processes at one thread each (2 on 2 cores), then the rest at --threads")
    p.add_argument("--cache", default="none", choices=CACHES, help="KV cache (semi-AR only; prefix and dual are approximate, see env.py)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: autodetect)")
    p.add_argument("--compile", action="store_true", help="torch.compile the dLLM (one-off ~25 s on CPU, then ~1.4x "
                   "faster rows in the tiny world; logits within ~1e-5 of eager; not with --cache)")
    args = p.parse_args(argv)
    try:
        if args.plot:
            import report
            report.need_matplotlib()
        check_args(suite_steps=(args.suite_steps, ">= 1"), threads=(args.threads, ">= 0"))
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.jobs != 1 and not args.suite:
            raise ValueError("--jobs is for --suite tiny (an eval run is one process; its rows file is resumable)")
        if args.suite:
            if args.suite != "tiny":
                raise ValueError(f"unknown suite {args.suite!r}: the one suite is 'tiny'")
            return suite(plot=args.plot, steps=args.suite_steps, part=args.suite_part, compile=args.compile,
                         jobs=args.jobs)
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
        names = ALL if args.sweep == "all" else [s for s in args.sweep.split(",") if s.strip()]
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
    import report
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
