"""
A learned policy over its training seeds against the hand rules: each checkpoint's accuracy and mean NFE on the
held-out problems (at the tau stored in it), their mean and spread, and the best hand rule at matched NFE (within
verdicts.SLACK = 1.1x the mean NFE) from the paper's heuristics, PC-Sampler and the band rule's grid. The rows are
kept in a resumable eval.py rows file, so a rerun only evaluates what is new.

    python -m support.seeds --block-length 32 --policies weights/policy_full.pt,out/full_s1.pt,out/full_s2.pt
    python -m support.seeds --block-length 8 --policies weights/policy_semi.pt,out/semi_s1.pt,out/semi_s2.pt
"""
import argparse
import statistics

from eval import Setting, run, sweep_specs
from policy import load_policy
from support.cli import check_args
from support.verdicts import SLACK

HAND = ("topk", "threshold", "factor", "eb", "pc", "band")   # the paper's fixed-step and adaptive rules, PC-Sampler, band


def main(argv=None):
    p = argparse.ArgumentParser(description="a learned policy over training seeds against the hand rules")
    p.add_argument("--policies", required=True, help="comma-separated checkpoints, one per training seed")
    p.add_argument("--block-length", type=int, default=32, help="BL (L is 32, the tiny chain task)")
    p.add_argument("--n", type=int, default=500, help="held-out problems")
    p.add_argument("--out", default="out/seeds.json", help="rows file (resumed)")
    args = p.parse_args(argv)
    try:
        check_args(n=(args.n, ">= 1"))
        paths = [s for s in args.policies.split(",") if s.strip()]
        specs = [f"{path}:tau={load_policy(path)[0].tau}" for path in paths]   # each at its own tau
        hand = sweep_specs(HAND, 32, args.block_length)
        rows = run(args.out, [Setting("tiny", "chain", 32, args.block_length, specs + hand)], n=args.n, progress=False)
    except (ValueError, FileNotFoundError) as e:
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
