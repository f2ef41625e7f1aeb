"""
What the entry points share to name, run and grade a policy: a spec string -> a policy
(parse_policy: a hand rule of policy.RULES, or a train.py checkpoint with its knobs); a set of
problems decoded with it and graded (the Completion of every (problem, sample)); and the row that
sums them up (accuracy by both graders, mean NFE, speed, pass@k and majority vote with several
samples). sample.py, eval.py and train.py's held-out evaluations all go through here.
"""
import json
import math
import time
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm import tqdm

from actions import ACTIONS
from common.checkpoints import check_finite_state, read_checkpoint
from common.specs import Arg, parse_args
from env import generate, row_keys
from policy import RULES, Knobs, Learned, LearnedPolicy, PolicyConfig
from tasks import answer_is_right, final_answer, grade_both, prompts_of



# --------------------------------------------------------------------------------------------------
# policies by name: a hand rule's spec, or a train.py checkpoint (read and upgraded by
# common/checkpoints.py)

def load_weights(pol, state, new=("alpha_mlp.", "alpha_out.")):
    """Load a state dict whose only missing weights are those of `new` modules (a conditioned policy
    from before the output scale and shift, or a per-alpha policy that starts a conditioned one:
    train.py --init). Those stay at their initialisation, which leaves the policy's function
    unchanged (their output layers are zero)."""
    missing, unexpected = pol.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(new)] + list(unexpected)
    if bad:
        raise RuntimeError(
            f"weights that do not fit: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")


def load_policy(path, device="cpu"):
    """A learned policy network from a train.py checkpoint -> (network in eval mode, checkpoint
    dict)."""
    ck = read_checkpoint(path)
    if ck["policy_config"]["actions"] not in ACTIONS:
        raise ValueError(
            f"{path}: unknown action type {ck['policy_config']['actions']!r} (this code knows "
            f"{ACTIONS})")
    try:
        pol = LearnedPolicy(PolicyConfig(**ck["policy_config"]))
        load_weights(pol, ck["policy"])
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: its policy weights do not match its policy config "
                         f"({str(e).splitlines()[0][:200]})") from None
    check_finite_state(pol.state_dict(), f"{path}: its policy weights")
    return pol.to(device).eval(), ck


CHECKPOINT_OPTIONS = (Arg("tau", "T", lo=0, open_lo=True), Arg("beta", "B", lo=0, open_lo=True),
                      Arg("alpha", "A", lo=0))


def checkpoint_policy(spec, device="cpu"):
    """'ckpt.pt[:tau=T][:beta=B][:alpha=A]' -> Learned. tau defaults to the one stored in the
    checkpoint (train.py --eval-tau); alpha is required for an alpha-conditioned policy and refused
    otherwise. The spec, the rows' name for the policy, is the path followed by the options as
    given."""
    path, _, text = spec.strip().partition(":")
    opts = parse_args(spec, CHECKPOINT_OPTIONS, text, optional=True)
    net, ck = load_policy(path, device)
    if net.conditioned and "alpha" not in opts:
        raise ValueError(
            f"{spec!r}: {path} is alpha-conditioned (trained on [{net.c.alpha_lo:g}, "
            f"{net.c.alpha_hi:g}]): pick the point on its front with ':alpha=A'")
    if "alpha" in opts:
        a = opts["alpha"][1]
        if not net.conditioned:
            raise ValueError(
                f"{spec!r}: {path} is not alpha-conditioned (it was trained for one alpha); drop "
                "':alpha='")
        if not net.c.alpha_lo <= a <= net.c.alpha_hi:
            raise ValueError(
                f"{spec!r}: alpha {a:g} is outside the range the policy was trained on "
                f"[{net.c.alpha_lo:g}, {net.c.alpha_hi:g}]")
    knobs = Knobs(tau=opts["tau"][1] if "tau" in opts else float(ck["args"]["eval_tau"]),
                  beta=opts["beta"][1] if "beta" in opts else 1.0,
                  alpha=opts["alpha"][1] if "alpha" in opts else None)
    return Learned(net, knobs, path + "".join(f":{k}={v}" for k, (v, _) in opts.items()),
                   (ck["args"]["gen_length"], trained_block_lengths(ck["args"])))


def trained_block_lengths(args):
    """The block lengths a checkpoint's policy was trained at (train.py --block-lengths, else
    --block-length)."""
    return tuple(int(b) for b in str(args.get("block_lengths") or args["block_length"]).split(","))


def checkpoint_of(spec):
    """The checkpoint file of a learned spec ('dir/ckpt.pt:tau=1.0' -> 'dir/ckpt.pt'), None for a
    hand rule."""
    head = spec.strip().split(":")[0]
    return head if head.endswith(".pt") else None


def parse_policy(spec, device="cpu"):
    """One spec string -> a policy object (a Heuristic, or Learned for a checkpoint)."""
    if checkpoint_of(spec):
        return checkpoint_policy(spec, device)
    name, _, text = spec.strip().partition(":")
    if name not in RULES:
        raise ValueError(
            f"unknown policy {spec!r}: use one of {sorted(RULES)} (e.g. topk:steps=32) or a *.pt "
            "checkpoint")
    rule = RULES[name]
    values = parse_args(spec, rule.args, text)
    return rule(*(values[a.name][1] for a in rule.args))


def parse_policies(specs, device="cpu"):
    """A comma-separated list of specs -> list of policies (the CLIs' --policies); an empty list is
    an error."""
    pols = [parse_policy(s, device) for s in specs.split(",") if s.strip()]
    if not pols:
        raise ValueError(
            f"no policy in {specs!r}: pass comma-separated specs, e.g. "
            "'topk:steps=32,threshold:0.9'")
    return pols


# --------------------------------------------------------------------------------------------------
# decoding and grading

@dataclass
class Completion:
    """One decoded (problem, sample)."""
    problem: int        # index into the problem list
    sample: int         # 0 .. K - 1
    correct: bool       # by the paper's grader
    nfe: int
    revealed: int       # positions unmasked
    answer: object      # the final answer (tasks.final_answer), for the majority vote
    text: str = ""      # the completion, special tokens removed, cut at the end of text
    tokens: int = 0     # generated tokens up to the end of text
    graded: dict = None # both graders' answers and verdicts (tasks.grade_both)
    key: int = 0        # the row key that seeded its policy and its noise


def completion_keys(seed, problems, samples):
    """Row keys (B,) of (problem, sample) pairs: sample 0 of problem i has the key a one-sample run
    gives it."""
    return torch.cat([row_keys((seed + s * 0x632BE5AB) % 2 ** 63, torch.tensor([i]))
                      for i, s in zip(problems, samples)])


def decode(dllm, policy, problems, task, L, BL, batch_size=128, temperature=0.0, seed=0, samples=1,
           cache="none", memo=None, shard=(0, 1), progress=True, keep=0):
    """Decode every (problem, sample) pair of this shard -> ([Completion], the first `keep`
    (problem, tokens, order, text, correct) for display). The pairs are taken problem by problem in
    batches of batch_size; batch j belongs to rank j % world (shard = (rank, world)), so the
    batches, and the numbers, are those of one process."""
    pairs = [(i, s) for i in range(len(problems)) for s in range(samples)]
    batches = [pairs[j:j + batch_size] for j in range(0, len(pairs), batch_size)]
    batches = batches[shard[0]::shard[1]]
    out, shown = [], []
    for batch in tqdm(batches, desc=policy.spec, leave=False, disable=None if progress else True):
        idx, smp = [i for i, _ in batch], [s for _, s in batch]
        chunk = [problems[i] for i in idx]
        ids, am = prompts_of(dllm, chunk)
        r = generate(dllm, policy, ids, am, L, BL, temperature,
                     keys=completion_keys(seed, idx, smp), cache=cache, memo=memo)
        texts = [dllm.decode(row.tolist()) for row in r.tokens.cpu()]
        revealed = (r.order > 0).sum(1).tolist()
        stop = torch.isin(r.tokens, torch.tensor(sorted(dllm.stop_ids), device=r.tokens.device))
        # tokens before the end of text
        length = torch.where(stop.any(1), stop.int().argmax(1), L).tolist()
        keys = completion_keys(seed, idx, smp).tolist()
        for j, (g, text) in enumerate(zip(grade_both(task, chunk, texts), texts)):
            ok = g["correct"]
            out.append(Completion(idx[j], smp[j], ok, int(r.nfe[j]), revealed[j],
                                  final_answer(task, text), text, length[j], g, keys[j]))
            if len(shown) < keep:
                shown.append((chunk[j], r.tokens[j].cpu(), r.order[j].cpu(), text, ok))
    return out, shown


def records_of(completions, problems, setting):
    """One JSON-able record per completion: the problem (index, id), the setting (a dict: policy,
    model, task, L, BL, T, cache, seed; its text is the record's 'setting'), the sample index and
    noise key, the text, both graders' answers and verdicts, NFE and generated tokens."""
    name = json.dumps(setting, sort_keys=True)
    out = []
    for c in sorted(completions, key=lambda c: (c.problem, c.sample)):
        graded = c.graded or dict(answer=None, correct=c.correct, answer_verify=None,
                                  correct_verify=c.correct)
        out.append(dict(setting=name, problem=c.problem,
                        id=getattr(problems[c.problem], "id", None) or str(c.problem),
                        sample=c.sample, key=c.key, text=c.text, nfe=c.nfe, tokens=c.tokens,
                        **graded))
    return out


def pass_at(n, c, k):
    """The unbiased pass@k estimator for c right of n samples: 1 - C(n - c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def k_values(samples):
    """The k of pass@k a row reports: powers of two below K, and K."""
    return sorted({2 ** i for i in range(samples.bit_length()) if 2 ** i < samples} | {samples})


def majority(comps, task, problem):
    """The majority vote over one problem's completions: the final answer given most often (ties:
    the one given first), right when it is the gold answer. No answer read from any completion:
    wrong."""
    votes = Counter(c.answer for c in comps if c.answer is not None)
    if not votes:
        return False
    first = {}   # each answer's first sample
    for c in sorted(comps, key=lambda c: c.sample):
        if c.answer is not None:
            first.setdefault(c.answer, c.sample)
    best = max(votes, key=lambda a: (votes[a], -first[a]))
    return answer_is_right(task, problem, best)


def verdict(c):
    """math-verify's verdict on a completion (the one grader's, for tasks that have one)."""
    return c.graded["correct_verify"] if c.graded else c.correct


def row_of(spec, completions, problems, task, samples, seconds):
    """The row of one policy: accuracy by the paper's grader (the mean over every completion:
    pass@1) and by math-verify (accuracy_verify) with the completions they disagree on, mean NFE per
    completion, tokens revealed per NFE, generated tokens (to the end of text) per completion, per
    second of wall time and NFE per generated token, seconds, n; with samples > 1 also pass@k for
    k_values(K) and the majority vote's accuracy (%)."""
    n, total = len(problems), len(completions)
    nfe, gen = sum(c.nfe for c in completions), sum(c.tokens for c in completions)
    row = dict(policy=spec, accuracy=100.0 * sum(c.correct for c in completions) / total,
               accuracy_verify=100.0 * sum(verdict(c) for c in completions) / total,
               graders_disagree=sum(c.correct != verdict(c) for c in completions),
               mean_nfe=nfe / total,
               tokens_per_nfe=sum(c.revealed for c in completions) / max(nfe, 1),
               gen_tokens=gen / total, tokens_per_second=gen / max(seconds, 1e-9),
               nfe_per_token=nfe / max(gen, 1), seconds=seconds, n=n, samples=samples)
    if samples > 1:
        by = {}
        for c in completions:
            by.setdefault(c.problem, []).append(c)
        right = {i: sum(c.correct for c in cs) for i, cs in by.items()}
        row["pass_at"] = {str(k): 100.0 * sum(pass_at(samples, right[i], k) for i in by) / n
                          for k in k_values(samples)}
        if task in ("chain", "sub", "gsm8k", "math500"):
            row["majority"] = 100.0 * sum(majority(by[i], task, problems[i]) for i in by) / n
    return row


def evaluate(dllm, policy, problems, task, gen_length, block_length, batch_size=128,
             temperature=0.0, seed=0, progress=True, keep=0, cache="none", memo=None, samples=1):
    """Run one policy over problems in this process -> (row, shown) (see decode and row_of). memo:
    an steps.ForwardMemo kept across calls on the same problems, dLLM and L (exact at T = 0 without
    a cache)."""
    t0 = time.time()
    comps, shown = decode(dllm, policy, problems, task, gen_length, block_length, batch_size,
                          temperature, seed, samples, cache, memo, progress=progress, keep=keep)
    return row_of(policy.spec, comps, problems, task, samples, time.time() - t0), shown
