"""
The GRPO objective (paper section 5): rewards, group advantages, the recorded steps as one batch, and the clipped
loss - with the two variants of the paper's appendices, Plackett-Luce actions (App. E, actions.py) and expert
steering's mixture likelihood (App. F). train.py runs the loop around it; this file is what a reader checks against
the paper's equations, and what the tests compute by hand.
"""
import math
from contextlib import nullcontext

import torch

from actions import action_log_prob, bernoulli_entropy


def mixture(logp, G, E):
    """log pi_ES(a) of the expert's steps (paper App. F): the group's rollouts are G draws of pi and E of the expert,
    so a step's likelihood is the mixture; the expert's own probability of its action is taken as 1."""
    return torch.logaddexp(math.log(G / (G + E)) + logp, torch.full_like(logp, math.log(1 / (G + E))))


def rewards(correct, nfe, L, alpha, kind):
    """Terminal reward (B,) from correctness (B,) bool and NFE (B,) (paper section 3, the reward R); alpha a number
    or one per row (B,)."""
    c, f = correct.float(), nfe.float()
    if kind == "additive":
        return c - alpha * f / L
    return c * ((L - f + 1) / L) ** alpha


def advantages(r, G, std=False):
    """Group-relative advantages (B,) for rewards laid out as [prompt0 x G, prompt1 x G, ...]."""
    g = r.view(-1, G)
    a = g - g.mean(1, keepdim=True)
    if std:
        a = a / (g.std(1, keepdim=True) + 1e-6)
    return a.reshape(-1)


def collate(steps, expert=False):
    """env Rollout.steps -> one flat batch over all (rollout, step) pairs, S of them. expert: the steps of expert
    rollouts, whose candidates are every masked position (their blocks are not the policy's) and whose old
    log-probabilities are computed afterwards (old_expert_log_probs)."""
    cat = lambda k: torch.cat([s[k] for s in steps]) if steps[0][k] is not None else None
    b = dict(conf=cat("conf"), masked=cat("masked"), cand=cat("cand"), t=cat("t"), action=cat("action"),
             logp_old=None if expert else cat("logp"), row=cat("rows"), alpha=cat("alpha"), order=cat("order"))
    if expert:
        b["cand"] = b["masked"]
    b["expert"] = torch.full_like(b["row"], expert, dtype=torch.bool)
    return b


def join(a, b, offset):
    """Two collated batches as one, b's rollouts numbered after a's (offset of them)."""
    return {k: None if a[k] is None else torch.cat([a[k], b[k] + offset if k == "row" else b[k]]) for k in a}


def step_log_prob(net, batch, sl, actions="bernoulli", GE=None):
    """(logits, log pi(a)) of the recorded steps sl under the policy net, in float32; with expert steering (GE =
    (G, E)) the expert's steps get the mixture likelihood."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["conf"].is_cuda):
        logits = net(batch["conf"][sl], batch["masked"][sl], batch["t"][sl],
                     None if batch.get("alpha") is None else batch["alpha"][sl])
    order = batch.get("order")
    logp = action_log_prob(actions, logits.float(), batch["cand"][sl], batch["action"][sl],
                           None if order is None else order[sl])
    if GE is not None:
        logp = torch.where(batch["expert"][sl], mixture(logp, *GE), logp)
    return logits, logp


@torch.no_grad()
def old_expert_log_probs(net, eb, GE, chunk):
    """The expert steps' old log-probabilities: the mixture under the policy that did the rollouts."""
    eb["logp_old"] = torch.cat([step_log_prob(net, eb, slice(i, i + chunk), "bernoulli", GE)[1]
                                for i in range(0, len(eb["row"]), chunk)])


def grpo_loss(net, batch, adv, n_rollouts, clip_eps, chunk=4096, backward=True, actions="bernoulli", GE=None,
              metrics=True, skip_zero=True):
    """Clipped GRPO loss, per rollout the mean over its steps, then the mean over rollouts. Computed in
    chunks of step-rows with gradients accumulated (the loss is linear in per-step terms, so this is
    exact). `net` is the policy module (or its DDP wrapper). GE = (G, E) with expert steering. Returns (loss,
    clip fraction, entropy of the policy's own steps: Bernoulli, per position; DPLS, the estimate -log pi(a)).
    The steps of rollouts whose advantage is 0 add exactly 0 to the loss and to its gradient, so they get no backward
    (in a group that all solved, or all failed, that is every step): with metrics they get a forward without
    gradients for the clip fraction and the entropy, without (metrics=False: those two come back over the other
    steps only) not even that. Under DDP every step keeps its backward: a rank must not skip the all-reduce.
    skip_zero=False back-propagates every step (bench.py --shape update times both)."""
    row = batch["row"]
    count = torch.zeros(n_rollouts, device=row.device).index_add_(0, row, torch.ones_like(row, dtype=torch.float))
    weight = 1.0 / (n_rollouts * count[row])                               # (S,)
    total = clipped = ent = own_n = 0.0
    S = row.shape[0]
    ddp = isinstance(net, torch.nn.parallel.DistributedDataParallel)
    live = (adv[row] != 0) | ddp | (not backward) | (not skip_zero)
    idx_live, idx_zero = live.nonzero().squeeze(1), (~live).nonzero().squeeze(1)
    parts = [(idx_live, True)] + ([(idx_zero, False)] if metrics else [])
    n_seen = 0
    for idx, grad in parts:
        for i in range(0, len(idx), chunk):
            sl = idx[i:i + chunk] if len(idx) < S else slice(i, i + chunk)   # all live: plain slices, as before
            last = i + chunk >= len(idx)  # under DDP only the last chunk's backward all-reduces (ranks differ in S)
            with net.no_sync() if ddp and not last else nullcontext(), nullcontext() if grad else torch.no_grad():
                logits, logp = step_log_prob(net, batch, sl, actions, GE)                      # fp32
                ratio = torch.exp(logp - batch["logp_old"][sl])
                a = adv[row[sl]]
                per_step = -torch.min(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
                loss = (per_step * weight[sl]).sum()
                if backward and grad:
                    loss.backward()
            total += loss.item()
            clipped += ((ratio - 1).abs() > clip_eps).float().sum().item()
            n_seen += len(ratio)
            own = ~batch["expert"][sl] if "expert" in batch else torch.ones_like(row[sl], dtype=torch.bool)
            if actions == "dpls":   # per step
                ent += -logp.detach()[own].sum().item()
                own_n += own.sum().item()
            else:                   # per candidate position, whatever the chunks
                n_cand = batch["cand"][sl][own].sum().item()
                ent += bernoulli_entropy(logits.detach()[own], batch["cand"][sl][own]).item() * n_cand
                own_n += n_cand
    return total, clipped / max(n_seen, 1), ent / max(own_n, 1)
