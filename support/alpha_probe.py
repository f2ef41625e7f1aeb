"""
Does an alpha-conditioned policy read alpha? For a checkpoint trained with --alpha-range, on the decoding states
its own rollouts at the middle of its range visit:
  d logit / d log(1 + alpha)   the mean size, over candidate positions, of the logits' derivative with respect to
                               log(1 + alpha) (a central difference of +-0.05), at each alpha of the grid
  |logit(hi) - logit(lo)|      how far the whole range moves a candidate's logit, beside the logits' spread (std)
and then its accuracy and mean NFE at each alpha of the grid (held-out problems, T = 0, its stored tau).

    python -m support.alpha_probe out/cond.pt --n 200
"""
import os
import signal
import sys

# a Ctrl-C while the imports below load (a second or so): one line, not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("interrupted while starting: nothing was done\n"),
                                             # an exit, not an exception an import could swallow
                                             os._exit(130)))

import math
from dataclasses import dataclass

import torch

from common.cli import check_counts, interrupted, option, parse_config
from decode import evaluate, load_policy
from env import generate, row_keys
from grpo import collate
from model import load_dllm
from policy import READS, Knobs, Learned
from tasks import get_problems, prompts_of


def probe(pol, dllm, problems, L, BL, alphas, tau=1.0):
    """-> (rows [(alpha, mean |d logit / d log(1 + alpha)|)], mean |logit(hi) - logit(lo)|, logit std)."""
    lo, hi = pol.c.alpha_lo, pol.c.alpha_hi
    ids, am = prompts_of(dllm, problems)
    middle = Learned(pol, Knobs(tau=tau, alpha=math.sqrt((lo + 1) * (hi + 1)) - 1))   # the middle of the range, in log(1 + alpha)
    keys = row_keys(0, torch.arange(len(ids)))
    r = generate(dllm, middle, ids, am, L, BL, record=READS, keys=keys)
    b = collate(r.steps, expert=True)
    conf, masked, t, cand = b["conf"], b["masked"], b["t"], b["cand"]
    at = lambda a: torch.full(t.shape, float(a))
    rows = []
    with torch.no_grad():
        for a in alphas:   # s = log(1 + alpha); the difference stays inside the range
            s0, s1 = max(math.log1p(a) - 0.05, math.log1p(lo)), min(math.log1p(a) + 0.05, math.log1p(hi))
            d = (pol(conf, masked, t, at(math.expm1(s1))) - pol(conf, masked, t, at(math.expm1(s0)))) / (s1 - s0)
            rows.append((a, d[cand].abs().mean().item()))
        l_lo, l_hi = pol(conf, masked, t, at(lo)), pol(conf, masked, t, at(hi))
    return rows, (l_hi - l_lo)[cand].abs().mean().item(), l_lo[cand].std().item()


@dataclass
class ProbeConfig:
    policy: str = option(None, "a checkpoint trained with train.py --alpha-range", positional=True)
    num_problems: int = option(200, "held-out problems per alpha (--n for short)")
    alphas: str = option("0,0.3,1,3,10", "comma-separated alphas in the policy's range")


def main(argv=None):
    signal.signal(signal.SIGINT, signal.default_int_handler)   # from here Ctrl-C is handled below
    try:
        args, _ = parse_config(ProbeConfig, argv, "does an alpha-conditioned policy read alpha?",
                               "python -m support.alpha_probe")
        check_counts(num_problems=(args.num_problems, 1))
        pol, ck = load_policy(args.policy)
        if not pol.conditioned:
            raise ValueError(f"{args.policy} is not alpha-conditioned (train.py --alpha-range)")
        try:
            alphas = [float(a) for a in args.alphas.split(",")]
        except ValueError:
            raise ValueError(f"--alphas {args.alphas!r}: write comma-separated numbers, e.g. 0,1,10") from None
        if not all(pol.c.alpha_lo <= a <= pol.c.alpha_hi for a in alphas):
            raise ValueError(f"--alphas {args.alphas}: outside the policy's range [{pol.c.alpha_lo:g}, {pol.c.alpha_hi:g}]")
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
    a = ck["args"]
    dllm = load_dllm(a["model"])
    L, BL = a["gen_length"], a["block_length"]
    problems = get_problems(a["task"], args.num_problems, 0, "test")
    rows, moved, spread = probe(pol, dllm, problems[:64], L, BL, alphas, a["eval_tau"])
    print(f"{args.policy} (BL {BL}, step {ck['step']}): alpha {pol.c.alpha_lo:g} -> {pol.c.alpha_hi:g} moves a "
          f"candidate's logit by {moved:.3f} on average; the logits' spread (std) is {spread:.3f}")
    for (alpha, d) in rows:
        row, _ = evaluate(dllm, Learned(pol, Knobs(tau=a["eval_tau"], alpha=alpha)), problems, a["task"], L, BL,
                          progress=False)
        print(f"  alpha {alpha:5g}: |d logit / d log(1+alpha)| {d:.4f}   {row['accuracy']:5.1f}% @ {row['mean_nfe']:.2f} NFE")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise interrupted("interrupted: nothing was written") from None
