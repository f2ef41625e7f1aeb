"""
A learned policy over its training seeds against the hand rules: each checkpoint's accuracy and mean NFE on the
held-out problems (at the tau stored in it), their mean and spread, and the best hand rule at matched NFE (within
eval.SLACK = 1.1x the mean NFE) from the paper's heuristics, PC-Sampler and the band rule's grid. The rows are kept
in a resumable eval.py rows file, so a rerun only evaluates what is new.

    python -m support.seeds --block-length 32 --policies weights/policy_full.pt,out/full_s1.pt,out/full_s2.pt
    python -m support.seeds --block-length 8 --policies weights/policy_semi.pt,out/semi_s1.pt,out/semi_s2.pt
"""
import statistics
from dataclasses import dataclass

from common.cli import check_counts, interrupted, option, parse_config
from eval import SLACK, Setting, run, sweep_specs
from policy import checkpoint_of, read_checkpoint

HAND = ("topk", "threshold", "factor", "eb", "pc", "band")   # the paper's fixed-step and adaptive rules, PC-Sampler, band
L = 32                                                       # the tiny chain task's generation length


@dataclass
class SeedsConfig:
    policies: str = option(None, "comma-separated checkpoints, one per training seed")
    block_length: int = option(32, "BL (L is 32, the tiny chain task)")
    num_problems: int = option(500, "held-out problems (--n for short)")
    out: str = option("out/seeds.json", "rows file (resumed)")


def main(argv=None):
    try:
        cfg, _ = parse_config(SeedsConfig, argv, "a learned policy over training seeds against the hand rules",
                              "python -m support.seeds")
        check_counts(num_problems=(cfg.num_problems, 1), block_length=(cfg.block_length, 1))
        if L % cfg.block_length:
            raise ValueError(f"--block-length {cfg.block_length} must divide the chain task's L = {L}")
        paths = [s.strip() for s in (cfg.policies or "").split(",") if s.strip()]
        if not paths or any(checkpoint_of(p) != p for p in paths):
            raise ValueError("--policies: pass comma-separated checkpoints (*.pt), one per training seed")
        specs = [f"{path}:tau={float(read_checkpoint(path)['args']['eval_tau'])}" for path in paths]   # each at its own tau
        hand = sweep_specs(HAND, L, cfg.block_length)
        rows = run(cfg.out, [Setting("tiny", "chain", L, cfg.block_length, specs + hand)], n=cfg.num_problems,
                   progress=False)
    except KeyboardInterrupt:
        raise interrupted("interrupted: the rows file keeps every finished row") from None
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")
    learned = [r for r in rows if r["policy"] in specs]
    heur = [r for r in rows if r["policy"] in hand]
    band = [r for r in heur if r["policy"].startswith("band:")]
    for r in learned:
        print(f"{r['policy']:48s} {r['accuracy']:5.1f}% @ {r['mean_nfe']:.2f} NFE")
    acc, nfe = [r["accuracy"] for r in learned], [r["mean_nfe"] for r in learned]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"mean over {len(learned)} seeds: {statistics.mean(acc):.1f} +- {sd(acc):.1f}% @ "
          f"{statistics.mean(nfe):.2f} +- {sd(nfe):.2f} NFE (sd over seeds)")
    m = statistics.mean(nfe)
    for name, pool in (("best hand rule", heur), ("best band rule", band)):
        best = max((r for r in pool if r["mean_nfe"] <= SLACK * m), key=lambda r: r["accuracy"], default=None)
        print(f"{name} at matched NFE (<= {SLACK * m:.2f}): " +
              (f"{best['accuracy']:.1f}% @ {best['mean_nfe']:.2f} ({best['policy']})" if best else "none that fast"))


if __name__ == "__main__":
    main()
