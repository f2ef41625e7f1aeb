"""KV caches (env.py --cache prefix|dual): the cached forward is exact where it must be, every policy runs, trains
and evaluates with each mode, and full diffusion with a cache is refused."""
import json

import pytest
import torch

from decode import parse_policy
from env import CACHES, generate, row_keys
from steps import CachedStep
from policy import READS, Learned, LearnedPolicy
from tasks import prompts_of
from tasks import tiny_problems


@pytest.mark.parametrize("which", ["tiny", "llada_dir", "dream_dir"])
def test_cached_span_equals_the_full_forward(request, which):
    """With the cache taken from the same buffer, computing only a span gives the full forward's logits there:
    the cache mechanics are exact; what makes a cache approximate is only that the buffer changes after it."""
    from model import load_dllm
    d = request.getfixturevalue("tiny") if which == "tiny" else load_dllm(request.getfixturevalue(which), device="cpu")
    g = torch.Generator().manual_seed(0)
    B, P, L = 3, 7, 12
    x = torch.randint(3, 20, (B, P + L), generator=g)
    x[:, P + 5:] = d.mask_id
    am = torch.ones_like(x)
    am[1, :3] = 0                                                      # a left-padded row
    full, kv = d.logits(x, am, start=P, return_kv=True)               # (B, L, V)
    torch.testing.assert_close(full, d.logits(x, am, start=P))        # the refresh step is the uncached step
    assert len(kv) == d.net.c.n_layers and kv[0][0].shape[2] == P + L  # every position's keys
    for lo, hi, run_to in [(4, 8, 12), (4, 12, 12), (0, 4, 12), (4, 8, None), (0, 4, None), (8, 12, None)]:
        part = d.logits_span(x, am, P, lo, hi, kv, run_to)           # prefix (run to the end) and dual spans
        torch.testing.assert_close(part, full[:, lo:hi], rtol=1e-4, atol=1e-5)


def run(tiny, policy, cache, L=32, BL=8, n=12, record=()):
    ids, am = prompts_of(tiny, tiny_problems("chain", n, seed=0))
    return generate(tiny, policy, ids, am, L, BL, keys=row_keys(0, torch.arange(n)), cache=cache, record=record)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_one_step_per_block_is_exact(tiny, cache):
    """Every step is a block's first step when each block is filled in one step: cached == uncached, token for token."""
    pol = parse_policy("topk:steps=4")
    a, b = run(tiny, pol, "none"), run(tiny, pol, cache)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nfe, b.nfe) and torch.equal(a.order, b.order)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("spec", ["threshold:0.7", "topk:steps=16", "random:steps=8", "margin:steps=8",
                                  "entropy:steps=8", "factor:2", "eb:gamma=0.3", "learned"])
def test_every_policy_runs_with_a_cache(tiny, cache, spec):
    torch.manual_seed(0)
    pol = Learned(LearnedPolicy().eval()) if spec == "learned" else parse_policy(spec)
    r = run(tiny, pol, cache, record=READS if spec == "learned" else ())
    assert (r.nfe >= 4).all() and (r.nfe <= 32).all()                  # at least one step per block, BL per block at most
    blk = torch.arange(32) // 8
    for row in r.order:                                                # still semi-AR: blocks left to right
        seen = row[row > 0]
        assert len(seen) and all(row[blk == j][row[blk == j] > 0].max() < row[blk == j + 1][row[blk == j + 1] > 0].min()
                                 for j in range(3) if (row[blk == j] > 0).any() and (row[blk == j + 1] > 0).any())
    if spec == "learned":
        assert r.steps and all(s["logp"] is not None and s["conf"].shape[1] == 32 for s in r.steps)


def test_stale_confidences_outside_what_a_step_recomputes(tiny):
    """dual: a later step recomputes only its block, so the other positions keep the values of the block's first step."""
    ids, am = prompts_of(tiny, tiny_problems("chain", 2, seed=0))
    P, L, BL = ids.shape[1], 32, 8
    x = torch.cat([ids, torch.full((2, L), tiny.mask_id)], 1)
    am = torch.cat([am, torch.ones((2, L), dtype=am.dtype)], 1)
    rows = torch.arange(2)
    step = CachedStep(tiny, P, L, BL, "dual", ())
    _, c1, _, _ = step(x, am, rows, 0, 0.0, None)                       # block 0's first step: the full forward
    first = c1.clone()
    x[:, P:P + 3] = tiny.tokenizer.encode("7+2")[0]                    # reveal some tokens of block 0
    _, c2, _, _ = step(x, am, rows, 0, 0.0, None)
    assert torch.equal(c2[:, BL:], first[:, BL:]) and not torch.equal(c2[:, :BL], first[:, :BL])
    step.mode = "prefix"                                               # runs to the end, reads the block only
    _, c3, _, _ = step(x, am, rows[1:], 0, 0.0, None)                  # one row still at work: its part of the cache
    assert torch.equal(c3[:, BL:], first[1:, BL:]) and torch.allclose(c3[:, :BL], c2[1:, :BL], atol=0.05)
    with pytest.raises(RuntimeError, match="starts each block with all of its rows"):
        step(x, am, rows[1:], 1, 0.0, None)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("spec", ["threshold:0.9", "learned"])
def test_one_forward_a_step_and_the_same_rows_as_per_row_blocks(tiny, cache, spec):
    """generate keeps a cached batch in one block (a row that fills its block early waits, at no NFE): every step is
    one forward, and each row's tokens and NFE are those it gets decoded alone."""
    torch.manual_seed(0)
    pol = Learned(LearnedPolicy().eval()) if spec == "learned" else parse_policy(spec)
    n = 12
    calls = []
    real = tiny.logits_span
    tiny.logits_span = lambda x, *a, **k: (calls.append(x.shape[0]), real(x, *a, **k))[1]
    try:
        batch = run(tiny, pol, cache, n=n)
    finally:
        tiny.logits_span = real
    steps_with_rows = batch.forwards
    assert batch.forwards == len(calls) + 4                            # every cached step one forward, + 4 refreshes
    assert max(calls) <= n and min(calls) >= 1 and steps_with_rows >= batch.nfe.max()
    ids, am = prompts_of(tiny, tiny_problems("chain", n, seed=0))
    for i in (0, 5, 11):
        alone = generate(tiny, pol, ids[i:i + 1], am[i:i + 1], 32, 8, keys=row_keys(0, torch.tensor([i])), cache=cache)
        assert torch.equal(alone.tokens[0], batch.tokens[i]) and alone.nfe[0] == batch.nfe[i]


def test_refusals(tiny):
    pol = parse_policy("threshold:0.9")
    with pytest.raises(ValueError, match="needs semi-autoregressive"):
        run(tiny, pol, "prefix", L=32, BL=32)
    with pytest.raises(ValueError, match="unknown cache"):
        run(tiny, pol, "triple")
    assert CACHES == ("none", "prefix", "dual")


def test_clis_with_a_cache(tiny_path, tmp_path):
    import eval as ev
    import sample
    import train
    rows = sample.main(["--model", tiny_path, "--policies", "threshold:0.9,topk:steps=4", "--gen-length", "16",
                        "--block-length", "8", "--n", "6", "--cache", "prefix", "--json", str(tmp_path / "s.json")])
    assert [r["cache"] for r in rows] == ["prefix", "prefix"] and rows[1]["mean_nfe"] == 4
    with pytest.raises(SystemExit, match="needs semi-autoregressive"):
        sample.main(["--model", tiny_path, "--policies", "threshold:0.9", "--cache", "dual"])
    out = str(tmp_path / "p.pt")
    train.train(train.TrainConfig(model=tiny_path, gen_length=16, block_length=8, prompts_per_step=2, group_size=2,
                                  steps=2, eval_every=0, out=out, cache="prefix"))
    with pytest.raises(SystemExit, match="cache: 'prefix' there, 'none' here"):
        train.main(["--model", tiny_path, "--gen-length", "16", "--block-length", "8", "--prompts-per-step", "2",
                    "--group-size", "2", "--steps", "3", "--out", out, "--resume"])
    ev.main(["--model", tiny_path, "--gen-length", "16", "--block-lengths", "8", "--policies", f"{out},threshold:0.9",
             "--n", "6", "--cache", "dual", "--out", str(tmp_path / "rows.json")])
    got = json.load(open(tmp_path / "rows.json"))
    assert len(got) == 2 and all(r["cache"] == "dual" for r in got)
    ev.main(["--model", tiny_path, "--gen-length", "16", "--block-lengths", "8", "--policies", "threshold:0.9",
             "--n", "6", "--out", str(tmp_path / "rows.json")])
    assert len(json.load(open(tmp_path / "rows.json"))) == 3          # the uncached row is another row
