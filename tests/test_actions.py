"""Action distributions (actions.py): exact log-probabilities by enumeration, sampling by a chi-square test, beta."""
import itertools
import math

import pytest
import torch

from actions import bernoulli_log_prob, bernoulli_sample, dpls_log_prob, dpls_sample
from env import Obs, row_keys
from policy import Knobs, LearnedPolicy, PolicyConfig


def dpls_outcomes(idx):
    """Every DPLS outcome over candidate positions idx: a forced pick, then an ordered sequence of distinct others."""
    for first in idx:
        rest = [i for i in idx if i != first]
        for k in range(len(rest) + 1):
            for seq in itertools.permutations(rest, k):
                yield (first, *seq)


def brute_dpls(z, idx, seq, s):
    """The probability of a drawn sequence, step by step, in float64 (independent of dpls_log_prob's sorting)."""
    w = {i: math.exp(z[i]) for i in idx}
    p = w[seq[0]] / sum(w.values())
    left = set(idx) - {seq[0]}
    for i in seq[1:]:
        p *= w[i] / (sum(w[j] for j in left) + math.exp(s))
        left.remove(i)
    return p * math.exp(s) / (sum(w[j] for j in left) + math.exp(s))


def as_order(seq, L):
    order = torch.full((1, L), -1, dtype=torch.long)
    for r, i in enumerate(seq):
        order[0, i] = r
    return order


@pytest.mark.parametrize("L,cand_bits", [(1, [1]), (3, [1, 1, 1]), (5, [1, 0, 1, 1, 1]), (5, [1, 1, 1, 1, 1])])
@pytest.mark.parametrize("tau,beta", [(1.0, 1.0), (0.5, 1.0), (1.0, 3.0), (2.0, 0.25)])
def test_dpls_log_probs_sum_to_one_by_enumeration(L, cand_bits, tau, beta):
    torch.manual_seed(L)
    logits = torch.randn(1, L) * 2
    cand = torch.tensor([cand_bits], dtype=torch.bool)
    idx = cand[0].nonzero().squeeze(1).tolist()
    z = (logits[0].double() / tau).tolist()
    total = 0.0
    for seq in dpls_outcomes(idx):
        lp = dpls_log_prob(logits, cand, as_order(seq, L), tau, beta)
        assert lp.dtype == torch.float32
        assert abs(lp.item() - math.log(brute_dpls(z, idx, seq, -math.log(beta)))) < 1e-4, seq
        total += math.exp(lp.item())
    assert abs(total - 1) < 1e-5, total   # a distribution over every set-and-order outcome


def test_dpls_sampling_matches_its_probabilities():
    """Chi-square goodness of fit over the 15 outcomes of 3 candidates, N = 40,000 draws. The bound is the chi-square
    (14 df) quantile at 1 - 1e-4 (Wilson-Hilferty), so a correct sampler fails with probability 1e-4 on a random
    seed; the seed is fixed, so the test is deterministic."""
    torch.manual_seed(0)
    L, N = 4, 40_000
    logits = torch.tensor([[1.0, -0.5, 0.0, 2.0]]).expand(N, L)
    cand = torch.tensor([[True, True, False, True]]).expand(N, L)
    for tau, beta in [(1.0, 1.0), (0.7, 2.0)]:
        u, order = dpls_sample(logits, cand, torch.rand(N, L), torch.rand(N, L), torch.rand(N), tau, beta)
        assert (u.sum(1) >= 1).all() and not (u & ~cand).any() and torch.equal(u, order >= 0)
        seqs = [tuple(sorted((r, i) for i, r in enumerate(o) if r >= 0)) for o in order.tolist()]
        counts = {}
        for s in seqs:
            seq = tuple(i for _, i in s)
            counts[seq] = counts.get(seq, 0) + 1
        outcomes = list(dpls_outcomes([0, 1, 3]))
        assert set(counts) <= set(outcomes) and len(outcomes) == 15
        chi2 = 0.0
        for seq in outcomes:
            p = math.exp(dpls_log_prob(logits[:1], cand[:1], as_order(seq, L), tau, beta).item())
            chi2 += (counts.get(seq, 0) - N * p) ** 2 / (N * p)
        df, zq = 14, 3.719                                   # z at 1 - 1e-4
        bound = df * (1 - 2 / (9 * df) + zq * math.sqrt(2 / (9 * df))) ** 3
        assert chi2 < bound, (tau, beta, chi2, bound)


def test_dpls_without_candidates_draws_nothing():
    logits, cand = torch.randn(2, 4), torch.tensor([[False] * 4, [False, True, False, False]])
    u, order = dpls_sample(logits, cand, torch.rand(2, 4), torch.rand(2, 4), torch.rand(2))
    assert u[0].sum() == 0 and u[1].tolist() == [False, True, False, False]
    lp = dpls_log_prob(logits, cand, order)
    assert lp[0] == 0 and abs(lp[1].item()) < 1e-6   # one candidate: forced, then STOP for sure


def test_bernoulli_beta():
    """min(1, beta * sigmoid(z)): enumeration sums to 1; beta = 1 is the paper's distribution, draws follow beta."""
    torch.manual_seed(1)
    logits, cand = torch.randn(1, 5), torch.tensor([[True, True, False, True, True]])
    idx = [0, 1, 3, 4]
    for beta in (0.25, 1.0, 2.0, 4.0):
        total = 0.0
        for bits in itertools.product([0, 1], repeat=4):
            a = torch.zeros(1, 5, dtype=torch.bool)
            a[0, idx] = torch.tensor(bits, dtype=torch.bool)
            total += math.exp(bernoulli_log_prob(logits, cand, a, beta=beta).item())
        assert abs(total - 1) < 1e-4
    N = 20_000
    u = bernoulli_sample(logits.expand(N, 5), cand.expand(N, 5), torch.rand(N, 5), beta=2.0)
    p = (2 * torch.sigmoid(logits[0])).clamp(max=1)
    # 5 sd of a binomial mean at N = 20,000: a correct sampler fails with probability < 1e-5 per position
    assert ((u.float().mean(0) - p * cand[0]).abs() <= 5 * (p * (1 - p) / N).sqrt() + 1e-6).all()


def test_learned_dpls_policy_acts_and_records_its_order():
    pol = LearnedPolicy(PolicyConfig(actions="dpls"))
    torch.manual_seed(0)
    with torch.no_grad():
        pol.head.weight.normal_(0, 0.1)                 # logits of spread ~1 around 0: items and STOP start
        pol.head.bias.zero_()                           # about even, so beta has room to move them
    b, L = 16, 8
    cand = torch.zeros(b, L, dtype=torch.bool)
    cand[:, 2:6] = True
    obs = Obs(torch.zeros(b, L, dtype=torch.long), torch.rand(b, L), cand.clone(), cand, torch.zeros(b),
              torch.zeros(b, dtype=torch.long), 2, row_keys(0, torch.arange(b)))
    a = pol.act(obs)
    u, logp, order = a.unmask, a.logp, a.order
    assert (u.sum(1) >= 1).all() and not (u & ~cand).any() and torch.equal(u, order >= 0)
    logits = pol(obs.conf, obs.masked, obs.t)
    torch.testing.assert_close(logp, dpls_log_prob(logits, cand, order))
    u2 = pol.act(obs).unmask
    assert torch.equal(u, u2)                           # counter-based draws: the same obs, the same action
    assert pol.act(obs, Knobs(beta=8.0)).unmask.sum() > u.sum()   # beta > 1 draws more before STOP
