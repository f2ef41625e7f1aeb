"""
Where hand rules break and a learned policy might not - two studies of the suite (support/suite.py), with their
verdicts:

  shifts       the shipped policies (weights/policy_semi.pt, blocks of 8; weights/policy_full.pt, full diffusion)
               against the hand rules tuned at temperature 0 on a validation split (per rule, its most accurate
               setting at the policy's NFE there: the matched-NFE rule), under five shifts: dLLM temperature 0.3 and
               0.8 (the rules' thresholds were tuned on greedy decoding), the other dLLM (tiny-b),
               L 64 (a fixed-step rule keeps its steps per token) and the sub task. Beside it, the harder comparison:
               the best hand rule of a sweep run at the shift itself (re-tuned there, on the test problems).
  non-greedy   the paper's App. B.9 in the tiny world: dLLM temperature 0.8, the suite's alpha = 1 policies against
               Fast-dLLM's threshold at the paper's lambda 0.6 and against the best hand rule at matched NFE (the one
               the T = 0.8 sweep finds), K = 32 samples per problem: pass@1 to pass@32 and the majority vote.
"""
import functools
import os

from eval import SLACK, Setting, sweep_specs
from common.checkpoints import read_checkpoint
from policy import RULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIFTS = dict(
    shipped={"semi-AR": "weights/policy_semi.pt", "full": "weights/policy_full.pt"},   # blocks of 8, full diffusion
    temps=(0.3, 0.8), temp_n=200,    # no forward memo at T > 0: fewer problems, at a cost of about +-2 points
    # the re-tuning sweep at each shift: the rules that reach the policies' NFE (about 7); PC-Sampler at one lambda
    sweep=("threshold", "band", "factor", "eb", "pc", "topk"), grids={"pc.lam": [1.0], "band.lo": [0.01, 0.05, 0.08, 0.12]},
    nongreedy_T=0.8, nongreedy_n=64, nongreedy_samples=32, nongreedy_lam=0.6)


@functools.lru_cache(maxsize=None)
def shipped_spec(mode):
    """The shipped policy of a mode at the tau stored in it ('weights/policy_semi.pt:tau=0.5')."""
    path = SHIFTS["shipped"][mode]
    return f"{path}:tau={float(read_checkpoint(os.path.join(ROOT, path))['args']['eval_tau'])}"


def modes(cfg):
    return (("semi-AR", cfg["semi_bl"]), ("full", cfg["L"]))


def validation_settings(cfg, families):
    """The tuning ground: both modes at temperature 0 on the validation split, every hand rule and the shipped policy."""
    return [Setting(cfg["model"], cfg["task"], cfg["L"], BL, sweep_specs(families, cfg["L"], BL, cfg.get("grids"))
                    + [shipped_spec(mode)], f"validation, {mode}", split="validation") for mode, BL in modes(cfg)]


def tune(rows, learned_spec):
    """The hand rules tuned on the validation rows of one mode: per rule family, its most accurate spec among those at
    matched NFE (at most SLACK times the learned policy's NFE); ties go to the faster. -> {family: spec}."""
    learned = next((r for r in rows if r["policy"] == learned_spec), None)
    if learned is None:   # not evaluated (a run cut short): nothing to tune against
        return {}
    out = {}
    for r in sorted((r for r in rows if "trained" not in r and r["mean_nfe"] <= SLACK * learned["mean_nfe"]),
                    key=lambda r: (-r["accuracy"], r["mean_nfe"])):
        out.setdefault(r["policy"].split(":")[0], r["policy"])
    return out


def at_length(spec, L0, L1):
    """A hand rule tuned at L0 as it runs at L1: a fixed-step rule keeps its steps per token (steps x L1 / L0)."""
    name, _, rest = spec.partition(":")
    if not any(a.name == "steps" for a in RULES[name].args):
        return spec
    parts = [f"steps={int(p.split('=')[1]) * L1 // L0}" if p.startswith("steps=") else p for p in rest.split(":")]
    return ":".join([name, *parts])


def shift_conditions(cfg):
    """(name, model, task, L, temperature, n) of each shift."""
    out = [(f"T = {T:g}", cfg["model"], cfg["task"], cfg["L"], T, SHIFTS["temp_n"]) for T in SHIFTS["temps"]]
    return out + [("the other dLLM (tiny-b)", cfg["other_model"], cfg["task"], cfg["L"], 0.0, cfg["n"]),
                  ("L = 64", cfg["model"], cfg["task"], 2 * cfg["L"], 0.0, cfg["n"]),
                  ("the sub task", cfg["model"], cfg["ood_task"], cfg["L"], 0.0, cfg["n"])]


def shift_settings(cfg, tuned):
    """Each shift in both modes: the re-tuning sweep, the specs tuned at T = 0 (tuned[mode]: {family: spec}) and the
    shipped policy. A mode's block length scales with L (full diffusion stays full)."""
    out = []
    for name, model, task, L, T, n in shift_conditions(cfg):
        for mode, BL0 in modes(cfg):
            BL = L if BL0 == cfg["L"] else BL0
            specs = sweep_specs(SHIFTS["sweep"], L, BL, {**(cfg.get("grids") or {}), **SHIFTS["grids"]})
            specs += [at_length(s, cfg["L"], L) for s in tuned.get(mode, {}).values()] + [shipped_spec(mode)]
            out.append(Setting(model, task, L, BL, specs, f"shift: {name}, {mode}", temperature=T, n=n))
    return out


def nongreedy_settings(cfg, learned, extra=None):
    """The non-greedy study in both modes: learned[mode] (the alpha = 1 policy's spec), threshold at the paper's lambda
    and extra[mode] (the best hand rule at matched NFE, once known)."""
    return [Setting(cfg["model"], cfg["task"], cfg["L"], BL, [learned[mode], f"threshold:{SHIFTS['nongreedy_lam']}"]
                    + ([extra[mode]] if extra and extra.get(mode) else []), f"non-greedy, {mode}",
                    temperature=SHIFTS["nongreedy_T"], n=SHIFTS["nongreedy_n"], samples=SHIFTS["nongreedy_samples"])
            for mode, BL in modes(cfg)]


def best_hand_rule(rows, nfe, exclude=()):
    """The hand-rule row with the best accuracy at matched NFE (None if every one is slower)."""
    fast = [r for r in rows if "trained" not in r and r["mean_nfe"] <= SLACK * nfe and r["policy"] not in exclude]
    return max(fast, key=lambda r: (r["accuracy"], -r["mean_nfe"]), default=None)


# ----------------------------------------------------------------------------------------------------
# verdicts

def show(r):
    return f"{r['policy'].split('/')[-1]} {r['accuracy']:.1f}% @ {r['mean_nfe']:.2f}" if r else "none that fast"


def shift_verdicts(by, cfg, tuned, verdict):
    """One verdict per shift: the shipped policy ahead of every hand rule tuned at T = 0 that is at matched NFE under
    the shift, in both modes; the re-tuned best shown beside. verdict(held, claim, evidence) writes the line."""
    out = []
    for name, _, _, _, _, _ in shift_conditions(cfg):
        held, ev = [], []
        for mode, _ in modes(cfg):
            rows = by.get(f"shift: {name}, {mode}", [])
            learned = next((r for r in rows if r["policy"] == shipped_spec(mode)), None)
            if learned is None:
                continue
            L = rows[0]["gen_length"]
            mine = {at_length(s, cfg["L"], L) for s in tuned.get(mode, {}).values()}
            t = best_hand_rule([r for r in rows if r["policy"] in mine], learned["mean_nfe"])
            retuned = best_hand_rule(rows, learned["mean_nfe"])
            held.append(t is None or learned["accuracy"] > t["accuracy"])
            gap = lambda r: "" if r is None else " ({:+.1f})".format(learned["accuracy"] - r["accuracy"])
            ev.append(f"{mode}: learned {show(learned)} NFE; best hand rule tuned at T = 0, at matched NFE: {show(t)}"
                      f"{gap(t)}; re-tuned at the shift: {show(retuned)}{gap(retuned)}")
        if held:
            out.append(verdict(all(held) if all(held) or not any(held) else None,
                               f"Learned ahead of the best hand rule at matched NFE under {name} (the shipped policies; "
                               f"hand rules tuned at T = 0 on a validation split)", "; ".join(ev) + "."))
    return out


def nongreedy_verdict(by, cfg, verdict):
    """The paper's App. B.9: the alpha = 1 policy's pass@1 and pass@32 against threshold at lambda 0.6 (the paper:
    +0.98 and +2.56 points) and against the best hand rule at matched NFE, in both modes."""
    lam, held, ev = SHIFTS["nongreedy_lam"], [], []
    for mode, _ in modes(cfg):
        rows = by.get(f"non-greedy, {mode}", [])
        learned = next((r for r in rows if "trained" in r), None)
        if learned is None:
            continue
        K = str(SHIFTS["nongreedy_samples"])
        for r in [r for r in rows if "trained" not in r]:
            d1, dk = learned["pass_at"]["1"] - r["pass_at"]["1"], learned["pass_at"][K] - r["pass_at"][K]
            held.append(d1 > 0 and dk > 0)
            ev.append(f"{mode}: {r['policy']} ({r['mean_nfe']:.2f} NFE) pass@1 {r['pass_at']['1']:.1f}, pass@{K} "
                      f"{r['pass_at'][K]:.1f}, majority {r.get('majority', 0):.1f}: learned {d1:+.1f} / {dk:+.1f}")
        ks = ", ".join(f"@{k} {v:.1f}" for k, v in learned["pass_at"].items())
        ev.append(f"{mode}: learned ({learned['mean_nfe']:.2f} NFE) pass{ks}, majority {learned.get('majority', 0):.1f}")
    if not held:
        return []
    return [verdict(all(held) if all(held) or not any(held) else None,
                    f"Under sampling (T = {SHIFTS['nongreedy_T']:g}, the paper's App. B.9) the alpha = 1 policy is ahead "
                    f"at pass@1 and pass@{SHIFTS['nongreedy_samples']} of threshold lambda {lam:g} and of the best hand "
                    f"rule at matched NFE (the paper: +0.98 and +2.56 points over threshold 0.6)",
                    "; ".join(ev) + ".")]
