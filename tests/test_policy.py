"""The learned policy: size, initialisation, exact log-probabilities, evaluation fallback."""
import itertools
import math

import pytest
import torch

from env import Obs, row_keys
from actions import bernoulli_log_prob
from conftest import save_policy
from policy import Knobs, LearnedPolicy


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
    u = pol.act(o, Knobs(fallback=False)).unmask
    assert u.sum() == 0                                # training mode: the empty action is allowed
    u = pol.act(o, Knobs(fallback=True)).unmask
    assert (u.sum(1) == 1).all() and not (u & ~o.cand).any()   # one per row, inside the block
    logits = pol(o.conf, o.masked, o.t).masked_fill(~o.cand, -1e9)
    assert torch.equal(u.float().argmax(1), logits.argmax(1))    # the row's best candidate


def test_training_draws_match_probabilities():
    # 64 rows x 4 candidates at p = 0.119: the mean is within 5 sd (0.020) -> failure prob < 1e-6
    pol = LearnedPolicy()
    a = pol.act(make_obs(), Knobs(fallback=False))
    u, logp = a.unmask, a.logp
    assert abs(u[:, :4].float().mean().item() - 0.1192) < 5 * (0.1192 * 0.8808 / 256) ** 0.5
    assert not u[:, 4:].any() and logp.shape == (64,)


def test_alpha_conditioned_policy_starts_as_the_plain_one_and_is_conditioned():
    from policy import PolicyConfig
    torch.manual_seed(0)
    plain = LearnedPolicy()
    torch.manual_seed(0)
    cond = LearnedPolicy(PolicyConfig(alpha_lo=0.0, alpha_hi=10.0))
    with torch.no_grad():       # train the shared parts a little: the conditioning must still add exactly nothing
        for p, q in zip(plain.parameters(), cond.parameters()):
            p.add_(torch.randn_like(p) * 0.3), q.copy_(p)
    conf, masked, t = torch.rand(4, 10), torch.rand(4, 10) < 0.6, torch.rand(4)
    want = plain(conf, masked, t)
    for a in (0.0, 1.0, 10.0):
        torch.testing.assert_close(cond(conf, masked, t, torch.full((4,), a)), want)
    with torch.no_grad():
        cond.alpha_mlp[2].weight.normal_(0, 0.5)          # after training the conditioning reaches the logits
    lo, hi = cond(conf, masked, t, torch.zeros(4)), cond(conf, masked, t, torch.full((4,), 10.0))
    assert (lo - hi).abs().max() > 1e-3
    with pytest.raises(ValueError, match="needs alpha"):
        cond(conf, masked, t)


def test_alpha_reaches_the_logits_through_the_output_film_from_the_first_step():
    """At initialisation the adaLN path of alpha has zero gradient (its output layer feeds ada, which is zero too);
    the output FiLM's shift gets the summed gradient of every position. After a step on it, alpha moves the logits
    in one direction for every position (a threshold shift)."""
    from policy import PolicyConfig
    torch.manual_seed(0)
    cond = LearnedPolicy(PolicyConfig(alpha_lo=0.0, alpha_hi=10.0))
    conf, masked, t = torch.rand(4, 10), torch.rand(4, 10) < 0.6, torch.rand(4)
    cond(conf, masked, t, torch.full((4,), 10.0)).sum().backward()
    assert cond.alpha_mlp[2].weight.grad.abs().max() == 0 and cond.alpha_mlp[0].weight.grad.abs().max() == 0
    assert cond.alpha_out[2].bias.grad[1] == pytest.approx(40.0)      # d sum(logits) / d shift = n * L
    with torch.no_grad():
        cond.alpha_out[2].weight[1].normal_(0, 0.5)
    lo, hi = cond(conf, masked, t, torch.zeros(4)), cond(conf, masked, t, torch.full((4,), 10.0))
    d = hi - lo
    assert (d.abs() > 1e-3).all() and (torch.sign(d) == torch.sign(d[0, 0])).all()


def test_older_conditioned_checkpoints_load_without_the_output_film(tmp_path):
    """A conditioned policy saved before the output FiLM loads, its FiLM at zero: the same function. Any other
    missing or extra weight is one clear error."""
    from decode import load_policy, load_weights
    from policy import PolicyConfig, conf_features
    c = PolicyConfig(alpha_lo=0.0, alpha_hi=10.0)
    torch.manual_seed(0)
    old = LearnedPolicy(c)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("alpha_out.")}
    save_policy(tmp_path / "old.pt", state, c)
    pol, _ = load_policy(str(tmp_path / "old.pt"))
    conf, masked, t, a = torch.rand(2, 6), torch.rand(2, 6) < 0.5, torch.rand(2), torch.full((2,), 3.0)
    h = old.conf_in(conf_features(conf, c.features))
    before_film = old.block(h, old.modulation(masked, t, a))
    torch.testing.assert_close(pol(conf, masked, t, a), before_film)
    with pytest.raises(RuntimeError, match="do not fit: head.weight"):
        load_weights(LearnedPolicy(c), {k: v for k, v in state.items() if k != "head.weight"})
    with pytest.raises(RuntimeError, match="do not fit: extra"):
        load_weights(LearnedPolicy(c), {**old.state_dict(), "extra": torch.zeros(1)})


def test_alpha_specs_and_the_range(tmp_path):
    from decode import parse_policy
    from policy import PolicyConfig
    for name, c in (("c.pt", PolicyConfig(alpha_lo=0.0, alpha_hi=10.0)), ("p.pt", PolicyConfig())):
        save_policy(tmp_path / name, LearnedPolicy(c).state_dict(), c)
    pol = parse_policy(f"{tmp_path}/c.pt:tau=0.5:alpha=3")
    assert pol.knobs.alpha == 3.0 and pol.knobs.tau == 0.5 and pol.spec.endswith("c.pt:tau=0.5:alpha=3")
    for spec, msg in [("c.pt:alpha=11", "outside the range the policy was trained on"),
                      ("c.pt:alpha=-1", "alpha must be >= 0"),
                      ("p.pt:alpha=1", "not alpha-conditioned"),
                      ("c.pt:gamma=2", r"c.pt\[:tau=T\]\[:beta=B\]"),
                      ("c.pt:alpha=1:alpha=2", r"c.pt\[:tau=T\]"),
                      ("c.pt:alpha=x", "not a number")]:
        with pytest.raises(ValueError, match=msg):
            parse_policy(f"{tmp_path}/{spec}")
    with pytest.raises(ValueError, match="is alpha-conditioned .* pick the point on its front"):
        parse_policy(f"{tmp_path}/c.pt")                 # a CLI spec must say where on the front
    from decode import load_policy
    pol, o = load_policy(f"{tmp_path}/c.pt")[0], make_obs()
    with pytest.raises(ValueError, match="needs its point on the front"):
        pol.act(o)
    o.alpha = torch.full((64,), 2.0)                     # GRPO: the rollout's own alpha wins
    assert pol.act(o).unmask.shape == (64, 8)


def test_alpha_draws():
    from train import ALPHA0_SHARE, draw_alphas
    a = draw_alphas(torch.arange(20000), 0.0, 10.0, seed=0)
    assert torch.equal(a, draw_alphas(torch.arange(20000), 0.0, 10.0, seed=0))          # counter-based
    zero = (a == 0).float().mean().item()
    assert abs(zero - ALPHA0_SHARE) < 5 * (0.2 * 0.8 / 20000) ** 0.5                      # failure prob < 1e-6
    pos = a[a > 0]
    assert pos.min() >= 0.1 - 1e-6 and pos.max() <= 10.0 + 1e-5
    mid = ((pos > 1.0).float().mean().item())                                            # log-uniform: half above 1
    assert abs(mid - 0.5) < 5 * (0.25 / len(pos)) ** 0.5
    b = draw_alphas(torch.arange(1000), 1.0, 3.0, seed=0)
    assert (b >= 1.0 - 1e-6).all() and (b <= 3.0 + 1e-5).all()                           # LO > 0: no zeros



def test_the_modulation_is_ada_of_the_per_position_conditioning():
    """LearnedPolicy.modulation computes ada(mask_emb[m] + time [+ alpha]) per row and per mask bit, not per
    position: the same values and gradients as ada applied at every position, plain and alpha-conditioned."""
    from policy import PolicyConfig, alpha_features, sinusoidal
    torch.manual_seed(0)
    for cfg in (PolicyConfig(), PolicyConfig(alpha_lo=0.0, alpha_hi=10.0)):
        pol = LearnedPolicy(cfg)
        with torch.no_grad():
            for p in pol.parameters():
                p.normal_(0, 0.2)       # away from the zero initialisation of ada and alpha_mlp's output
        masked, t, alpha = torch.rand(5, 7) < 0.5, torch.rand(5), torch.rand(5) * 10
        cond = pol.mask_emb(masked.long()) + pol.time_mlp(sinusoidal(t, cfg.width))[:, None]
        if pol.conditioned:
            cond = cond + pol.alpha_mlp(alpha_features(alpha, cfg.alpha_hi, cfg.width))[:, None]
        a = alpha if pol.conditioned else None
        fast, ref = pol.modulation(masked, t, a), pol.ada(cond)
        assert fast.shape == (5, 7, 6 * cfg.width)
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
        w = torch.randn_like(ref)
        for x, y in zip(torch.autograd.grad((fast * w).sum(), list(pol.parameters()), allow_unused=True),
                        torch.autograd.grad((ref * w).sum(), list(pol.parameters()), allow_unused=True)):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5 * y.abs().max().item())


def test_log_features_separate_what_raw_confidence_crowds_together():
    from policy import PolicyConfig, conf_features
    c = torch.tensor([[0.9, 0.99, 0.05, 0.1, 1.0, 0.0]])
    raw, log = conf_features(c, "raw"), conf_features(c, "log")
    assert raw.shape == (1, 6, 1) and log.shape == (1, 6, 3) and torch.isfinite(log).all()
    torch.testing.assert_close(log[..., 0], c)                       # c itself is still there
    # a decade of 1 - c is one step of log(1 - c) wherever it lies: 0.9 -> 0.99 moves it as far as 0 -> 0.9 does
    d = lambda i, j, k: (log[0, i, k] - log[0, j, k]).abs().item()
    zero = conf_features(torch.tensor([[0.0]]), "log")[0, 0]
    assert abs(d(1, 0, 2) - (log[0, 0, 2] - zero[2]).abs().item()) < 1e-5 and abs(d(1, 0, 2) - math.log(10) / 10) < 1e-5
    assert abs(d(3, 2, 1) - math.log(2) / 10) < 1e-5                 # 0.05 -> 0.1: one doubling of c, as 0.5 -> 1
    assert raw[0, 1, 0] - raw[0, 0, 0] < 0.1 and raw[0, 3, 0] - raw[0, 2, 0] < 0.1
    pol = LearnedPolicy(PolicyConfig(features="log"))
    assert pol.conf_in.in_features == 3 and LearnedPolicy(PolicyConfig(features="raw")).conf_in.in_features == 1
    with pytest.raises(ValueError, match="unknown policy features"):
        LearnedPolicy(PolicyConfig(features="cubic"))


def test_a_checkpoint_without_features_loads_as_raw(tmp_path):
    from dataclasses import asdict
    from decode import load_policy
    from policy import PolicyConfig
    old = LearnedPolicy(PolicyConfig(features="raw"))
    cfg = asdict(old.c)
    del cfg["features"]                                              # written before the field existed
    save_policy(tmp_path / "old.pt", old.state_dict(), cfg)
    pol, _ = load_policy(str(tmp_path / "old.pt"))
    assert pol.c.features == "raw"


def test_a_setting_reading_policy_reads_its_block_the_setting_and_starts_neutral(tmp_path):
    """PolicyConfig(setting=True): three position states (revealed, masked elsewhere, candidate) and the setting's
    features (BL / L, the dLLM temperature, the block's progress) reach the logits; the setting's output scale and
    shift and ada start at zero (so its first logits depend on neither the setting nor the block). A
    checkpoint of it declares the block lengths it was trained at."""
    from decode import checkpoint_policy
    from policy import PolicyConfig
    torch.manual_seed(0)
    pol = LearnedPolicy(PolicyConfig(setting=True))
    o = make_obs(4, 8)
    at = lambda bl, T, prog: torch.tensor([[bl, T, prog]] * 4)
    base = pol(o.conf, o.masked, o.t, None, o.cand, at(0.5, 0.0, 0.0))
    # neutral at init
    assert torch.equal(base, pol(o.conf, o.masked, o.t, None, o.cand, at(1.0, 0.8, 0.5)))
    with torch.no_grad():
        for m in (pol.setting_out[2], pol.ada):
            m.weight.normal_(0, 0.3)
    # the block
    assert (base - pol(o.conf, o.masked, o.t, None, o.masked, at(0.5, 0.0, 0.0))).abs().max() > 1e-3
    for other in (at(1.0, 0.0, 0.0), at(0.5, 0.8, 0.0), at(0.5, 0.0, 0.5)):
        assert (pol(o.conf, o.masked, o.t, None, o.cand, other) - pol(o.conf, o.masked, o.t, None, o.cand,
                                                                      at(0.5, 0.0, 0.0))).abs().max() > 1e-3
    with pytest.raises(ValueError, match="candidates and the setting"):
        pol(o.conf, o.masked, o.t)
    o.setting = at(0.5, 0.0, 0.0)
    assert pol.act(o, Knobs()).unmask.shape == (4, 8)
    path = save_policy(tmp_path / "u.pt", pol.state_dict(), pol.c, block_length=8, block_lengths="4,8,16,32")
    assert checkpoint_policy(path).trained == (32, (4, 8, 16, 32))
    plain = save_policy(tmp_path / "p.pt", LearnedPolicy().state_dict(), PolicyConfig(), block_length=8)
    assert checkpoint_policy(plain).trained == (32, (8,))


def test_block_features_mark_each_blocks_best_candidate():
    """features 'block': c, log c / 10, log(1 - c) / 10 and log(c / the best candidate's c) / 10, which is 0 at each
    row's most confident candidate whatever the block length; without the candidates it is one clear error."""
    from policy import conf_features
    conf = torch.tensor([[0.5, 0.9, 0.2, 0.95], [0.3, 0.1, 0.6, 0.05]])
    cand = torch.tensor([[True, True, True, False], [False, False, True, True]])
    f = conf_features(conf, "block", cand)
    assert f.shape == (2, 4, 4) and torch.equal(f[..., :3], conf_features(conf, "log"))
    torch.testing.assert_close(f[0, :3, 3], torch.tensor([0.5 / 0.9, 1.0, 0.2 / 0.9]).log() / 10)
    assert f[1, 2, 3] == 0 and f[1, 3, 3] == pytest.approx(math.log(0.05 / 0.6) / 10)
    with pytest.raises(ValueError, match="need the candidates"):
        conf_features(conf, "block")
