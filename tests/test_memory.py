"""Memory at real scale, checked on small shapes: a kept K/V owns its bytes, the cache is compacted (not copied) as
rows leave a block, Dream's grouped K/V are never expanded, no padding mask reaches attention when no row is padded,
T > 0 noise is drawn a few rows at a time with the same tokens, the policy's log-probabilities agree between the
rollouts and the update under autocast, and the memory plan (common/memory.py) matches a measured peak and refuses
what will not fit in one line."""
import json
import os
import resource
import subprocess
import sys
import time

import pytest
import torch

import steps
import model
from conftest import ROOT
from decode import parse_policy
from env import generate, row_keys
from steps import token_stats
from model import DLLM, ModelConfig, Transformer
from policy import READS, Knobs, Learned, LearnedPolicy, PolicyConfig
from tasks import prompts_of, tiny_problems


def random_dllm(merge=False, kv_heads=4, shift=False, V=64):
    torch.manual_seed(0)
    net = Transformer(ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, n_kv_heads=kv_heads, mlp_hidden=64,
                                  qkv_bias=kv_heads < 4))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    if merge:
        net.merge_projections()
    return DLLM(net, None, "r", mask_id=V - 1, eos_id=1, pad_id=0, shift=shift)


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_a_kept_cache_owns_its_bytes(merge, kv_heads):
    """Merged q/k/v make V a view of the whole projection's output: the cache keeps a copy that owns its bytes."""
    d = random_dllm(merge, kv_heads, shift=kv_heads < 4)
    x = torch.randint(2, 60, (3, 20))
    _, kv = d.logits(x, None, start=8, return_kv=True)
    for K, V in kv:
        assert K.shape[1] == V.shape[1] == kv_heads
        for t in (K, V):
            assert t.untyped_storage().nbytes() == t.nbytes


def test_grouped_kv_heads_reach_attention_unexpanded(monkeypatch):
    seen, sdpa = [], model.F.scaled_dot_product_attention
    monkeypatch.setattr(model.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(k.shape[1]) or sdpa(q, k, v, **kw))
    d = random_dllm(kv_heads=2, shift=True)
    generate(d, parse_policy("topk:steps=8"), torch.randint(2, 60, (2, 6)), torch.ones(2, 6, dtype=torch.long), 16, 8,
             cache="dual")
    assert seen and set(seen) == {2}


@pytest.mark.parametrize("padded", [False, True])
def test_no_padding_mask_reaches_attention_unless_a_row_is_padded(monkeypatch, padded):
    masks, sdpa = [], model.F.scaled_dot_product_attention
    monkeypatch.setattr(model.F, "scaled_dot_product_attention",
                        lambda q, k, v, attn_mask=None: masks.append(attn_mask is None) or sdpa(q, k, v, attn_mask=attn_mask))
    d = random_dllm()
    am = torch.ones(3, 6, dtype=torch.long)
    am[1, :2] = 0 if padded else 1
    for cache in ("none", "dual"):
        generate(d, parse_policy("threshold:0.5"), torch.randint(2, 60, (3, 6)), am, 16, 8, cache=cache)
    assert masks and set(masks) == {not padded}


def rows_that_left(r, B, L, BL):
    """Per block, the rows that finished it before the last one did (they wait while the others work)."""
    left = 0
    done_at = torch.stack([r.order[:, j * BL:(j + 1) * BL].max(1).values for j in range(L // BL)], 1)   # (B, blocks)
    steps = torch.diff(done_at, dim=1, prepend=torch.zeros(B, 1, dtype=torch.long))
    for j in range(L // BL):
        left += (steps[:, j] < steps[:, j].max()).sum().item()
    return left


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_the_cache_is_compacted_once_per_leaving_not_copied_per_step(tiny, cache):
    ids, am = prompts_of(tiny, tiny_problems("chain", 24, seed=0))
    r = generate(tiny, parse_policy("threshold:0.9"), ids, am, 32, 8, keys=row_keys(0, torch.arange(24)), cache=cache)
    left = rows_that_left(r, 24, 32, 8)
    assert left > 0 and 1 <= r.cache_copies <= left
    for i in (0, 5, 23):   # the rows are those of each row decoded alone
        one = generate(tiny, parse_policy("threshold:0.9"), ids[i:i + 1], am[i:i + 1], 32, 8,
                       keys=row_keys(0, torch.tensor([i])), cache=cache)
        assert torch.equal(one.tokens[0], r.tokens[i]) and one.nfe[0] == r.nfe[i]


@pytest.mark.parametrize("T", [0.3, 0.8, 2.0])
def test_noise_in_row_chunks_gives_the_same_tokens(monkeypatch, T):
    """The Gumbel draw a few rows at a time (steps.NOISE_BYTES) samples what one batch draw did."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 7, 50, generator=g) * 3
    seeds = torch.tensor([3, 1, 4, 1, 5]) * 1_000_003
    u = torch.stack([torch.rand((7, 50), dtype=torch.float64, generator=torch.Generator().manual_seed(int(s)))
                     for s in seeds])
    whole = (logits.double() / T - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
    for rows in (1, 2, 5):
        monkeypatch.setattr(steps, "NOISE_BYTES", rows * 7 * 50 * 8)
        x0, conf, _, _ = token_stats(logits, T, seeds)
        assert torch.equal(x0, whole)
        assert torch.equal(conf, torch.softmax(logits, -1).gather(-1, whole[..., None]).squeeze(-1))


def test_the_first_update_ratio_is_one_under_autocast(tiny):
    """The policy runs in float32 whatever autocast says: its log-probabilities in the rollouts (one step's rows) and
    in the update (all steps at once) agree, so the first update's ratio is 1."""
    from grpo import collate, step_log_prob
    ids, am = prompts_of(tiny, tiny_problems("chain", 16, seed=0))
    torch.manual_seed(0)
    net = LearnedPolicy(PolicyConfig(init_bias=0.0)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = generate(tiny, Learned(net, Knobs(fallback=False)), ids, am, 32, 8, record=READS,
                     cache="dual")
        batch = collate(r.steps)
        _, logp = step_log_prob(net, batch, slice(0, len(batch["row"])))
    assert (logp - batch["logp_old"]).abs().max() < 1e-3 and logp.dtype == torch.float32


PEAK = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from common.memory import decode_plan, grpo_plan
from env import generate
from model import DLLM, ModelConfig, Transformer
from policy import Knobs, Learned, LearnedPolicy, PolicyConfig
from support.bench import grpo_round
kind, cache, T = {kind!r}, {cache!r}, {T}
c = ModelConfig(vocab_size=16000, d_model=256, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=704)
torch.manual_seed(0)
d = DLLM(Transformer(c).merge_projections(), None, "r", mask_id=c.vocab_size - 1, eos_id=1, pad_id=0)
P, L, BL = 48, 64, 16
if kind == "decode":
    ids = torch.randint(2, 1000, (16, P))
    generate(d, Learned(LearnedPolicy(PolicyConfig(init_bias=2.0)).eval()), ids, torch.ones_like(ids), L, BL, T, cache=cache)
    plan = decode_plan(c, 4, 16, P, L, cache, T)
else:
    ids = torch.randint(2, 1000, (2, P))
    grpo_round(d, ids, torch.ones_like(ids), 4, L, BL, cache, T, chunk=4 * L, init_bias=2.0)
    plan = grpo_plan(c, 4, 2, 4, 1, P, L, cache, T, chunk=4 * L)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]   # this image's peak (ru_maxrss keeps the parent's)
print(json.dumps(dict(peak=int(hwm.split()[1]) * 1024, plan=plan.total)))
"""


# every decoding mode; a GRPO round's plan is its update in each of them (the rollouts' terms are
# the decodes'), so two rounds: uncached at T 0 (the forward memo) and the dual cache at T 0.8
PEAK_RUNS = [("decode", cache, T) for cache in ("none", "prefix", "dual") for T in (0.0, 0.8)]
PEAK_RUNS += [("grpo", "none", 0.0), ("grpo", "dual", 0.8)]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="reads the peak from /proc (Linux)")
def test_the_plan_matches_the_measured_peak():
    """A decode of 16 buffers and a GRPO round of 2 x (4 + 1) rollouts (vocabulary 16K, L 64) on a
    random model (PEAK_RUNS), each in its own process, two at a time (one thread each): the
    process's peak resident memory within 25% of the plan. glibc keeps freed heap pages unless told
    to trim them (MALLOC_TRIM_THRESHOLD_=0): the plan counts what tensors hold, not what the
    allocator keeps. (One test, so that a parallel run measures once.)"""
    from concurrent.futures import ThreadPoolExecutor

    def one(run):
        kind, cache, T = run
        out = subprocess.run([sys.executable, "-c", PEAK.format(root=ROOT, kind=kind, cache=cache, T=T)],
                             capture_output=True, text=True, env=dict(os.environ, MALLOC_TRIM_THRESHOLD_="0"), timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    with ThreadPoolExecutor(2) as pool:
        got = dict(zip(PEAK_RUNS, pool.map(one, PEAK_RUNS)))
    off = {run: r for run, r in got.items() if not 0.75 <= r["peak"] / r["plan"] <= 1.25}
    assert len(got) == len(PEAK_RUNS) and not off, off


def test_the_paper_round_fits_80_gb_with_every_cache():
    from support.bench import main
    rows = main(["--plan", "--model", "llada", "--device-memory", "80"])
    grpo = {(r["cache"], r["temperature"]): r for r in rows if r["run"].startswith("GRPO")}
    assert set(grpo) == {(c, T) for c in ("none", "prefix", "dual") for T in (0.0, 0.8)}
    assert all(r["fits"] and r["gib"] < 70 for r in grpo.values()), grpo


@pytest.mark.parametrize("argv", [["-m", "support.pretrain", "--gen-length", "100000"],
                                  ["-m", "support.pretrain", "--batch-size", "1000000"],
                                  ["-m", "support.bench", "--shape", "llada", "--device", "cpu"],
                                  ["sample.py", "--gen-length", "1000", "--block-length", "1000", "--batch-size", "100000",
                                   "--n", "100000", "--temperature", "0.8"]])
def test_what_will_not_fit_is_refused_in_one_line_before_it_allocates(argv, tmp_path):
    argv = argv + (["--out-dir", str(tmp_path)] if "support.pretrain" in argv else [])
    t0 = time.time()
    out = subprocess.run([sys.executable] + argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "GiB" in lines[0] and "lower --" in lines[0], out.stderr[-2000:]
    assert time.time() - t0 < 30
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 3 * 2 ** 20   # KB: under 3 GB


def test_imitate_decodes_with_the_runs_cache(monkeypatch, tmp_path):
    import train
    caches = []
    real = train.generate
    monkeypatch.setattr(train, "generate", lambda *a, **k: caches.append(k.get("cache")) or real(*a, **k))
    train.main(["--imitate", "threshold:0.9", "--imitate-steps", "1", "--imitate-problems", "4", "--steps", "1",
                "--prompts-per-step", "2", "--group-size", "2", "--eval-every", "0", "--cache", "dual",
                "--out", str(tmp_path / "p.pt")])
    assert caches and set(caches) == {"dual"}
