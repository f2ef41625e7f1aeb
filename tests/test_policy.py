"""The learned policy: size, initialisation, exact log-probabilities, evaluation fallback."""
import itertools
import math

import torch

from env import Obs, row_keys
from policy import LearnedPolicy, bernoulli_log_prob


def test_parameter_count_and_initial_rate():
    pol = LearnedPolicy()
    n = sum(p.numel() for p in pol.parameters())
    assert 320_000 < n < 340_000, n          # the paper's ~331K at width 128
    conf, masked, t = torch.rand(5, 16), torch.rand(5, 16) < 0.5, torch.rand(5)
    s = torch.sigmoid(pol(conf, masked, t))
    torch.testing.assert_close(s, torch.full_like(s, 1 / (1 + math.e ** 2)))   # sigmoid(-2) = 0.119


def test_log_prob_equals_enumeration():
    torch.manual_seed(0)
    logits = torch.randn(1, 6) * 2
    cand = torch.tensor([[True, False, True, True, False, True]])
    idx = cand[0].nonzero().squeeze(1).tolist()
    for tau in (1.0, 0.5):
        s = torch.sigmoid(logits[0].double() / tau)
        total = 0.0
        for bits in itertools.product([0, 1], repeat=len(idx)):
            a = torch.zeros(1, 6, dtype=torch.bool)
            a[0, idx] = torch.tensor(bits, dtype=torch.bool)
            brute = math.prod(float(s[i]) if b else 1 - float(s[i]) for i, b in zip(idx, bits))
            lp = bernoulli_log_prob(logits, cand, a, tau)
            assert lp.dtype == torch.float32 and abs(lp.item() - math.log(brute)) < 1e-4   # float32 sum
            total += math.exp(lp.item())
        assert abs(total - 1) < 1e-5        # a distribution over the 2^4 actions on the candidates


def make_obs(b=64, L=8):
    cand = torch.zeros(b, L, dtype=torch.bool)
    cand[:, :4] = True
    return Obs(torch.zeros(b, L, dtype=torch.long), torch.rand(b, L), cand.clone(), cand, torch.zeros(b),
               torch.zeros(b, dtype=torch.long), 2, row_keys(0, torch.arange(b)))


def test_fallback_always_makes_progress():
    pol = LearnedPolicy()
    with torch.no_grad():
        pol.head.bias.fill_(-30.0)                     # draws essentially never select anything
        pol.head.weight.normal_(0, 1)
    o = make_obs()
    pol.fallback = False
    u, _ = pol.act(o)
    assert u.sum() == 0                                # training mode: the empty action is allowed
    pol.fallback = True
    u, logp = pol.act(o)
    assert (u.sum(1) == 1).all() and not (u & ~o.cand).any()   # one per row, inside the block
    logits = pol(o.conf, o.masked, o.t).masked_fill(~o.cand, -1e9)
    assert torch.equal(u.float().argmax(1), logits.argmax(1))    # the row's best candidate


def test_training_draws_match_probabilities():
    # 64 rows x 4 candidates at p = 0.119: the mean is within 5 sd (0.020) -> failure prob < 1e-6
    pol = LearnedPolicy()
    pol.fallback = False
    u, logp = pol.act(make_obs())
    assert abs(u[:, :4].float().mean().item() - 0.1192) < 5 * (0.1192 * 0.8808 / 256) ** 0.5
    assert not u[:, 4:].any() and logp.shape == (64,)
