"""
The tiny-world suite: the paper's experiments end to end in one command. It pretrains the tiny dLLMs if missing,
trains the policies it needs with train.py, evaluates every setting with eval.py's resumable rows (semi-AR, full
diffusion, length, model and domain transfer, the alpha and tau sweeps, the additive-reward ablation, and the
appendices' expert steering, DPLS actions and beta sweep, each heuristic also as the band rule) and writes
results/tiny.json and the report results/tiny.md (report.py: tables; verdicts.py: one verdict per paper claim).

    python -m support.suite --plot --jobs 2 --compile --threads 2   # everything (docs/results.md: its measured time)
    python -m support.suite --part heuristics                        # only the heuristic rows
"""
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from filelock import FileLock, Timeout

import train
from decode import parse_policy
from env import generate, row_keys
from common.cli import check_args, check_threads, interrupted, option, parse_config, write_json
from eval import Setting, canonical, learned_specs, run, summarize, sweep_specs
from model import load_dllm
from policy import RULES
from support import report
from support.seeds import HAND, Study
from support.shifts import (SHIFTS, best_hand_rule, modes, nongreedy_settings, shift_settings, shipped_spec, tune,
                            validation_settings)
from tasks import get_problems, grade, prompts_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = tuple(r.name for r in RULES.values() if r.in_all)                     # the paper's sweep (eval.py --sweep all)
IN_DOMAIN = ALL + tuple(r.name for r in RULES.values() if r.group != "paper")   # + PC-Sampler, EOS damping, band

SUITE = dict(task="chain", ood_task="sub", model="tiny", other_model="tiny-b", L=32, semi_bl=8,
             alphas=(0, 0.3, 1, 3, 10), additive_alpha=10, taus=(0.5, 1.0, 2.0), steps=30, prompts=16, group=8, n=500,
             # one alpha-conditioned policy per block length, read at these alphas (the per-alpha ones and between)
             cond_range="0,10", cond_alphas=(0, 0.1, 0.3, 0.5, 1, 2, 3, 5, 10),
             # ... each started from the per-alpha policy of this alpha and its kind (train.py --init): from scratch,
             # full diffusion's stayed at 9.4-10.1 NFE, slower than that policy (docs/learning.md)
             cond_init_alpha=1,
             # semi-AR policies start at unmask p = 0.5: at the paper's 0.12, 8 iterations a block leave a third of
             # each block masked, every rollout is wrong and the reward stays 0 (docs/tiny-world.md, the learned policy)
             semi_init_bias=0.0,
             # paper App. F: expert steering in full diffusion, one ES policy per alpha (does the alpha spread collapse?);
             # the expert decodes in full diffusion too: in this world it starts GRPO where plain GRPO gets no signal
             # (docs/tiny-world.md, the learned policy), while world 1's BL-8 expert stalled alpha 3 and 10 (results/world1)
             expert="threshold:0.9", expert_bl=32,
             # paper App. E: a DPLS policy at this alpha in both modes; Fig. 6: the plain policy of this alpha over a beta grid
             variant_alpha=3, betas=(0.25, 0.5, 1, 2, 4),
             # App. B.9 (support/shifts.py): the policies of this alpha under sampling
             nongreedy_alpha=1,
             # one policy for every setting (support/seeds.py): the shipped universal policy against the per-setting
             # ones at home and the hand rules tuned at T = 0 on the validation split, per block length and temperature
             universal=dict(path="weights/policy.pt", home=("weights/policy_semi.pt", "weights/policy_full.pt"),
                            block_lengths=(4, 8, 16, 32), temps=(0.0, 0.3, 0.8), hot_n=200, hand=HAND))


def claim(path):
    """Take path + '.claim' for this process -> a function that gives it back, or None while another process holds it
    (filelock: an OS lock that the kernel releases however its holder exits, so a killed run leaves no stale claim).
    So that `--suite-part train` can run in as many processes as there are cores."""
    lock = FileLock(path + ".claim", timeout=0)   # not path + ".lock", which train.py holds while it writes path
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock.release


def suite_policy(out_dir, BL, alpha, reward="mult", steps=SUITE["steps"], alpha_range=None, expert=None,
                 actions="bernoulli", init=None):
    """Train (or finish, or reuse) one suite policy with train.py's loop; returns its checkpoint path, or None when
    another process is training it (claim). alpha_range: the alpha-conditioned policy of this block length instead
    of the one for `alpha`; expert: expert steering by that heuristic (at SUITE's expert_bl); actions: dpls for
    Plackett-Luce actions; init: the checkpoint it starts from (train.py --init)."""
    name = f"cond{alpha_range.replace(',', '-')}" if alpha_range else f"{'add' if reward == 'additive' else 'a'}{alpha:g}"
    name += ("_es" if expert else "") + ("_dpls" if actions == "dpls" else "") + ("_init" if init else "")
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
        bias = {} if BL == SUITE["L"] else dict(init_bias=SUITE["semi_init_bias"])
        train.train(train.TrainConfig(model=SUITE["model"], task=SUITE["task"], gen_length=SUITE["L"], block_length=BL,
                                      alpha=float(alpha or 0), reward=reward, steps=steps, eval_every=0, out=path,
                                      prompts_per_step=SUITE["prompts"], group_size=SUITE["group"],
                                      alpha_range=alpha_range, save_every=10, resume=os.path.exists(path),
                                      expert=expert, actions=actions, init=init,
                                      expert_block_length=SUITE["expert_bl"] if expert else None, **bias))
    finally:
        give_back()
    return path


def suite_settings(pols=None, conds=None, variants=None):
    """pols[(BL, alpha, reward)] -> checkpoint, conds[BL] -> the alpha-conditioned one, variants[(BL, alpha, kind)]
    -> the expert-steered ('es') and Plackett-Luce ('dpls') ones. The paper's experiments (docs/results.md: Reproducing the
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
        Setting(c["model"], c["task"], L, S, sweep_specs(IN_DOMAIN, L, S, c.get("grids")) + tau1(S) + taus(S) + cond(S)
                + var(S) + betas(S), "semi-AR"),
        Setting(c["model"], c["task"], L, L, sweep_specs(IN_DOMAIN, L, L, c.get("grids")) + tau1(L, ("mult", "additive"))
                + taus(L) + cond(L) + var(L) + betas(L), "full diffusion"),
        Setting(c["model"], c["task"], 2 * L, S, sweep_specs(ALL, 2 * L, S, c.get("grids")) + tau1(S), "length transfer, semi-AR"),
        Setting(c["model"], c["task"], 2 * L, 2 * L, sweep_specs(ALL, 2 * L, 2 * L, c.get("grids")) + tau1(L), "length transfer, full"),
        Setting(c["other_model"], c["task"], L, S, sweep_specs(ALL, L, S, c.get("grids")) + tau1(S), "model transfer, semi-AR"),
        Setting(c["other_model"], c["task"], L, L, sweep_specs(ALL, L, L, c.get("grids")) + tau1(L), "model transfer, full"),
        Setting(c["model"], c["ood_task"], L, S, sweep_specs(ALL, L, S, c.get("grids")) + tau1(S), "domain transfer, semi-AR"),
        Setting(c["model"], c["ood_task"], L, L, sweep_specs(ALL, L, L, c.get("grids")) + tau1(L), "domain transfer, full"),
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
    variants = {(SUITE["L"], a, "es"): suite_policy(out_dir, SUITE["L"], a, steps=steps, expert=SUITE["expert"])
                for a in SUITE["alphas"]}
    # the conditioned policies are trained as the per-alpha ones they are compared with (full diffusion steered),
    # from the one of cond_init_alpha; None while another process trains that one
    a = SUITE["cond_init_alpha"]
    starts = {SUITE["semi_bl"]: pols[(SUITE["semi_bl"], a, "mult")], SUITE["L"]: variants[(SUITE["L"], a, "es")]}
    conds = {BL: start and suite_policy(out_dir, BL, None, steps=steps, alpha_range=SUITE["cond_range"], init=start,
                                        expert=SUITE["expert"] if BL == SUITE["L"] else None) for BL, start in starts.items()}
    for BL in (SUITE["semi_bl"], SUITE["L"]):
        variants[(BL, SUITE["variant_alpha"], "dpls")] = suite_policy(out_dir, BL, SUITE["variant_alpha"], steps=steps, actions="dpls")
    return pols, conds, variants


SUITE_PARTS = ("all", "heuristics", "train")


def worker_env(i, gpus):
    """The environment of trainer i (1-based): on a machine with several GPUs it sees only GPU i mod gpus (this
    process keeps GPU 0), so no two jobs share one; elsewhere this process's environment."""
    env = dict(os.environ)
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
    return env


def gpus():
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def spawn_trainers(n, results_dir, out_dir, steps, gpus=0):
    """n processes of `suite(part='train')` at one thread each, logging to out_dir/train-worker-<i>.log, each on its own
    GPU when there are several (worker_env); this process's SUITE (which tests shrink) goes with them.
    -> [(Popen, log path)]"""
    os.makedirs(out_dir, exist_ok=True)
    code = ("import json, sys, torch; from support import suite; torch.set_num_threads(1); "
            "suite.SUITE.update(json.loads(sys.argv[1])); "
            "suite.suite(results_dir=sys.argv[2], out_dir=sys.argv[3], steps=int(sys.argv[4]), part='train')")
    procs = []
    for i in range(n):
        log = os.path.join(out_dir, f"train-worker-{i + 1}.log")
        with open(log, "w") as f:
            procs.append((subprocess.Popen([sys.executable, "-c", code, json.dumps(SUITE), results_dir, out_dir,
                                            str(steps)], stdout=f, stderr=subprocess.STDOUT,
                                           cwd=ROOT, env=worker_env(i + 1, gpus)), log))
    return procs


def suite(results_dir="results", out_dir="out/suite", plot=False, steps=SUITE["steps"], part="all", compile=False,
          jobs=1):
    """The tiny-world suite. part 'heuristics': only the rows that need no suite policy (the heuristics, the
    validation split and the shifts of the shipped policies); 'train': only the GRPO runs (in as many processes as you
    like: each claims its policies); 'all' does everything, those rows first, so a run cut short keeps them, then the
    GRPO runs, the policies' rows, the non-greedy study and the report. jobs > 1 (part 'all'): the first rows and the
    GRPO runs in jobs processes at one thread each (this one and jobs - 1 trainers, which take the policies this one
    has not claimed), then the rest at the thread count set before."""
    if part not in SUITE_PARTS:
        raise ValueError(f"unknown suite part {part!r}: use one of {SUITE_PARTS}")
    if jobs < 1 or (jobs > 1 and part != "all"):
        raise ValueError(f"--jobs {jobs}: a positive count, and more than 1 only for the whole suite (--suite-part all)")
    t0 = time.time()
    pretrain_min = {name: getattr(load_dllm(name), "meta", {}).get("minutes")
                    for name in (SUITE["model"], SUITE["other_model"])}
    path = os.path.join(results_dir, "tiny.json")
    fresh = not os.path.exists(path) and not glob.glob(os.path.join(out_dir, "*.pt"))   # nothing to reuse: a complete run
    threads, procs, tuned = torch.get_num_threads(), [], {}
    if jobs > 1:
        procs = spawn_trainers(jobs - 1, results_dir, out_dir, steps, gpus())
        print(f"{jobs - 1} GRPO trainer(s) started at one thread each: {', '.join(log for _, log in procs)}")
        torch.set_num_threads(1)
    try:
        if part != "train":
            tuned = first_rows(path, compile)
        if part == "heuristics":
            write_settings(results_dir)
            print(f"the heuristic rows are all in {path}; the universal policy's report in "
                  f"{results_dir}/settings.md")
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
    settings = (suite_settings(pols, conds, variants) + validation_settings(SUITE, IN_DOMAIN) + shift_settings(SUITE, tuned)
                + nongreedy(path, pols, variants))
    rows = run(path, settings, n=SUITE["n"], compile=compile)
    write_report(results_dir, by_setting(summarize(rows), settings), rows, pols, conds, variants, tuned, t0,
                 pretrain_min, plot, fresh, jobs)


def first_rows(path, compile):
    """The rows that need no suite policy: the heuristics of every setting, the validation split, the shifts of the
    shipped policies, whose hand rules are tuned on that split, and the universal policy's settings -> tuned {mode:
    {family: spec}}."""
    valid = validation_settings(SUITE, IN_DOMAIN)
    rows = run(path, suite_settings() + valid, n=SUITE["n"], compile=compile)
    by = by_setting(summarize(rows), valid)
    tuned = {mode: tune(by[f"validation, {mode}"], shipped_spec(mode)) for mode, _ in modes(SUITE)}
    run(path, shift_settings(SUITE, tuned), n=SUITE["n"], compile=compile)
    universal_rows(path, compile)
    return tuned


def write_settings(results_dir):
    """The universal policy's report (its rows need no suite policy), also written alone as
    results/settings.md."""
    md = report.settings_report(*universal_rows(os.path.join(results_dir, "tiny.json")))
    with open(os.path.join(results_dir, "settings.md"), "w") as f:
        f.write(md.lstrip("\n"))
    return md


def universal_study():
    u = SUITE["universal"]
    return Study([u["path"]], u["home"], u["block_lengths"], u["temps"], SUITE["n"], u["hot_n"], SUITE.get("grids"),
                 SUITE["model"], SUITE["task"], SUITE["L"], u["hand"], ROOT)


def universal_rows(path, compile=False):
    """The universal policy's study: T = 0 rows (validation and test), then the T > 0 rows of the rules tuned on
    them -> (study, rows, tuned {BL: [spec]})."""
    study = universal_study()
    rows = run(path, study.greedy(), n=SUITE["n"], compile=compile)
    tuned = study.tuned(rows)
    return study, rows + run(path, study.hot(tuned), n=SUITE["n"], compile=compile), tuned


def nongreedy(path, pols, variants):
    """The non-greedy study's settings: the alpha = 1 policies (plain in blocks, expert-steered in full diffusion, as
    the suite trains them), threshold at the paper's lambda, and the best hand rule of the T = 0.8 shift sweep at the
    policy's NFE under sampling (which the first pass measures)."""
    L, S, a = SUITE["L"], SUITE["semi_bl"], SUITE["nongreedy_alpha"]
    learned = {"semi-AR": f"{pols[(S, a, 'mult')]}:tau=1.0", "full": f"{variants[(L, a, 'es')]}:tau=1.0"}
    first = nongreedy_settings(SUITE, learned)
    by = by_setting(summarize(run(path, first, n=SUITE["n"])), first)
    T, extra = SHIFTS["nongreedy_T"], {}
    sweeps = shift_settings(SUITE, {})   # the shift sweeps' rows, already computed by first_rows
    shifts = by_setting(summarize(run(path, sweeps, n=SUITE["n"])), sweeps)
    for mode, _ in modes(SUITE):
        mine = next((r for r in by[f"non-greedy, {mode}"] if "trained" in r), None)
        best = mine and best_hand_rule(shifts.get(f"shift: T = {T:g}, {mode}", []), mine["mean_nfe"],
                                       exclude=(f"threshold:{SHIFTS['nongreedy_lam']}",))
        extra[mode] = best and best["policy"]
    return nongreedy_settings(SUITE, learned, extra)


def write_report(results_dir, by, rows, pols, conds, variants, tuned, t0, pretrain_min, plot, fresh, jobs):
    """results/tiny.md (and the pictures with plot); a complete run from nothing records its wall time first."""
    def log_of(p):   # a resumed run may have logged a step twice: keep the last
        by_step = {m["step"]: m for m in map(json.loads, open(os.path.splitext(p)[0] + ".jsonl"))}
        return [by_step[s] for s in sorted(by_step)]
    logs = {os.path.basename(p): (*k, log_of(p)) for k, p in pols.items()}   # name -> (BL, alpha, reward, log)
    cond_logs = {BL: log_of(p) for BL, p in conds.items()}
    variant_logs = {os.path.basename(p): log_of(p) for p in variants.values()}
    base = os.path.basename   # the per-alpha runs of each conditioned policy's kind, from the logs read above
    per_logs = {SUITE["semi_bl"]: {a: logs[base(pols[(SUITE["semi_bl"], a, "mult")])][3] for a in SUITE["alphas"]},
                SUITE["L"]: {a: variant_logs[base(variants[(SUITE["L"], a, "es")])] for a in SUITE["alphas"]}}
    minutes = (time.time() - t0) / 60
    timing = os.path.join(results_dir, "suite_time.json")
    if fresh:
        write_json(timing, dict(minutes=minutes, date=time.strftime("%Y-%m-%d"), jobs=jobs, cores=os.cpu_count(),
                                threads=torch.get_num_threads(), torch=torch.__version__))
    last = json.load(open(timing)) if os.path.exists(timing) else None
    md = report.suite_report(by, SUITE, logs, minutes, pretrain_min, rows, cond_logs, variant_logs, per_logs, last)
    md += report.studies_report(by, SUITE, tuned)
    md += write_settings(results_dir)
    if plot:
        report.plot_fronts({report.title(k, v): v for k, v in by.items() if not k.startswith(("non-greedy", "valid"))},
                           os.path.join(results_dir, "tiny.png"))
        L = SUITE["L"]
        question, orders = unmask_orders(SUITE["model"], SUITE["task"], L, L,
                                         ["threshold:0.9", f"{pols[(L, 3, 'mult')]}:tau=1.0"])
        report.plot_orders(question, orders, os.path.join(results_dir, "tiny_order.png"))
        md += "\n![accuracy vs NFE](tiny.png)\n\n![unmask order](tiny_order.png)\n"
    with open(os.path.join(results_dir, "tiny.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {results_dir}/tiny.json and tiny.md in {minutes:.1f} min")


def by_setting(rows, settings, n=None, temperature=0.0, samples=1, split="test"):
    """Summarized rows -> {setting name: its rows}. Matched on what makes a row (model, task, L, BL, policy, problems,
    temperature, samples, split), not on the stored name, since two settings may share rows (the same evaluation is
    never run twice)."""
    out = {}
    for s in settings:
        sn, T, K, sp = s.resolved(n or SUITE["n"], temperature, samples, split)
        specs = {canonical(p) for p in s.specs}
        out[s.name] = [r for r in rows if (r["model"], r["task"], r["gen_length"], r["block_length"]) ==
                       (s.model, s.task, s.gen_length, s.block_length) and r["policy"] in specs and r["n"] == sn
                       and r["temperature"] == T and r.get("samples", 1) == K and r.get("split", "test") == sp]
    return out


@dataclass
class SuiteConfig:
    plot: bool = option(False, "also draw results/tiny.png and tiny_order.png (needs matplotlib)")
    steps: int = option(SUITE["steps"], "GRPO steps per suite policy")
    part: str = option("all", "all; heuristics: the heuristic rows only; train: the GRPO runs only (run both side by "
                              "side, --threads 1 each, then the default 'all' evaluates the policies and writes the report)")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    jobs: int = option(1, "run the heuristic rows and the GRPO runs in this many processes at one thread each (2 on 2 "
                          "cores; on a machine with GPUs each process takes its own), then the rest at --threads")
    compile: bool = option(False, "torch.compile the dLLM for the rows (eval.py --compile)")


def main(argv=None):
    try:
        cfg, _ = parse_config(SuiteConfig, argv, "the tiny-world suite: the paper's experiments end to end",
                              "python -m support.suite")
        if cfg.plot:
            report.need_matplotlib()
        check_args(steps=(cfg.steps, ">= 1"))
        check_threads(cfg.threads)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return suite(plot=cfg.plot, steps=cfg.steps, part=cfg.part, compile=cfg.compile, jobs=cfg.jobs)
    except KeyboardInterrupt:
        raise interrupted("interrupted: every finished row and policy is kept (a rerun resumes)") from None
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
