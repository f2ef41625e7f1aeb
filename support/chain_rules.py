"""
Hand rules that know the chain task, the bar a learned policy is judged against, and the measurement that says
what a policy which sees only confidences can and cannot learn from them.

  band         policy.Band: reveal every candidate with conf >= hi or conf <= lo, and the row's most confident one
  band+answer  the band rule plus one fact of the task: when the last value of the chain is revealed (now or
               before), reveal the answer slot after '#' too if the dLLM proposes the same digit there. It reads
               the dLLM's proposed tokens (obs.x0), which the learned policy never sees.
  answer slot  at the step where the band rule reveals the last value: how often is the answer slot still masked,
               how often is its proposal right, and how well does its confidence tell right from wrong?

    python -m support.chain_rules            # the rules in full diffusion and in blocks of 8, then the answer slot
"""
import os
import signal
import sys

# a Ctrl-C while the imports below load (a second or so): one line, not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("interrupted while starting: nothing was done\n"),
                                             # an exit, not an exception an import could swallow
                                             os._exit(130)))

from dataclasses import dataclass

import torch

from common.cli import check_args, check_counts, interrupted, option, parse_config
from decode import evaluate, parse_policy
from env import generate
from model import load_dllm
from policy import Band, Heuristic
from tasks import get_problems, prompts_of


class BandAnswer(Heuristic):
    """band:hi:lo plus the answer-slot fact (see the module docstring); tok: the tiny dLLM's character tokenizer."""

    def __init__(self, hi, lo, tok):
        self.band, self.tok = Band(hi, lo), tok
        self.spec = f"band+answer:hi={hi}:lo={lo}"
        self.hash, self.digits = tok.stoi["#"], torch.tensor([tok.stoi[c] for c in "0123456789"])

    def select(self, obs):
        u = self.band.select(obs)                                               # (b, L)
        b, L = obs.x0.shape
        rows = torch.arange(b, device=u.device)
        is_hash = obs.x0 == self.hash
        h = is_hash.float().argmax(1)                                          # the first '#' proposed, per row
        value, answer = h - 2, h + 1                                           # "...op d VALUE filler # ANSWER"
        v, a = value.clamp(0, L - 1), answer.clamp(0, L - 1)
        ok = is_hash.any(1) & (value >= 0) & (answer < L) & obs.cand[rows, a]
        value_there = u[rows, v] | ~obs.masked[rows, v]
        same = (obs.x0[rows, a] == obs.x0[rows, v]) & torch.isin(obs.x0[rows, a], self.digits.to(u.device))
        take = ok & value_there & same
        u[rows[take], a[take]] = True
        return u


def answer_slot(dllm, problems, hi=0.9, lo=0.08):
    """At the step where the band rule reveals a problem's last value: (answer slot still masked, its proposal right,
    its confidence) per problem, decoded one problem at a time (so the step is that problem's own)."""
    band, out = Band(hi, lo), []
    for p in problems:
        seen = []

        class Recorder(Heuristic):
            def select(self, obs):
                u = band.select(obs)
                seen.append((obs.x0[0].clone(), obs.conf[0].clone(), obs.masked[0].clone(), u[0].clone()))
                return u
        ids, am = prompts_of(dllm, [p])
        generate(dllm, Recorder(), ids, am, 32, 32)
        h = p.reference.index("#")
        value, answer = h - 2, h + 1
        for x0, conf, masked, u in seen:
            if u[value] and masked[value]:
                still = bool(masked[answer] and not u[answer])
                out.append((still, dllm.decode([x0[answer].item()]) == p.gold, conf[answer].item()))
                break
    return out


@dataclass
class ChainRulesConfig:
    num_problems: int = option(500, "held-out test problems (--n for short)")
    hi: float = option(0.9, "the band rule's upper threshold")
    lo: float = option(0.08, "the band rule's lower threshold")


def main(argv=None):
    signal.signal(signal.SIGINT, signal.default_int_handler)   # from here Ctrl-C is handled below
    try:
        args, _ = parse_config(ChainRulesConfig, argv, "the chain task's hand rules and the answer-slot measurement",
                               "python -m support.chain_rules")
        check_counts(num_problems=(args.num_problems, 1))
        check_args(hi=(args.hi, "in (0, 1]"), lo=(args.lo, "in [0, 1]"))
        parse_policy(f"band:hi={args.hi}:lo={args.lo}")                       # 0 <= lo < hi <= 1
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    dllm = load_dllm("tiny")
    problems = get_problems("chain", args.num_problems, 0, "test")
    for BL in (32, 8):
        for pol in (Band(args.hi, args.lo), BandAnswer(args.hi, args.lo, dllm.tokenizer)):
            row, _ = evaluate(dllm, pol, problems, "chain", 32, BL, progress=False)
            print(f"BL {BL:2d}  {pol.spec:28s} {row['accuracy']:5.1f}% @ {row['mean_nfe']:.2f} NFE")
    rows = answer_slot(dllm, problems, args.hi, args.lo)
    masked = [r for r in rows if r[0]]
    print(f"answer slot at the step that reveals the last value: still masked in {len(masked)} of {len(rows)} problems; "
          f"its proposal is right in {100 * sum(r[1] for r in masked) / max(len(masked), 1):.1f}% of those")
    for a, b in ((0.0, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.9), (0.9, 1.01)):
        sel = [r for r in masked if a <= r[2] < b]
        right = f"{100 * sum(r[1] for r in sel) / len(sel):5.1f}% right" if sel else "   -"
        print(f"  conf in [{a:.1f}, {min(b, 1.0):.1f}): {len(sel):4d} problems, {right}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise interrupted("interrupted: nothing was written") from None
