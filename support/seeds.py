"""
A learned policy over its training seeds against the hand rules: each checkpoint's accuracy and mean NFE on the
held-out problems (at the tau stored in it), their mean and spread, and the best hand rule at matched NFE (within
eval.SLACK = 1.1x the mean NFE) from the paper's heuristics, PC-Sampler and the band rule's grid. The rows are kept
in a resumable eval.py rows file, so a rerun only evaluates what is new.

Over several settings (--block-lengths, --temperatures: one policy for every setting, train.py --block-lengths) each
block length's hand rules are first tuned at temperature 0 on the validation split (per rule family its most
accurate spec at the learned policies' NFE there, as support/shifts.py does), and each (BL, T) gets a verdict:

  T = 0   the learned mean within 1 point of accuracy and 5% of the NFE of the stronger (more accurate) of the
          per-setting policy at home (--home, at its own block length) and the best tuned hand rule at matched NFE;
  T > 0   where the rule tuned at T = 0 (the best tuned one at T = 0, at the learned NFE there) loses 5 points or
          more to its own T = 0 accuracy, the learned mean ahead of it by 5 points or more (elsewhere no claim);
          the best of the tuned rules at matched NFE under the shift is shown beside it.

    python -m support.seeds --block-length 32 --policies weights/policy_full.pt,out/full_s1.pt,out/full_s2.pt
    python -m support.seeds --block-length 8 --policies weights/policy_semi.pt,out/semi_s1.pt,out/semi_s2.pt
    python -m support.seeds --policies weights/policy.pt,out/u1.pt,out/u2.pt --block-lengths 4,8,16,32 \\
        --temperatures 0,0.3,0.8 --home weights/policy_semi.pt,weights/policy_full.pt
"""
import os
import statistics
from dataclasses import dataclass

from common.cli import check_counts, interrupted, option, parse_config
from decode import checkpoint_of, trained_block_lengths
from eval import SLACK, Setting, run, sweep_specs
from common.checkpoints import read_checkpoint

HAND = ("topk", "threshold", "factor", "eb", "pc", "band")   # the paper's fixed-step and adaptive rules, PC-Sampler, band
L = 32                                                       # the tiny chain task's generation length
# the verdicts' bounds (points, NFE ratio, points)
ACC_GAP, NFE_GAP, HOT_GAP = 1.0, 1.05, 5.0


@dataclass
class SeedsConfig:
    policies: str = option(None, "comma-separated checkpoints, one per training seed")
    block_length: int = option(32, "BL (L is 32, the tiny chain task)")
    block_lengths: str = option(None, "B1,B2,...: every one of these block lengths (instead of --block-length)")
    temperatures: str = option("0", "dLLM temperatures, e.g. 0,0.3,0.8 (at T > 0: the hand rules tuned at T = 0)")
    home: str = option(None, "per-setting checkpoints, each evaluated at the block length it was trained at")
    num_problems: int = option(500, "held-out problems (--n for short)")
    hot_problems: int = option(200, "held-out problems of the rows at T > 0 (no forward memo there)")
    out: str = option("out/seeds.json", "rows file (resumed)")


def at_tau(path, root=""):
    """A checkpoint's spec at the tau stored in it (the file read at root/path, the spec naming path)."""
    return f"{path}:tau={float(read_checkpoint(os.path.join(root, path))['args']['eval_tau'])}"


def mean_sd(rows):
    """(mean accuracy, its sd, mean NFE, its sd) over rows (sd 0 for one)."""
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    acc, nfe = [r["accuracy"] for r in rows], [r["mean_nfe"] for r in rows]
    return statistics.mean(acc), sd(acc), statistics.mean(nfe), sd(nfe)


def best_at(rows, nfe, among=None):
    """The most accurate hand-rule row (of the specs `among`, if given) at matched NFE (<= SLACK * nfe), or None."""
    fast = [r for r in rows if "trained" not in r and r["mean_nfe"] <= SLACK * nfe and (among is None or r["policy"] in among)]
    return max(fast, key=lambda r: (r["accuracy"], -r["mean_nfe"]), default=None)


def tune(rows, nfe):
    """Per hand-rule family its most accurate validation row at matched NFE (ties: the faster) -> [spec]."""
    out = {}
    for r in sorted((r for r in rows if "trained" not in r and r["mean_nfe"] <= SLACK * nfe),
                    key=lambda r: (-r["accuracy"], r["mean_nfe"])):
        out.setdefault(r["policy"].split(":")[0], r["policy"])
    return list(out.values())


class Study:
    """The rows and verdicts of learned checkpoints (one per training seed) over block lengths and temperatures."""

    def __init__(self, paths, home=(), block_lengths=(32,), temps=(0.0,), n=500, hot_n=200, grids=None,
                 model="tiny", task="chain", gen_length=L, hand=HAND, root=""):
        self.specs = [at_tau(p, root) for p in paths]
        self.home = {BL: at_tau(p, root) for p in home
                     for BL in trained_block_lengths(read_checkpoint(os.path.join(root, p))["args"])}
        self.bls = tuple(b for b in block_lengths if gen_length % b == 0)
        self.temps, self.n, self.hot_n, self.hand = tuple(temps), n, hot_n, hand
        self.grids, self.model, self.task, self.L = grids, model, task, gen_length

    def home_of(self, BL):
        return [self.home[BL]] if BL in self.home else []

    def greedy(self):
        """The settings at T = 0: per block length the validation split (hand rules and the learned policies) and
        the test problems (the same, and the per-setting policy at home)."""
        out = []
        for BL in self.bls:
            hand = sweep_specs(self.hand, self.L, BL, self.grids)
            out += [Setting(self.model, self.task, self.L, BL, hand + self.specs, f"settings: BL {BL}, validation",
                            temperature=0.0, n=self.n, split="validation"),
                    Setting(self.model, self.task, self.L, BL, hand + self.specs + self.home_of(BL), f"settings: BL {BL}, T 0",
                            temperature=0.0, n=self.n, split="test")]
        return out

    def tuned(self, rows):
        """{BL: the hand-rule specs tuned at T = 0 on the validation split, at the learned policies' mean NFE there}."""
        out = {}
        for BL in self.bls:
            mine = [r for r in rows if r["block_length"] == BL and r.get("split") == "validation"
                    and r["temperature"] == 0 and r["n"] == self.n and r["gen_length"] == self.L
                    and r["model"] == self.model and r["task"] == self.task]
            learned = [r for r in mine if r["policy"] in self.specs]
            out[BL] = tune(mine, mean_sd(learned)[2]) if learned else []
        return out

    def hot(self, tuned):
        """The settings at T > 0: the learned policies, the per-setting one, and the rules tuned at T = 0."""
        return [Setting(self.model, self.task, self.L, BL, self.specs + self.home_of(BL) + tuned[BL],
                        f"settings: BL {BL}, T {T:g}", temperature=T, n=self.hot_n, split="test")
                for BL in self.bls for T in self.temps if T > 0]

    def rows_at(self, rows, BL, T, learned_only=False):
        n = self.n if T == 0 else self.hot_n
        return [r for r in rows if r["block_length"] == BL and r["temperature"] == T and r["n"] == n
                and r.get("split", "test") == "test" and r["gen_length"] == self.L and r["model"] == self.model
                and r["task"] == self.task and (not learned_only or r["policy"] in self.specs)]

    def verdicts(self, rows, tuned):
        """One (BL, T, held: True / False / None for no claim, text) per setting with rows for the learned ones."""
        out = []
        for BL in self.bls:
            greedy = self.rows_at(rows, BL, 0.0)
            for T in self.temps:
                mine = self.rows_at(rows, BL, T)
                learned = [r for r in mine if r["policy"] in self.specs]
                if not learned:
                    continue
                acc, acc_sd, nfe, nfe_sd = mean_sd(learned)
                text = f"learned {acc:.1f} +- {acc_sd:.1f}% @ {nfe:.2f} +- {nfe_sd:.2f}"
                home = next((r for r in mine if r["policy"] in self.home_of(BL)), None)
                rule = best_at(mine, nfe, tuned[BL])
                show = lambda r: "none that fast" if r is None else \
                    f"{r['policy'].split('/')[-1]} {r['accuracy']:.1f}% @ {r['mean_nfe']:.2f}"
                if home is not None:
                    text += f"; per-setting {show(home)}"
                text += f"; best tuned hand rule at matched NFE {show(rule)}"
                if T == 0:
                    ref = max((r for r in (home, rule) if r is not None), key=lambda r: r["accuracy"], default=None)
                    held = ref is None or (acc >= ref["accuracy"] - ACC_GAP and nfe <= NFE_GAP * ref["mean_nfe"])
                    out.append((BL, T, held, text))
                    continue
                # the rule tuned at T = 0: the best tuned one at T = 0, at matched NFE; does it lose 5 points here?
                best0 = best_at(greedy, mean_sd(self.rows_at(rows, BL, 0.0, learned_only=True) or learned)[2],
                                tuned[BL])
                now = best0 and next((r for r in mine if r["policy"] == best0["policy"]), None)
                if now is None:
                    out.append((BL, T, None, text))
                    continue
                loss = best0["accuracy"] - now["accuracy"]
                held = None if loss < HOT_GAP else acc - now["accuracy"] >= HOT_GAP
                text += (f"; the rule tuned at T 0, {show(best0)} there, here {show(now)} "
                         f"({-loss:+.1f}; learned {acc - now['accuracy']:+.1f})")
                out.append((BL, T, held, text))
        return out


def verdict_word(held):
    return {True: "held", False: "did not hold", None: "no claim"}[held]


def single(cfg, paths):
    """The one-setting report: each seed, the mean, the best hand rule and band rule at matched NFE (T = 0)."""
    specs = [at_tau(p) for p in paths]                                   # each at its own tau
    hand = sweep_specs(HAND, L, cfg.block_length)
    rows = run(cfg.out, [Setting("tiny", "chain", L, cfg.block_length, specs + hand)], n=cfg.num_problems,
               progress=False)
    learned = [r for r in rows if r["policy"] in specs]
    heur = [r for r in rows if r["policy"] in hand]
    band = [r for r in heur if r["policy"].startswith("band:")]
    for r in learned:
        print(f"{r['policy']:48s} {r['accuracy']:5.1f}% @ {r['mean_nfe']:.2f} NFE")
    acc, acc_sd, m, nfe_sd = mean_sd(learned)
    print(f"mean over {len(learned)} seeds: {acc:.1f} +- {acc_sd:.1f}% @ {m:.2f} +- {nfe_sd:.2f} NFE (sd over seeds)")
    for name, pool in (("best hand rule", heur), ("best band rule", band)):
        best = best_at(pool, m)
        print(f"{name} at matched NFE (<= {SLACK * m:.2f}): " +
              (f"{best['accuracy']:.1f}% @ {best['mean_nfe']:.2f} ({best['policy']})" if best else "none that fast"))


def several(cfg, paths, bls, temps):
    """The settings report: per (BL, T) the seeds' mean against the per-setting policy and the tuned hand rules."""
    home = [s.strip() for s in (cfg.home or "").split(",") if s.strip()]
    study = Study(paths, home, bls, temps, cfg.num_problems, cfg.hot_problems)
    rows = run(cfg.out, study.greedy(), progress=False)
    tuned = study.tuned(rows)
    rows += run(cfg.out, study.hot(tuned), progress=False) if any(T > 0 for T in temps) else []
    for r in sorted((r for r in rows if r["policy"] in study.specs), key=lambda r: (r["block_length"], r["temperature"])):
        if r.get("split", "test") == "test":
            print(f"BL {r['block_length']:2d} T {r['temperature']:g}  {r['policy']:44s} {r['accuracy']:5.1f}% @ "
                  f"{r['mean_nfe']:.2f} NFE")
    lines = study.verdicts(rows, tuned)
    for BL, T, held, text in lines:
        print(f"BL {BL:2d} T {T:g}: {verdict_word(held):12s} {text}")
    claims = [held for _, _, held, _ in lines if held is not None]
    print(f"{sum(claims)} of {len(claims)} verdicts held over {len(paths)} seeds")


def numbers(text, flag, kind=float):
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: write comma-separated numbers") from None


def main(argv=None):
    try:
        cfg, _ = parse_config(SeedsConfig, argv, "a learned policy over training seeds against the hand rules",
                              "python -m support.seeds")
        check_counts(num_problems=(cfg.num_problems, 1), block_length=(cfg.block_length, 1),
                     hot_problems=(cfg.hot_problems, 1))
        bls = numbers(cfg.block_lengths, "--block-lengths", int) if cfg.block_lengths else (cfg.block_length,)
        temps = numbers(cfg.temperatures, "--temperatures")
        if any(b < 1 or L % b for b in bls):
            raise ValueError(f"--block-length(s) {bls}: each must divide the chain task's L = {L}")
        if any(not 0 <= T <= 10 for T in temps):
            raise ValueError(f"--temperatures {cfg.temperatures}: each in [0, 10]")
        paths = [s.strip() for s in (cfg.policies or "").split(",") if s.strip()]
        if not paths or any(checkpoint_of(p) != p for p in paths):
            raise ValueError("--policies: pass comma-separated checkpoints (*.pt), one per training seed")
        if len(bls) == 1 and temps == (0.0,) and not cfg.home:
            single(cfg, paths)
        else:
            several(cfg, paths, bls, temps)
    except KeyboardInterrupt:
        raise interrupted("interrupted: the rows file keeps every finished row") from None
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
