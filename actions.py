"""
Action distributions: how the learned policy's per-position logits (n, L) become a set of positions
to unmask. A file of its own because the policy network (policy.py) does not care which one is used
and the GRPO update (grpo.py) needs exactly the same log-probabilities the rollouts drew with.

  bernoulli (paper section 3)  each candidate independently, u ~ Bernoulli(min(1, beta * sigmoid(z))), z = logit / tau;
                               the empty action is allowed (evaluation adds a fallback, policy.py)
  dpls (paper App. E)          dynamic Plackett-Luce: one forced pick from softmax(z) over the candidates, then a
                               Plackett-Luce ordering of the rest competing with a STOP item of logit -log(beta); the
                               action is the forced pick and every item drawn before STOP, so it is never empty

beta is the paper's test-time knob (Fig. 6): 1 during training; > 1 unmasks more per step, < 1
fewer. For DPLS, scaling every item's Plackett-Luce weight by beta is the same as moving STOP's
logit from 0 to -log(beta). Log-probabilities are exact and in float32. Randomness comes in as
uniforms (n, L) from env.Obs.uniform, so a row's draws depend only on its key, its step and the
position.
"""
import math

import torch

ACTIONS = ("bernoulli", "dpls")
EPS = 1e-6   # probabilities are clamped to [EPS, 1 - EPS] before a log


def bernoulli_probs(logits, tau=1.0, beta=1.0):
    """Unmask probability per position (n, L) in float32: min(1, beta * sigmoid(logit / tau))."""
    return (beta * torch.sigmoid(logits.float() / tau)).clamp(EPS, 1 - EPS)


def bernoulli_sample(logits, cand, uniform, tau=1.0, beta=1.0):
    """u (n, L) bool, only on candidates, from uniforms (n, L) in [0, 1) (the unclamped
    probability)."""
    return (uniform < (beta * torch.sigmoid(logits.float() / tau)).clamp(max=1.0)) & cand


def bernoulli_log_prob(logits, cand, action, tau=1.0, beta=1.0):
    """Exact log-probability (n,) in float32 of a Bernoulli action (n, L) over the candidates:
    sum of u log s + (1 - u) log(1 - s), s = min(1, beta * sigmoid(logit / tau)) kept in (0, 1)."""
    s = bernoulli_probs(logits, tau, beta)
    return (torch.where(action, s.log(), (1 - s).log()) * cand).sum(1)


def bernoulli_entropy(logits, cand, tau=1.0):
    """Mean entropy (nats) of the per-position Bernoulli over the candidates (a scalar)."""
    s = bernoulli_probs(logits, tau)
    h = -(s * s.log() + (1 - s) * (1 - s).log())
    return (h * cand).sum() / cand.sum().clamp(min=1)


def gumbel(uniform):
    """Standard Gumbel noise from uniforms in [0, 1) (clamped off 0 so the log stays finite)."""
    return -torch.log(-torch.log(uniform.double().clamp(2 ** -30, 1 - 2 ** -30))).float()


def dpls_sample(logits, cand, u_first, u_rest, u_stop, tau=1.0, beta=1.0):
    """A DPLS action in one shot with Gumbel-perturbed sorting. uniforms: u_first, u_rest (n, L),
    u_stop (n,). Returns (unmask (n, L) bool, order (n, L) long): order 0 is the forced pick, 1, 2,
    ... the Plackett-Luce draws in the order drawn, -1 not drawn. Gumbel-max gives the forced pick;
    fresh Gumbels on the rest and on STOP, sorted, are a Plackett-Luce sample of their full
    ordering, and the items drawn before STOP are those whose perturbed logit beats STOP's."""
    z = logits.float() / tau                                                             # (n, L)
    first = (z + gumbel(u_first)).masked_fill(~cand, float("-inf")).argmax(1)          # (n,)
    has = cand.any(1)
    is_first = torch.zeros_like(cand).scatter_(1, first[:, None], True) & has[:, None]
    key = (z + gumbel(u_rest)).masked_fill(~cand | is_first, float("-inf"))             # (n, L)
    stop = -math.log(beta) + gumbel(u_stop)                                              # (n,)
    drawn = key > stop[:, None]
    # 0 = the highest key
    rank = key.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    order = torch.where(drawn, rank + 1, -1)
    order = torch.where(is_first, 0, order)
    return is_first | drawn, order


def dpls_log_prob(logits, cand, order, tau=1.0, beta=1.0):
    """Exact log-probability (n,) in float32 of the drawn set and its order under DPLS (0 for a row
    without candidates). With the candidates sorted as drawn (z_1 the forced pick, z_2..z_K the
    later draws, then the undrawn ones) and s = -log(beta) the STOP logit:
        log p = z_1 - lse(z_1..z_m) + sum_{j=2..K} [z_j - lse(z_j..z_m, s)]
                + s - lse(z_{K+1}..z_m, s).
    """
    z = logits.float() / tau
    n, L = z.shape
    s = -math.log(beta)
    drawn = (order >= 0) & cand
    key = torch.where(drawn, order.float(), float(L + 1)).masked_fill(~cand, float(L + 2))
    # drawn first, in order
    idx = key.argsort(dim=1, stable=True)
    zs = z.gather(1, idx).masked_fill(~cand.gather(1, idx), float("-inf"))              # (n, L)
    # lse(z_j..z_m), (n, L)
    suffix = torch.logcumsumexp(zs.flip(1), 1).flip(1)
    # (n,) >= 1 with candidates
    K = drawn.sum(1)
    j = torch.arange(L, device=z.device)[None]
    later = (j >= 1) & (j < K[:, None])
    terms = torch.where(later, zs - torch.logaddexp(suffix, torch.full_like(suffix, s)), 0.0).sum(1)
    rest = torch.cat([suffix, torch.full((n, 1), float("-inf"), device=z.device)],
                     1).gather(1, K[:, None]).squeeze(1)
    lp = zs[:, 0] - suffix[:, 0] + terms + s - torch.logaddexp(rest, torch.full_like(rest, s))
    return torch.where(cand.any(1), lp, torch.zeros_like(lp))


def check_actions(kind):
    if kind not in ACTIONS:
        raise ValueError(f"unknown action type {kind!r}: use one of {ACTIONS}")


def action_log_prob(kind, logits, cand, action, order, knobs):
    """The log-probability (n,) of actions (n, L) [with their DPLS order] under either distribution,
    read with knobs' tau and beta: what act() draws with and what the GRPO update scores."""
    if kind == "dpls":
        return dpls_log_prob(logits, cand, order, knobs.tau, knobs.beta)
    return bernoulli_log_prob(logits, cand, action, knobs.tau, knobs.beta)
