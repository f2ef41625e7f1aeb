"""env.py and the heuristics of policy.py: hand-computed decisions, NFE accounting, batch invariance."""
import pytest
import torch

from decode import parse_policies, parse_policy
from env import Obs, generate, row_keys
from steps import token_stats
from policy import READS, EB, Action, Band, Entropy, Factor, Margin, Random, Threshold, TopK
from tasks import prompts_of
from tasks import tiny_problems


def obs(conf, cand=None, block_step=0, n_blocks=1, entropy=None, margin=None):
    conf = torch.tensor(conf, dtype=torch.float32)
    b, L = conf.shape
    cand = torch.ones(b, L, dtype=torch.bool) if cand is None else torch.tensor(cand)
    return Obs(torch.zeros(b, L, dtype=torch.long), conf, cand.clone(), cand, torch.zeros(b),
               torch.full((b,), block_step), n_blocks, row_keys(0, torch.arange(b)),
               margin=None if margin is None else torch.tensor(margin),
               entropy=None if entropy is None else torch.tensor(entropy))


def picked(pol, o):
    a = pol.act(o)
    assert a.logp is None
    return [r.nonzero().squeeze(1).tolist() for r in a.unmask]


def test_topk_schedule_remainder_first():
    # 8 masks over 3 steps: 3, 3, 2 (LLaDA: the remainder goes to the earliest steps), by highest conf
    conf = [[0.1, 0.9, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5]]
    pol = TopK(3)
    assert picked(pol, obs(conf)) == [[1, 2, 4]]
    cand = [[True, False, False, True, False, True, True, True]]
    assert picked(pol, obs(conf, cand, block_step=1)) == [[5, 6, 7]]        # ceil(5 / 2) = 3
    assert picked(pol, obs(conf, [[True, False, False, True] + [False] * 4], block_step=2)) == [[0, 3]]


def test_topk_ties_go_to_the_lowest_position():
    assert picked(TopK(4), obs([[1.0] * 8])) == [[0, 1]]


def test_steps_split_over_blocks():
    pol = TopK(4)
    pol.check(8, 4)                                   # 2 blocks x 2 steps
    with pytest.raises(ValueError, match="multiple of the 4 blocks"):
        TopK(6).check(16, 4)
    cand = [[True] * 4 + [False] * 4]
    assert picked(pol, obs([[0.5, 0.9, 0.1, 0.8, 1, 1, 1, 1]], cand, n_blocks=2)) == [[1, 3]]


def test_margin_and_entropy_rankings():
    m = [[0.1, 0.5, 0.3, 0.0]]
    assert picked(Margin(2), obs([[0.5] * 4], margin=m)) == [[1, 2]]
    e = [[0.9, 0.1, 0.5, 0.2]]
    assert picked(Entropy(2), obs([[0.5] * 4], entropy=e)) == [[1, 3]]


def test_threshold_fallback_is_per_row():
    conf = [[0.95, 0.5, 0.92, 0.3], [0.5, 0.6, 0.4, 0.1]]
    assert picked(Threshold(0.9), obs(conf)) == [[0, 2], [1]]   # row 1 still makes progress alone


def test_band_reveals_both_ends_and_the_best():
    conf = [[0.95, 0.5, 0.05, 0.3], [0.5, 0.6, 0.4, 0.2]]
    assert picked(Band(0.9, 0.08), obs(conf)) == [[0, 2], [1]]      # row 1: nothing in the band, its best one
    assert picked(Band(0.9, 0.3), obs(conf)) == [[0, 2, 3], [1, 3]]  # lo inclusive (0.3), 0.2 below it
    pol = parse_policy("band:lo=0.08:hi=0.9")
    assert isinstance(pol, Band) and (pol.hi, pol.lo, pol.spec) == (0.9, 0.08, "band:hi=0.9:lo=0.08")
    for bad, msg in [("band:hi=0.9", "band:hi=H:lo=L"), ("band:hi=0.05:lo=0.08", "0 <= lo < hi <= 1"),
                     ("band:hi=1.5:lo=0.1", r"hi must be in \[0, 1\]"), ("band:hi=x:lo=0.1", "not a number")]:
        with pytest.raises(ValueError, match=msg):
            parse_policy(bad)


def test_band_answer_reveals_the_answer_slot_with_its_value():
    """band+answer (support/chain_rules.py): proposals "+1 3 e # 3" with the value (position 2) revealed now by the
    band: the answer slot (after '#') goes with it when it proposes the same digit, not when it proposes another."""
    from common.chars import CharTokenizer
    from support.chain_rules import BandAnswer
    tok = CharTokenizer()
    rule = BandAnswer(0.9, 0.08, tok)
    conf = [[0.99, 0.99, 0.95, 0.05, 0.99, 0.5]]
    o = obs(conf)
    o.x0 = torch.tensor([tok.encode("+13e#3")])
    assert picked(rule, o) == [[0, 1, 2, 3, 4, 5]]
    o.x0 = torch.tensor([tok.encode("+13e#4")])
    assert picked(rule, o) == [[0, 1, 2, 3, 4]]
    o = obs([[0.99, 0.99, 0.5, 0.05, 0.99, 0.5]])                   # the value is not revealed yet: wait
    o.x0 = torch.tensor([tok.encode("+13e#3")])
    assert picked(rule, o) == [[0, 1, 3, 4]]


def test_factor():
    # sorted 0.99, 0.7, 0.6, 0.5: n=2 needs >= 1 - 1/3 (0.7 ok), n=3 needs >= 0.75 (0.6 fails) -> 2
    assert picked(Factor(1), obs([[0.6, 0.99, 0.5, 0.7]])) == [[1, 3]]
    assert picked(Factor(0.01), obs([[0.6, 0.99, 0.5, 0.7]])) == [[1]]      # n = 1 always taken


def test_eb_sampler():
    # entropies sorted 0.02, 0.05, 0.1, 0.3; sum minus max of the prefix: 0, 0.02, 0.07, 0.17 -> k = 3 at 0.1
    e = [[0.05, 0.3, 0.02, 0.1]]
    assert picked(EB(0.1), obs([[0.5] * 4], entropy=e)) == [[0, 2, 3]]
    assert picked(EB(0.0), obs([[0.5] * 4], entropy=e)) == [[2]]


def test_random_is_uniform_and_exact_count():
    # 4000 rows pick 2 of 8: each position's rate is 0.25 +- 0.0068 (1 sd); 5 sd -> failure prob < 1e-6
    o = obs([[0.5] * 8] * 4000)
    u = Random(4).act(o).unmask
    assert (u.sum(1) == 2).all()
    assert (u.float().mean(0) - 0.25).abs().max() < 5 * 0.0068


def test_parse_policy_specs_and_errors():
    specs = ["topk:steps=32", "random:32", "threshold:0.9", "threshold:lam=0.9", "factor:1", "eb:gamma=0.1",
             "margin:steps=8", "entropy:steps=8"]
    pols = parse_policies(",".join(specs))
    assert [type(p).__name__ for p in pols] == ["TopK", "Random"] + ["Threshold"] * 2 + ["Factor", "EB", "Margin", "Entropy"]
    assert [p.spec for p in pols] == ["topk:steps=32", "random:steps=32", "threshold:0.9", "threshold:0.9", "factor:1",
                                      "eb:gamma=0.1", "margin:steps=8", "entropy:steps=8"]
    assert pols[0].steps == 32 and pols[2].lam == 0.9 and pols[5].gamma == 0.1
    for bad, msg in [("topp:3", "unknown policy"), ("topk", "topk:steps=S"), ("topk:steps=x", "not a number"),
                     ("threshold:gamma=0.3", "threshold:LAMBDA"), ("missing.pt", "not found"), ("topk:steps=2.5", "integer")]:
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            parse_policy(bad)


# ---------------------------------------------------------------------------------------------------
# the loop, on a briefly trained tiny dLLM

def run(tiny, pol, n=8, L=32, BL=32, seed=0, offset=0):
    probs = tiny_problems("chain", n, seed=seed)
    ids, am = prompts_of(tiny, probs)
    return generate(tiny, pol, ids, am, L, BL, keys=row_keys(0, torch.arange(offset, offset + n)))


def test_fixed_steps_nfe_and_order(tiny):
    r = run(tiny, parse_policy("topk:steps=8"), L=32, BL=8)
    assert (r.nfe == 8).all()
    assert (r.order > 0).all() and (r.tokens != tiny.mask_id).all()     # every position unmasked once
    blk = torch.arange(32) // 8
    for row in r.order:   # semi-AR: every position of block j before any of block j+1
        assert all(row[blk == j].max() < row[blk == j + 1].min() for j in range(3))


def test_step_budget_and_progress(tiny):
    class Never:
        needs, spec = (), "never"
        def check(self, L, BL): pass
        def act(self, o): return Action(torch.zeros_like(o.cand))
    r = run(tiny, Never(), L=16, BL=4)
    assert (r.nfe == 16).all() and (r.tokens == tiny.mask_id).all()    # BL iterations per block, L in total
    r = run(tiny, parse_policy("threshold:0.9"), L=32, BL=32)
    assert (r.nfe >= 1).all() and (r.nfe <= 32).all() and (r.tokens != tiny.mask_id).all()


def test_finished_rows_cost_nothing(tiny):
    seen = []
    orig = tiny.logits
    tiny.logits = lambda x, am=None, start=0: (seen.append(x.shape[0]), orig(x, am, start))[1]
    try:
        r = run(tiny, parse_policy("threshold:0.5"), n=16)
    finally:
        tiny.logits = orig
    assert sum(seen) == r.nfe.sum().item()                      # a forward per unfinished row, no more
    assert len(seen) == r.nfe.max().item() and seen == sorted(seen, reverse=True)


@pytest.mark.parametrize("spec", ["threshold:0.7", "topk:steps=16", "random:steps=8", "eb:gamma=0.5"])
def test_batch_invariance(tiny, spec):
    pol, BL = parse_policy(spec), 8 if spec.startswith("topk") else 32
    batch = run(tiny, pol, n=12, BL=BL)
    for i in range(0, 12, 5):   # prompts of different lengths: alone they are not padded at all
        ids, am = prompts_of(tiny, tiny_problems("chain", 12, seed=0)[i:i + 1])
        alone = generate(tiny, pol, ids, am, 32, BL, keys=row_keys(0, torch.tensor([i])))
        assert torch.equal(alone.tokens[0], batch.tokens[i]) and alone.nfe[0] == batch.nfe[i]


def test_gumbel_sample_is_exact():
    # 20000 draws over 4 tokens at T = 0.7: each frequency within 5 sd of softmax(logits / T) (fail < 1e-5)
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]]).expand(1, 20000, 4)
    x0, conf, _, _ = token_stats(logits, 0.7, torch.tensor([12345]))
    p = torch.softmax(logits[0, 0] / 0.7, -1)
    freq = torch.bincount(x0[0], minlength=4).float() / 20000
    assert ((freq - p).abs() < 5 * (p * (1 - p) / 20000).sqrt() + 1e-4).all()
    assert torch.allclose(conf[0, 0], torch.softmax(logits[0, 0], -1)[x0[0, 0]])   # conf is noise-free
    greedy, _, _, _ = token_stats(logits, 0.0)
    assert (greedy == 0).all()
    with pytest.raises(ValueError, match="per-row seeds"):
        token_stats(logits, 0.7)


def test_temperature_sampling_is_batch_invariant(tiny):
    """At T > 0 a row's tokens came from one shared generator, so they changed with the batch size."""
    pol = parse_policy("threshold:0.7")
    probs = tiny_problems("chain", 10, seed=0)
    ids, am = prompts_of(tiny, probs)
    keys = row_keys(0, torch.arange(10))
    batch = generate(tiny, pol, ids, am, 32, 32, temperature=1.0, keys=keys)
    for i in (0, 3, 9):
        a, m = prompts_of(tiny, probs[i:i + 1])
        alone = generate(tiny, pol, a, m, 32, 32, temperature=1.0, keys=keys[i:i + 1])
        assert torch.equal(alone.tokens[0], batch.tokens[i]) and alone.nfe[0] == batch.nfe[i]
    other = generate(tiny, pol, ids, am, 32, 32, temperature=1.0, keys=row_keys(1, torch.arange(10)))
    greedy = generate(tiny, pol, ids, am, 32, 32, keys=keys)
    assert not torch.equal(other.tokens, batch.tokens) and not torch.equal(greedy.tokens, batch.tokens)  # it is random


def test_per_row_temperatures_are_each_rows_own_run(tiny):
    """temperature (B,): each row decodes exactly as it does alone at its temperature (0: greedy); noise_keys seed the
    dLLM's noise apart from the policy's draws, so two rows with one noise key sample alike in the same state."""
    logits = torch.randn(4, 6, 9, dtype=torch.float64)
    seeds = torch.tensor([11, 12, 13, 14])
    temps = torch.tensor([0.0, 0.3, 0.0, 1.0], dtype=torch.float64)
    x0, conf, _, _ = token_stats(logits, temps, seeds)
    for i, T in enumerate(temps.tolist()):
        one = token_stats(logits[i:i + 1], T, seeds[i:i + 1])
        assert torch.equal(one[0][0], x0[i]) and torch.equal(one[1][0], conf[i])
    pol = parse_policy("threshold:0.7")
    probs = tiny_problems("chain", 6, seed=0)
    ids, am = prompts_of(tiny, probs)
    keys, T = row_keys(0, torch.arange(6)), torch.tensor([0.0, 0.8, 0.3, 0.0, 0.8, 0.3])
    mixed = generate(tiny, pol, ids, am, 32, 32, temperature=T, keys=keys)
    for value in (0.0, 0.3, 0.8):
        rows = (T == value).nonzero().squeeze(1)
        alone = generate(tiny, pol, ids[rows], am[rows], 32, 32, temperature=value, keys=keys[rows])
        assert torch.equal(alone.tokens, mixed.tokens[rows]) and torch.equal(alone.nfe, mixed.nfe[rows])
    # one noise key, one prompt, six policy keys
    same = row_keys(5, torch.zeros(6, dtype=torch.long))
    ids1, am1 = ids[:1].expand(6, -1), am[:1].expand(6, -1)
    r = generate(tiny, parse_policy("topk:steps=32"), ids1, am1, 32, 32, temperature=1.0, keys=keys, noise_keys=same)
    # a deterministic rule: the same samples
    assert (r.tokens == r.tokens[0]).all()
    r = generate(tiny, parse_policy("topk:steps=32"), ids1, am1, 32, 32, temperature=1.0, keys=keys)
    assert not (r.tokens == r.tokens[0]).all()


def test_the_observation_carries_the_setting(tiny):
    """Obs.setting (b, 3): BL / L, the row's temperature, the block's iterations spent / BL; recorded with each step."""
    seen = []

    class Spy(TopK):
        def select(self, obs):
            seen.append(obs.setting.clone())
            return super().select(obs)
    probs = tiny_problems("chain", 3, seed=0)
    ids, am = prompts_of(tiny, probs)
    temps = torch.tensor([0.0, 0.5, 0.0])
    r = generate(tiny, Spy(32), ids, am, 32, 8, temperature=temps, record=READS)
    assert all(s.dtype == torch.float32 and s.shape[1] == 3 for s in seen)
    first = seen[0]
    assert torch.allclose(first, torch.tensor([[0.25, 0.0, 0.0], [0.25, 0.5, 0.0], [0.25, 0.0, 0.0]]))
    # one of the block's 8 iterations spent
    assert torch.allclose(seen[1][:, 2], torch.full((3,), 1 / 8))
    assert torch.equal(r.steps[0]["setting"], first)


def test_diagnostic_orders_answer_first_left_to_right_and_values():
    from support.pretrain import Order
    x0 = torch.tensor([[3, 4, 9, 5, 2, 2]])                     # 9 plays '#': the answer slot starts there
    o = Obs(x0, torch.full((1, 6), 0.5), torch.ones(1, 6, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool),
            torch.zeros(1), torch.zeros(1, dtype=torch.long), 1, row_keys(0, torch.arange(1)))
    assert Order(9, "answer-first").act(o).unmask.nonzero()[:, 1].tolist() == [2, 3, 4, 5]   # step 1: the answer and padding
    assert Order(9, "left-to-right").act(o).unmask.nonzero()[:, 1].tolist() == [0]          # left to right: the first mask
    o.t = torch.tensor([0.1])
    o.cand[0, :1] = False
    assert Order(9, "answer-first").act(o).unmask.nonzero()[:, 1].tolist() == [1]           # later steps: left to right
    # values: two steps "+dvf" then '#', the answer, padding. Step 1 takes everything but the values (2 and 6) and
    # the answer (9), plus the first value; then the second value, then the answer
    x0 = torch.tensor([[10, 3, 4, 11, 10, 3, 5, 11, 9, 5, 2, 2]])
    o = Obs(x0, torch.full((1, 12), 0.5), torch.ones(1, 12, dtype=torch.bool), torch.ones(1, 12, dtype=torch.bool),
            torch.zeros(1), torch.zeros(1, dtype=torch.long), 1, row_keys(0, torch.arange(1)))
    pick = Order(9, "values").act(o).unmask
    assert pick.nonzero()[:, 1].tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 10, 11]
    o.cand &= ~pick
    assert Order(9, "values").act(o).unmask.nonzero()[:, 1].tolist() == [6]
    o.cand[0, 6] = False
    assert Order(9, "values").act(o).unmask.nonzero()[:, 1].tolist() == [9]


def test_position_calibrated_by_hand():
    # pc: exp(-lam d) * conf. conf [0.5, 0.6, 0.9, 0.95] at lam 0.25 -> [0.5, 0.467, 0.546, 0.449]: one of 4 steps
    # of 4 masks takes 1, the position-weighted best (2); lam 0 is top-k (3), a large lam is left to right (0)
    conf = [[0.5, 0.6, 0.9, 0.95]]
    assert picked(parse_policy("pc:lam=0.25:steps=4"), obs(conf)) == [[2]]
    assert picked(parse_policy("pc:lam=0:steps=4"), obs(conf)) == [[3]]
    assert picked(parse_policy("pc:lam=5:steps=4"), obs(conf)) == [[0]]
    assert picked(parse_policy("pc:lam=0.25:steps=2"), obs(conf)) == [[0, 2]]     # 2 per step: 0.546, then 0.5


def test_eos_damping_by_hand():
    # conf [0.99 eos, 0.99 eos, 0.6, 0.5]; g 0.4 at the first of 4 steps: the eos confs become 0.396 < 0.6
    o = obs([[0.99, 0.99, 0.6, 0.5]])
    o.eos = torch.tensor([[True, True, False, False]])
    pol = parse_policy("eosdamp:g=0.4:steps=4")
    assert pol.needs == ("eos",) and picked(pol, o) == [[2]]
    assert picked(parse_policy("topk:steps=4"), o) == [[0]]                      # undamped: the padding first
    o.t = torch.tensor([3 / 4])                                                   # the last step (3 of 0..3): factor 1
    assert picked(pol, o) == [[0]]
    o.t = torch.tensor([1 / 4])                                                   # step 1: 0.4 + 0.6 / 3 = 0.6 -> 0.594
    assert picked(pol, o) == [[2]]


def test_eos_observation_in_the_env(tiny):
    seen = []

    class Spy(TopK):
        def select(self, o):
            seen.append((o.eos.clone(), o.x0.clone()))
            return super().select(o)
    ids, am = prompts_of(tiny, tiny_problems("chain", 3, seed=0))
    spy = Spy(4)
    spy.needs = ("eos",)
    generate(tiny, spy, ids, am, 32, 32)
    eos, x0 = seen[0]
    assert torch.equal(eos, x0 == tiny.eos_id) and eos.any()


def test_the_forward_memo_shares_states_across_policies_and_changes_nothing(tiny):
    """eval.py keeps every state's forward (ForwardMemo) and reuses it for the setting's later policies (and its
    other block lengths): the rows are those of fresh runs, the model runs exactly once per distinct state, and
    nothing is stored at temperature > 0 or with a KV cache (where a forward also fills the cache)."""
    from steps import ForwardMemo
    from decode import evaluate
    probs = tiny_problems("chain", 10, seed=3)
    rows_in = []
    real = tiny.logits
    tiny.logits = lambda x, *a, **k: rows_in.append(x.shape[0]) or real(x, *a, **k)
    try:
        specs = [("margin:steps=8", 16), ("topk:steps=4", 16), ("entropy:steps=16", 16), ("threshold:0.9", 16),
                 ("threshold:0.95", 16), ("eb:gamma=0.1", 16), ("topk:steps=8", 4), ("topk:steps=16", 16)]
        fresh, states = [], set()
        for s, BL in specs:
            seen = []
            tiny.logits = lambda x, *a, **k: seen.append(x) or real(x, *a, **k)
            fresh.append(evaluate(tiny, parse_policy(s), probs, "chain", 16, BL, 4, progress=False, keep=10))
            states |= {r.numpy().tobytes() for x in seen for r in x}
        tiny.logits = lambda x, *a, **k: rows_in.append(x.shape[0]) or real(x, *a, **k)
        memo = ForwardMemo(needs=("margin", "entropy"))   # what the policies ask for, as eval.py passes it
        shared = [evaluate(tiny, parse_policy(s), probs, "chain", 16, BL, 4, progress=False, keep=10, memo=memo)
                  for s, BL in specs]
        n_fresh = sum(r["mean_nfe"] * r["n"] for r, _ in fresh)
        assert sum(rows_in) == memo.misses == len(states) < n_fresh / 2      # each distinct state once
        assert memo.hits + memo.misses == n_fresh
        for (a, sa), (b, sb) in zip(fresh, shared):
            # wall time, not the rows
            clock = ("seconds", "tokens_per_second")
            assert {k: v for k, v in a.items() if k not in clock} == {k: v for k, v in b.items() if k not in clock}
            assert all(torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(sa, sb))
        for kw in (dict(temperature=1.0), dict(cache="prefix")):
            memo = ForwardMemo()
            evaluate(tiny, parse_policy("topk:steps=4"), probs, "chain", 16, 8, 4, progress=False, memo=memo, **kw)
            assert not memo.table and memo.hits + memo.misses == 0
        memo = ForwardMemo(max_bytes=0)     # over budget: every state computed, nothing kept, the same rows
        again = evaluate(tiny, parse_policy("threshold:0.9"), probs, "chain", 16, 16, 4, progress=False, memo=memo)[0]
        assert not memo.table and again["accuracy"] == fresh[3][0]["accuracy"]
        memo = ForwardMemo()
        evaluate(tiny, parse_policy("threshold:0.9"), probs, "chain", 16, 16, 4, progress=False, memo=memo)
        with pytest.raises(ValueError, match="one set of prompts"):    # the same row keys, other problems
            evaluate(tiny, parse_policy("threshold:0.9"), tiny_problems("chain", 10, seed=4), "chain", 16, 16, 4,
                     progress=False, memo=memo)
    finally:
        tiny.logits = real


def test_a_new_heuristic_is_one_class(tiny_path, tmp_path):
    """Adding a hand rule is one class in policy.py's grammar: declared once, it is parsed by every CLI, swept by
    eval.py and listed in the registry."""
    import eval as ev
    import sample
    from common.specs import Arg
    from policy import RULES, Heuristic, rank_select, spec_forms

    class Leftmost(Heuristic):
        """Reveal the n leftmost candidates."""
        name, args = "leftmost", (Arg("n", "N", int, grid=(1, 2)),)

        def select(self, obs):
            score = -torch.arange(obs.cand.shape[1], dtype=torch.float32).expand(obs.cand.shape)
            return rank_select(score, obs.cand, torch.full((obs.cand.shape[0],), self.n))
    try:
        assert "leftmost:n=N" in spec_forms()
        setup = ["--model", tiny_path, "--gen-length", "16", "--n", "4"]
        rows = sample.main(setup + ["--block-length", "8", "--policies", "leftmost:n=2,leftmost:1"])
        assert [(r["policy"], r["mean_nfe"]) for r in rows] == [("leftmost:n=2", 8), ("leftmost:n=1", 16)]
        rows = ev.main(setup + ["--block-lengths", "8", "--sweep", "leftmost", "--out", str(tmp_path / "r.json")])
        assert sorted((r["policy"], r["mean_nfe"]) for r in rows) == [("leftmost:n=1", 16), ("leftmost:n=2", 8)]
        with pytest.raises(SystemExit, match="n must be a positive integer"):
            sample.main(setup + ["--policies", "leftmost:n=0"])
    finally:
        RULES.pop("leftmost")
