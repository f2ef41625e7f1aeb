"""
The GRPO objective (paper section 5): rewards, group advantages, the recorded steps as one batch,
and the clipped objective - with the two variants of the paper's appendices, Plackett-Luce actions
(App. E, actions.py) and expert steering's mixture likelihood (App. F). train.py runs the loop
around it; this file is what a reader checks against the paper's equations, and what the tests
compute by hand.

    grpo_objective   the paper's clipped objective, as written in section 5
    grpo_loss        the same objective over a large batch: in chunks, gradients accumulated, no
                     backward for the steps of rollouts whose advantage is 0 (they add exactly 0)
"""
import math
from contextlib import nullcontext

import torch

from actions import action_log_prob, bernoulli_entropy
from policy import ROLLOUT


# Terminal rewards (train.py --reward) from correctness c and NFE f (B,) float: the paper's
# (section 3) and an additive ablation. A new variant is one more entry.
REWARDS = {"mult": lambda c, f, L, alpha: c * ((L - f + 1) / L) ** alpha,
           "additive": lambda c, f, L, alpha: c - alpha * f / L}


def rewards(correct, nfe, L, alpha, kind="mult"):
    """Terminal reward (B,) from correctness (B,) bool and NFE (B,) by REWARDS[kind]; alpha a number
    or one per row (B,)."""
    return REWARDS[kind](correct.float(), nfe.float(), L, alpha)


def advantages(r, G, std=False):
    """Group-relative advantages (B,) for rewards laid out as [prompt0 x G, prompt1 x G, ...]: R
    minus the mean of its group (the paper does not divide by the group's std; std=True does)."""
    g = r.view(-1, G)
    a = g - g.mean(1, keepdim=True)
    if std:
        a = a / (g.std(1, keepdim=True) + 1e-6)
    return a.reshape(-1)


def grpo_objective(logp, logp_old, adv, steps_in_rollout, n_rollouts, eps):
    """The clipped objective of section 5 as a loss to minimise, over S recorded steps: logp,
    logp_old (S,) the log-probability of each step's action under the policy now and when it was
    rolled out, adv (S,) the advantage of the step's rollout, steps_in_rollout (S,) how many steps
    that rollout recorded. Per rollout the mean over its steps of
    -min(rho A, clip(rho, 1 - eps, 1 + eps) A), then the mean over the n_rollouts rollouts. Given
    some of a batch's steps (and the whole batch's counts), it is their exact share of the loss."""
    rho = torch.exp(logp - logp_old)                                       # (S,) pi(a) / pi_old(a)
    per_step = -torch.min(rho * adv, rho.clamp(1 - eps, 1 + eps) * adv)   # (S,)
    return (per_step * (1.0 / (n_rollouts * steps_in_rollout))).sum()


def mixture(logp, G, E):
    """log pi_ES(a) of the expert's steps (paper App. F): the group's rollouts are G draws of pi and
    E of the expert, so a step's likelihood is the mixture; the expert's own probability of its
    action is taken as 1."""
    return torch.logaddexp(
        math.log(G / (G + E)) + logp, torch.full_like(logp, math.log(1 / (G + E))))


def collate(steps, expert=False, same_blocks=False):
    """env Rollout.steps -> one flat batch over all (rollout, step) pairs, S of them: each recorded
    observation field under its name (batch["reads"] lists them), the action, its order and old
    log-probability, the rollout ("row") and "choices", the positions the action's likelihood ranges
    over: the step's candidates - or, for an expert that decoded in other blocks than the policy's,
    every masked position. expert: steps of expert rollouts, whose old log-probabilities are
    computed afterwards (old_expert_log_probs)."""
    cat = lambda k: torch.cat([s[k] for s in steps]) if steps[0][k] is not None else None
    reads = [k for k in steps[0] if k not in ("rows", "action", "logp", "order")]
    b = {k: cat(k) for k in reads}
    b.update(action=cat("action"), logp_old=None if expert else cat("logp"), row=cat("rows"),
             order=cat("order"), reads=reads)
    b["choices"] = b["masked"] if expert and not same_blocks else b["cand"]
    b["expert"] = torch.full_like(b["row"], expert, dtype=torch.bool)
    return b


def concat_batches(a, b, offset):
    """Two collated batches as one, b's rollouts numbered after a's (offset of them)."""
    cat = lambda k: torch.cat([a[k], b[k] + offset if k == "row" else b[k]])
    return {k: a[k] if k == "reads" else None if a[k] is None else cat(k) for k in a}


def step_log_prob(net, batch, sl, actions="bernoulli", mixture_sizes=None, knobs=ROLLOUT):
    """(logits, log pi(a)) of the recorded steps sl under the policy net, in float32, read with the
    rollouts' knobs; with expert steering (mixture_sizes = (G, E)) the expert's steps get the
    mixture likelihood."""
    logits = net(**{k: None if batch[k] is None else batch[k][sl] for k in batch["reads"]})
    order = None if batch["order"] is None else batch["order"][sl]
    logp = action_log_prob(actions, logits, batch["choices"][sl], batch["action"][sl], order, knobs)
    if mixture_sizes is not None:
        logp = torch.where(batch["expert"][sl], mixture(logp, *mixture_sizes), logp)
    return logits, logp


@torch.no_grad()
def old_expert_log_probs(net, eb, mixture_sizes, chunk):
    """The expert steps' old log-probabilities: the mixture under the policy that rolled out."""
    parts = [step_log_prob(net, eb, slice(i, i + chunk), "bernoulli", mixture_sizes)[1]
             for i in range(0, len(eb["row"]), chunk)]
    eb["logp_old"] = torch.cat(parts)


def grpo_loss(net, batch, adv, n_rollouts, eps, chunk=4096, actions="bernoulli", mixture_sizes=None,
              metrics=True, knobs=ROLLOUT):
    """grpo_objective over a batch of recorded steps (rollout of each: batch["row"]), `chunk` steps
    at a time, its gradient accumulated into net's parameters (the policy or its DDP wrapper) ->
    (loss, clip fraction, entropy of the policy's own steps). Zero-advantage steps get no backward,
    and with metrics=False no forward (docs/design.md, "Learning")."""
    row = batch["row"]
    steps_in_rollout = torch.zeros(n_rollouts, device=row.device).index_add_(
        0, row, torch.ones_like(row, dtype=torch.float))[row]
    ddp = isinstance(net, torch.nn.parallel.DistributedDataParallel)
    live = (adv[row] != 0) | ddp
    idx_live, idx_zero = live.nonzero().squeeze(1), (~live).nonzero().squeeze(1)
    S, total, clipped, seen, ent, own_n = row.shape[0], 0.0, 0.0, 0, 0.0, 0
    for idx, grad in [(idx_live, True)] + ([(idx_zero, False)] if metrics else []):
        for i in range(0, len(idx), chunk):
            # every step live: plain slices
            sl = idx[i:i + chunk] if len(idx) < S else slice(i, i + chunk)
            # under DDP only the last chunk's backward all-reduces (ranks differ in S)
            last = i + chunk >= len(idx)
            sync = net.no_sync() if ddp and not last else nullcontext()
            with sync, nullcontext() if grad else torch.no_grad():
                logits, logp = step_log_prob(net, batch, sl, actions, mixture_sizes, knobs)  # fp32
                loss = grpo_objective(logp, batch["logp_old"][sl], adv[row[sl]],
                                      steps_in_rollout[sl], n_rollouts, eps)
                if grad:
                    loss.backward()
            total += loss.item()
            clipped += ((torch.exp(logp - batch["logp_old"][sl]) - 1).abs()
                        > eps).float().sum().item()
            seen += len(logp)
            own = ~batch["expert"][sl]
            if actions == "dpls":   # per step
                ent += -logp.detach()[own].sum().item()
                own_n += own.sum().item()
            else:                   # per candidate position, whatever the chunks
                n_cand = batch["cand"][sl][own].sum().item()
                ent += bernoulli_entropy(logits.detach()[own],
                                         batch["cand"][sl][own]).item() * n_cand
                own_n += n_cand
    return total, clipped / max(seen, 1), ent / max(own_n, 1)
