"""GRPO (train.py): rewards, advantages, the loss by hand, the full loop, resume, multi-process."""
import json
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT
from actions import bernoulli_log_prob
from conftest import save_policy
from grpo import advantages, concat_batches, grpo_loss, grpo_objective, old_expert_log_probs, rewards
from policy import READS, LearnedPolicy
from train import TrainConfig


def test_rewards_and_advantages():
    c, nfe = torch.tensor([1, 1, 0, 1]), torch.tensor([8, 32, 4, 1])
    torch.testing.assert_close(rewards(c, nfe, 32, 0.0, "mult"), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(rewards(c, nfe, 32, 1.0, "mult"), torch.tensor([25 / 32, 1 / 32, 0.0, 1.0]))
    torch.testing.assert_close(rewards(c, nfe, 32, 3.0, "mult"), torch.tensor([(25 / 32) ** 3, (1 / 32) ** 3, 0.0, 1.0]))
    torch.testing.assert_close(rewards(c, nfe, 32, 1.0, "additive"), torch.tensor([0.75, 0.0, -0.125, 1 - 1 / 32]))
    a = advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), G=2)
    torch.testing.assert_close(a, torch.tensor([0.5, -0.5, 0.0, 0.0]))          # mean-centred, no std
    a = advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), G=2, std=True)
    torch.testing.assert_close(a, torch.tensor([0.7071, -0.7071, 0.7071, -0.7071]), rtol=1e-3, atol=1e-3)


def fake_batch(S=10, L=6, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cand = torch.rand(S, L, generator=g) < 0.7
    return dict(conf=torch.rand(S, L, generator=g), masked=cand.clone(), cand=cand, t=torch.rand(S, generator=g),
                action=(torch.rand(S, L, generator=g) < 0.3) & cand, row=torch.arange(S) % n,
                expert=torch.zeros(S, dtype=torch.bool), choices=cand, order=None,
                reads=["conf", "masked", "t"])


def steps_of(batch, n):
    """Each step's rollout's step count (S,)."""
    return torch.bincount(batch["row"], minlength=n).float()[batch["row"]]


def test_grpo_objective_by_hand():
    """Section 5: per rollout the mean over its steps of -min(rho A, clip(rho) A), then the mean over rollouts."""
    adv = torch.tensor([1.0, -2.0, 0.5])
    row = torch.arange(10) % 3
    logp_old = torch.zeros(10)
    steps = torch.bincount(row).float()[row]
    # on-policy (rho = 1): the loss is -mean over rollouts of A (each rollout's steps share its A)
    loss = grpo_objective(torch.zeros(10), logp_old, adv[row], steps, 3, 0.5)
    assert abs(loss.item() - (-adv.mean().item())) < 1e-6
    # off-policy: ratios 2 and 0.1 are clipped to 1.5 and 0.5 where that lowers the objective
    rho = torch.tensor([2.0, 0.1] * 5)
    a = adv[row]
    per = -torch.min(rho * a, rho.clamp(0.5, 1.5) * a)
    want = sum(per[row == r].mean() for r in range(3)) / 3
    loss = grpo_objective(rho.log(), logp_old, a, steps, 3, 0.5)
    assert abs(loss.item() - want.item()) < 1e-6
    # any split of the steps adds up to the whole
    parts = grpo_objective(rho.log()[:4], logp_old[:4], a[:4], steps[:4], 3, 0.5) + \
        grpo_objective(rho.log()[4:], logp_old[4:], a[4:], steps[4:], 3, 0.5)
    assert abs(parts.item() - loss.item()) < 1e-6


def test_the_chunked_loss_is_the_objective(monkeypatch):
    """grpo_loss (chunks, no backward for zero-advantage rollouts) gives the loss, clip fraction, entropy and gradient
    of grpo_objective over the whole batch in one pass; the zero-advantage steps get a forward without gradients
    (metrics) or nothing at all."""
    import grpo
    from actions import bernoulli_entropy
    torch.manual_seed(0)
    pol = LearnedPolicy()
    with torch.no_grad():
        pol.head.weight.normal_(0, 0.5)
    b, adv = fake_batch(S=20, n=4), torch.tensor([1.0, 0.0, -0.5, 0.0])
    with torch.no_grad():   # off-policy by a spread of ratios, so that some steps are clipped and some not
        b["logp_old"] = (bernoulli_log_prob(pol(b["conf"], b["masked"], b["t"]), b["cand"], b["action"])
                         + 0.3 * torch.randn(20, generator=torch.Generator().manual_seed(1)))
    # the reference: the objective over every step at once
    pol.zero_grad()
    logits, logp = grpo.step_log_prob(pol, b, slice(None))
    ref = grpo_objective(logp, b["logp_old"], adv[b["row"]], steps_of(b, 4), 4, 0.2)
    ref.backward()
    ref_grads = torch.cat([p.grad.flatten() for p in pol.parameters() if p.grad is not None])
    ref_clip = ((torch.exp(logp - b["logp_old"]) - 1).abs() > 0.2).float().mean().item()
    ref_ent = bernoulli_entropy(logits.detach(), b["cand"]).item()
    seen, real = [], grpo.step_log_prob
    monkeypatch.setattr(grpo, "step_log_prob", lambda net, batch, sl, *a: seen.append(
        (torch.arange(len(batch["row"]))[sl], torch.is_grad_enabled())) or real(net, batch, sl, *a))
    out = {}
    for name, kw in (("all", dict(metrics=True)), ("no metrics", dict(metrics=False))):
        pol.zero_grad()
        seen.clear()
        out[name] = grpo_loss(pol, b, adv, 4, 0.2, chunk=3, **kw)
        grads = torch.cat([p.grad.flatten() for p in pol.parameters() if p.grad is not None])
        with_grad = torch.cat([i for i, g in seen if g])
        assert sorted(b["row"][with_grad].unique().tolist()) == [0, 2]           # backward: the nonzero rollouts
        assert len(with_grad) == int((adv[b["row"]] != 0).sum())
        assert len(seen) == (8 if kw["metrics"] else 4)                         # 10 live steps in chunks of 3, 10 zero
        out[name] = (*out[name], grads)
    loss, clip, ent, grads = out["all"]
    assert abs(loss - ref.item()) < 1e-6 and abs(clip - ref_clip) < 1e-6 and 0 < clip < 1 and abs(ent - ref_ent) < 1e-5
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5 * ref_grads.abs().max().item())
    assert torch.equal(out["no metrics"][3], grads)                           # the same backward, to the bit
    assert out["no metrics"][0] == loss


def grade_by(monkeypatch, fn):
    """Grade train.py's rollouts by fn(task, problem, text) instead of the task's grader."""
    monkeypatch.setattr(train, "grade_many", lambda task, ps, texts, *_: [fn(task, p, t) for p, t in zip(ps, texts)])


def capture_init(monkeypatch):
    """The policy weights train() starts from (its init follows the seed and the dLLM load)."""
    inits, orig = [], train.LearnedPolicy

    def make(c):
        p = orig(c)
        inits.append({k: v.clone() for k, v in p.state_dict().items()})
        return p
    monkeypatch.setattr(train, "LearnedPolicy", make)
    return inits


def moved(inits, policy):
    return any(not torch.equal(inits[0][k], v) for k, v in policy.state_dict().items())


def cfg(tiny_path, out, **kw):
    base = dict(model=tiny_path, task="chain", gen_length=16, block_length=16, prompts_per_step=4, group_size=4,
                steps=3, lr=3e-3, warmup=1, eval_every=0, save_every=1, out=str(out), batch_size=64)
    base.update(kw)
    return TrainConfig(**base)


def test_full_loop_changes_policy_and_writes_checkpoint(tiny_path, tmp_path, monkeypatch):
    # a 60-step dLLM is rarely right, so grade by a fixed rule that varies across rollouts: the groups then
    # always carry advantage, and rollout -> reward -> loss -> optimizer step must move the policy
    grade_by(monkeypatch, lambda task, p, text: len(text) % 2 == 0)
    inits = capture_init(monkeypatch)
    pol, m = train.train(cfg(tiny_path, tmp_path / "ck.pt", steps=2))
    assert moved(inits, pol)
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert ck["step"] == 2 and ck["args"]["gen_length"] == 16 and "optimizer" in ck and ck["policy_config"]["width"] == 128
    assert ck["policy_config"]["init_bias"] == -2.0
    log = [json.loads(l) for l in open(tmp_path / "ck.jsonl")]
    assert [r["step"] for r in log] == [1, 2]
    assert {"reward", "accuracy", "nfe", "zero_adv", "entropy", "clip_frac", "rollout_s", "update_s"} <= set(log[0])


def test_learns_known_optimum(tiny_path, tmp_path, monkeypatch):
    # every answer graded correct, alpha = 1: the optimum is to unmask all 8 positions in one step.
    # Started at unmask probability 0.5 (init bias 0) the NFE varies (about 4), so groups carry signal.
    grade_by(monkeypatch, lambda *a: True)
    pol, _ = train.train(cfg(tiny_path, tmp_path / "easy.pt", steps=15, alpha=1.0, lr=1e-2, gen_length=8,
                             block_length=8, save_every=100, init_bias=0.0))
    assert torch.load(tmp_path / "easy.pt", weights_only=True)["policy_config"]["init_bias"] == 0.0
    log = [json.loads(l) for l in open(tmp_path / "easy.jsonl")]
    assert log[0]["nfe"] > 3 and log[-1]["nfe"] < 2, [r["nfe"] for r in log]
    assert log[-1]["reward"] > log[0]["reward"]


def test_resume_reproduces_uninterrupted_run(tiny_path, tmp_path, monkeypatch):
    # additive reward: it varies with NFE even when every answer is wrong, so every step really updates
    inits = capture_init(monkeypatch)
    full, _ = train.train(cfg(tiny_path, tmp_path / "a.pt", steps=4, reward="additive", alpha=1.0))
    assert moved(inits, full)
    calls = {"n": 0}
    real_grade = train.grade_many

    def crash_in_step_3(task, problems, texts, *rest):
        calls["n"] += 1
        if calls["n"] > 2:                  # one batch of 16 rollouts per step: die during step 3
            raise KeyboardInterrupt
        return real_grade(task, problems, texts, *rest)
    monkeypatch.setattr(train, "grade_many", crash_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg(tiny_path, tmp_path / "b.pt", steps=4, reward="additive", alpha=1.0))
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(train, "grade_many", real_grade)
    resumed, _ = train.train(cfg(tiny_path, tmp_path / "b.pt", steps=4, reward="additive", alpha=1.0, resume=True))
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(ValueError, match="another setup.*block_length"):
        train.train(cfg(tiny_path, tmp_path / "b.pt", steps=5, block_length=4, reward="additive", alpha=1.0, resume=True))


def test_bad_flags_fail_cleanly(tmp_path):
    for args, msg in [(["--gen-length", "30", "--block-length", "8"], "must be a multiple"),
                      (["--reward", "chain"], "--reward must be one of mult, additive"),
                      (["--resume", "--out", str(tmp_path / "none.pt")], "no checkpoint"),
                      (["--out", str(tmp_path / "exists.pt")], "exists: pass --resume")]:
        (tmp_path / "exists.pt").write_bytes(b"a finished run")
        out = subprocess.run([sys.executable, "train.py", "--model", "nope.pt", *args], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode != 0 and msg in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "exists.pt").read_bytes() == b"a finished run"      # untouched


def test_torchrun_two_processes_match_one(tiny_path, tmp_path):
    """gloo, 2 ranks x 2 prompts == 1 process x 4 prompts: same rollouts (keyed noise), same update."""
    args = ["--model", tiny_path, "--gen-length", "16", "--block-length", "16", "--prompts-per-step", "4",
            "--group-size", "4", "--steps", "2", "--lr", "3e-3", "--warmup", "1", "--eval-every", "0",
            "--reward", "additive", "--alpha", "1"]   # rewards vary with NFE: the update is never skipped
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "train.py", *args, "--out", str(tmp_path / "one.pt")], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "train.py", *args, "--out", str(tmp_path / "two.pt")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "world 2" in two.stdout
    a = torch.load(tmp_path / "one.pt", weights_only=False)
    b = torch.load(tmp_path / "two.pt", weights_only=False)
    log = [json.loads(l) for l in open(tmp_path / "one.jsonl")]
    assert all(r["zero_adv"] < 1 and r["loss"] != 0 for r in log)               # real updates, never skipped
    for k in a["policy"]:
        torch.testing.assert_close(a["policy"][k], b["policy"][k], rtol=1e-4, atol=1e-6)
    assert a["metrics"]["nfe"] == pytest.approx(b["metrics"]["nfe"]) and a["metrics"]["reward"] == pytest.approx(b["metrics"]["reward"])


def test_alpha_range_trains_one_conditioned_policy(tiny_path, tmp_path, monkeypatch):
    """--alpha-range: each group draws its alpha, the rewards use it, the policy sees it and learns from it."""
    import eval as ev
    from common.checkpoints import read_checkpoint
    out = str(tmp_path / "cond.pt")
    seen, real = [], train.rewards
    monkeypatch.setattr(train, "rewards", lambda c, n, L, a, k: (seen.append(a), real(c, n, L, a, k))[1])
    grade_by(monkeypatch, lambda *a: True)      # every answer right: the reward is the NFE's, per alpha
    policy, _ = train.train(cfg(tiny_path, out, steps=4, alpha_range="0,10", init_bias=0.0, group_size=2))
    a = seen[0]
    assert a.shape == (8,) and torch.equal(a[0::2], a[1::2]) and len(set(a.tolist())) > 1   # one alpha per group
    ck = read_checkpoint(out)
    assert (ck["policy_config"]["alpha_lo"], ck["policy_config"]["alpha_hi"]) == (0.0, 10.0)
    assert ck["args"]["alpha_range"] == "0,10" and policy.alpha_mlp[2].weight.abs().sum() > 0   # the conditioning learned
    rows = ev.main(["--model", tiny_path, "--gen-length", "16", "--block-lengths", "16", "--policies", out,
                    "--alphas", "0,3,10", "--n", "4", "--out", str(tmp_path / "r.json")])
    assert sorted(r["policy"].split(":")[-1] for r in rows) == ["alpha=0", "alpha=10", "alpha=3"]
    assert all(r["trained"]["alpha_range"] == "0,10" for r in rows)
    with pytest.raises(SystemExit, match="is alpha-conditioned: pass --alphas"):
        ev.main(["--model", tiny_path, "--gen-length", "16", "--block-lengths", "16", "--policies", out, "--n", "4",
                 "--out", str(tmp_path / "q.json")])
    with pytest.raises(SystemExit, match="LO,HI"):
        train.main(["--alpha-range", "10", "--out", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit, match="0 <= LO < HI"):
        train.main(["--alpha-range", "5,1", "--out", str(tmp_path / "x.pt")])


def test_settings_are_drawn_per_group_and_read_by_the_policy(tiny_path, tmp_path, monkeypatch):
    """--block-lengths / --temperature-range: each prompt's group draws its block length from the set and its dLLM
    temperature from the range (a quarter at LO) by the prompt's index and the seed (a resumed run draws the same);
    its rollouts, the expert's included, decode in that setting with one noise key per group; the policy reads the
    setting; bad sets are refused in one line."""
    c = cfg(tiny_path, tmp_path / "t.pt", gen_length=16, block_length=16, block_lengths="4,8,16",
            temperature_range="0.2,0.9")
    BL, T = train.draw_settings(c, torch.arange(400))
    assert set(BL.tolist()) == {4, 8, 16} and all(0.2 <= t <= 0.9 for t in T.tolist())
    assert 0.15 < (T == 0.2).double().mean() < 0.35 and len(set(T.tolist())) > 250
    assert all(torch.equal(a, b) for a, b in zip((BL, T), train.draw_settings(c, torch.arange(400))))
    plain = train.draw_settings(cfg(tiny_path, tmp_path / "u.pt", temperature=0.3), torch.arange(5))
    assert plain[0].tolist() == [16] * 5 and plain[1].tolist() == [0.3] * 5
    seen, real = [], train.generate
    monkeypatch.setattr(train, "generate", lambda *a, **k: (seen.append((a[5], a[6].tolist(), k["noise_keys"])),
                                                            real(*a, **k))[1])
    grade_by(monkeypatch, lambda task, p, text: len(text) % 2 == 0)
    train.train(cfg(tiny_path, tmp_path / "t.pt", steps=1, block_lengths="4,8,16", temperature_range="0.2,0.9",
                    expert="threshold:0.9", eval_every=1, eval_n=4, task="chain"))
    BL, T = train.draw_settings(c, torch.arange(4))
    rollouts = seen[:2 * len(set(BL.tolist()))]
    # per block length: its groups' rows
    for bl, temps, noise in rollouts:
        groups = (BL == bl).nonzero().squeeze(1)
        n = len(temps) // len(groups)
        # G policy rows or 1 expert row
        assert temps == T[groups].repeat_interleave(n).tolist() and n in (4, 1)
        # a group's one key
        assert torch.equal(noise, noise.view(len(groups), n)[:, :1].expand(-1, n).reshape(-1))
    ck = torch.load(tmp_path / "t.pt", weights_only=True)
    assert ck["policy_config"]["setting"] and ck["args"]["block_lengths"] == "4,8,16"
    log = json.loads(open(tmp_path / "t.jsonl").readline())
    assert {"eval_accuracy_bl4", "eval_accuracy_bl8", "eval_accuracy_bl16", "eval_nfe_hot"} <= set(log)
    for bad, msg in [(["--temperature-range", "0.5"], "LO,HI"), (["--temperature-range", "0.9,0.2"], "0 <= LO < HI"),
                     (["--block-lengths", "4,x"], "B1,B2"), (["--block-lengths", "4,16"], "among them"),
                     (["--block-lengths", "5,8", "--block-length", "8"], "multiple of --block-length 5"),
                     (["--block-lengths", "4,8", "--block-length", "8", "--expert", "threshold:0.9",
                       "--expert-block-length", "4"], "each group's own blocks")]:
        with pytest.raises(SystemExit, match=msg):
            train.main(bad + ["--out", str(tmp_path / "x.pt")])


def test_rows_at_several_block_lengths_are_each_their_own_run(tiny_path):
    """train.generate_rows: rows at different block lengths give, row by row, what generate gives each block length
    alone, and its steps number the rows in the whole batch."""
    from model import load_dllm
    from tasks import prompts_of, tiny_problems
    dllm = load_dllm(tiny_path)
    ids, am = prompts_of(dllm, tiny_problems("chain", 6, seed=1))
    bl, keys = torch.tensor([4, 16, 4, 8, 16, 8]), train.row_keys(3, torch.arange(6))
    pol = train.parse_policy("threshold:0.8")
    r = train.generate_rows(dllm, pol, ids, am, 16, bl, 0.0, keys, "none", None, None, torch.arange(6), keys)
    for b in (4, 8, 16):
        rows = (bl == b).nonzero().squeeze(1)
        alone = train.generate(dllm, pol, ids[rows], am[rows], 16, b, keys=keys[rows])
        assert torch.equal(alone.tokens, r.tokens[rows]) and torch.equal(alone.nfe, r.nfe[rows])
    assert sorted(torch.cat([s["rows"] for s in r.steps]).unique().tolist()) == list(range(6))


def test_alpha_norm_puts_every_alpha_on_the_correctness_scale():
    """speed_scale: a group's mean ((L - NFE + 1) / L) ** alpha, by hand; 1 at alpha 0 and when off."""
    nfe = torch.tensor([[4, 8], [4, 8]])
    s = train.speed_scale(nfe, 16, torch.tensor([[0.0], [2.0]]), True)
    want = torch.tensor([[1.0], [((13 / 16) ** 2 + (9 / 16) ** 2) / 2]])
    torch.testing.assert_close(s, want)
    torch.testing.assert_close(train.speed_scale(nfe, 16, 2.0, False), torch.ones(2, 1))


def test_init_starts_a_conditioned_policy_as_a_per_alpha_one(tiny_path, tmp_path, monkeypatch):
    """--init CKPT: the conditioned policy starts as CKPT's policy at every alpha (its conditioning at zero), trains
    from there (the log's held-out evaluation at both ends of the range), and a policy of another shape is refused."""
    from decode import load_policy
    grade_by(monkeypatch, lambda *a: True)
    per = str(tmp_path / "per.pt")
    train.train(cfg(tiny_path, per, steps=2, init_bias=0.0, alpha=1.0))
    start = {}
    orig = train.build_policy

    def spy(*a):
        out = orig(*a)
        start.update({k: v.clone() for k, v in out[0].state_dict().items()})
        return out
    monkeypatch.setattr(train, "build_policy", spy)
    out = str(tmp_path / "cond.pt")
    train.train(cfg(tiny_path, out, steps=2, init_bias=0.0, alpha_range="0,10", init=per, alpha_norm=True,
                    eval_every=2, eval_n=4))
    plain, _ = load_policy(per)
    assert all(torch.equal(start[k], v) for k, v in plain.state_dict().items())
    assert all(start[k].abs().max() == 0 for k in ("alpha_out.2.weight", "alpha_mlp.2.weight"))
    log = [json.loads(x) for x in open(str(tmp_path / "cond.jsonl"))]
    assert {"eval_nfe_lo", "eval_nfe_hi", "eval_accuracy_lo", "eval_accuracy_hi"} <= set(log[-1])
    with pytest.raises(ValueError, match="is not this run's"):
        train.train(cfg(tiny_path, str(tmp_path / "c2.pt"), alpha_range="0,10", init=per, width=64))
    with pytest.raises(ValueError, match="pick one"):
        train.train(cfg(tiny_path, str(tmp_path / "c3.pt"), init=per, imitate="threshold:0.9"))
    with pytest.raises(ValueError, match="--alpha-norm rescales"):
        train.train(cfg(tiny_path, str(tmp_path / "c4.pt"), reward="additive", alpha_norm=True))


def test_expert_steps_use_the_mixture_likelihood():
    """Expert steering (App. F): the expert's steps enter the loss as log pi_ES = logaddexp(log(G/(G+E)) + log pi,
    log(1/(G+E))) over every masked position, old and new alike; the policy's own steps are unchanged."""
    torch.manual_seed(0)
    pol = LearnedPolicy()
    with torch.no_grad():
        pol.head.weight.normal_(0, 0.5)
    G, E = 3, 1
    own, ex = fake_batch(S=6, n=3, seed=1), fake_batch(S=4, n=1, seed=2)
    ex["masked"] = ex["cand"] | (torch.rand(4, 6) < 0.5)   # the expert's block is not the whole of what is masked
    with torch.no_grad():
        own["logp_old"] = bernoulli_log_prob(pol(own["conf"], own["masked"], own["t"]), own["cand"], own["action"])
    own.update(alpha=None, order=None, expert=torch.zeros(6, dtype=torch.bool))
    ex = dict(ex, alpha=None, order=None, logp_old=None, choices=ex["masked"],
              expert=torch.ones(4, dtype=torch.bool))
    old_expert_log_probs(pol, ex, (G, E), chunk=3)
    with torch.no_grad():
        lp = bernoulli_log_prob(pol(ex["conf"], ex["masked"], ex["t"]), ex["masked"], ex["action"])
    torch.testing.assert_close(ex["logp_old"], torch.log(G / (G + E) * lp.exp() + 1 / (G + E)))
    batch = concat_batches(own, ex, 3)
    assert batch["row"][6:].tolist() == [3] * 4 and batch["expert"].sum() == 4
    adv = torch.tensor([1.0, -2.0, 0.5, 0.5])
    loss, clip, _ = grpo_loss(pol, batch, adv, 4, 0.5, mixture_sizes=(G, E))
    assert abs(loss + adv.mean().item()) < 1e-5 and clip == 0       # on-policy: rho = 1 for every step
    with torch.no_grad():   # move the policy: the expert step's ratio is the mixture's, computed here by hand
        pol.head.bias.add_(0.7)
        new = torch.log(G / (G + E) * bernoulli_log_prob(pol(ex["conf"], ex["masked"], ex["t"]), ex["masked"],
                                                          ex["action"]).exp() + 1 / (G + E))
        own_new = bernoulli_log_prob(pol(own["conf"], own["masked"], own["t"]), own["cand"], own["action"])
    rho = torch.exp(torch.cat([own_new - own["logp_old"], new - ex["logp_old"]]))
    a = adv[batch["row"]]
    per = -torch.min(rho * a, rho.clamp(0.5, 1.5) * a)
    want = sum(per[batch["row"] == r].mean() for r in range(4)) / 4
    loss, _, _ = grpo_loss(pol, batch, adv, 4, 0.5, mixture_sizes=(G, E))
    assert abs(loss - want.item()) < 1e-5


def test_expert_steering_loop(tiny_path, tmp_path, monkeypatch):
    """--expert: one extra rollout per group by the heuristic, advantages over G + E, expert metrics logged."""
    seen, real = [], train.advantages
    monkeypatch.setattr(train, "advantages", lambda r, G, std=False: (seen.append((r.clone(), G)), real(r, G, std))[1])
    grade_by(monkeypatch, lambda task, p, text: len(text) % 2 == 0)
    inits = capture_init(monkeypatch)
    pol, m = train.train(cfg(tiny_path, tmp_path / "es.pt", steps=2, expert="threshold:0.9", expert_block_length=4))
    assert moved(inits, pol) and seen[0][1] == 5 and seen[0][0].shape == (4 * 5,)   # 4 prompts x (G = 4 + E = 1)
    ck = torch.load(tmp_path / "es.pt", weights_only=True)
    assert ck["args"]["expert"] == "threshold:0.9" and ck["args"]["expert_block_length"] == 4
    assert {"expert_accuracy", "expert_nfe"} <= set(m) and 1 <= m["expert_nfe"] <= 16
    with pytest.raises(ValueError, match="another setup.*expert"):
        train.train(cfg(tiny_path, tmp_path / "es.pt", steps=3, resume=True))


def test_dpls_loop_records_orders_and_is_on_policy(tiny_path, tmp_path, monkeypatch):
    """--actions dpls: the rollouts' recorded log-probabilities are what the update recomputes (rho = 1 at the
    first update), the checkpoint records the action type, and sample/eval just work with it."""
    import eval as ev
    import sample
    from grpo import step_log_prob
    ratios, real = [], train.grpo_loss

    def spy(net, batch, adv, n, eps, **kw):
        if not ratios:
            with torch.no_grad():
                ratios.append(torch.exp(step_log_prob(net, batch, slice(None), kw["actions"])[1] - batch["logp_old"]))
        return real(net, batch, adv, n, eps, **kw)
    monkeypatch.setattr(train, "grpo_loss", spy)
    grade_by(monkeypatch, lambda task, p, text: len(text) % 2 == 0)
    out = str(tmp_path / "dpls.pt")
    train.train(cfg(tiny_path, out, steps=2, actions="dpls"))
    torch.testing.assert_close(ratios[0], torch.ones_like(ratios[0]), rtol=1e-4, atol=1e-4)
    assert torch.load(out, weights_only=True)["policy_config"]["actions"] == "dpls"
    rows = ev.main(["--model", tiny_path, "--gen-length", "16", "--block-lengths", "4,16", "--policies", out,
                    "--betas", "0.5,2", "--n", "8", "--out", str(tmp_path / "r.json")])
    assert len(rows) == 4 and all(r["mean_nfe"] >= 1 for r in rows)
    assert sample.main(["--policy", out + ":beta=2", "--n", "4"]) is not None


def test_imitation_warm_start_clones_the_heuristic(tmp_path):
    """--imitate fits the policy to the heuristic's decisions before GRPO: on fresh states of the same heuristic (the
    shipped tiny dLLM) its decisions (logit > 0) agree with the heuristic's on most candidates, far more than the
    initial policy (unmask p = 0.12 everywhere, so it agrees only where the heuristic holds back). A small policy and
    a short fit keep it fast (0.95 against 0.67 when written); the full-size fit of the band rule: docs/learning.md."""
    from env import generate, row_keys
    from grpo import collate
    from decode import parse_policy
    from tasks import prompts_of
    from tasks import tiny_problems
    from model import load_dllm
    pol, _ = train.train(train.TrainConfig(model="tiny", block_length=32, steps=1, lr=1e-9, warmup=1, prompts_per_step=2,
                                           group_size=2, eval_every=0, out=str(tmp_path / "bc.pt"), imitate="threshold:0.5",
                                           imitate_steps=100, imitate_problems=64, imitate_lr=3e-3, width=32))
    dllm = load_dllm("tiny")
    ids, am = prompts_of(dllm, tiny_problems("chain", 64, seed=7))
    b = collate(generate(dllm, parse_policy("threshold:0.5"), ids, am, 32, 32, record=READS,
                         keys=row_keys(5, torch.arange(64))).steps)
    with torch.no_grad():
        agree = ((pol(b["conf"], b["masked"], b["t"]) > 0) == b["action"])[b["cand"]].float().mean().item()
    base = (~b["action"])[b["cand"]].float().mean().item()          # what "unmask nothing" agrees on
    assert agree > 0.9 and agree > base + 0.2, (agree, base)
    with pytest.raises(SystemExit, match="clones into a Bernoulli"):
        train.main(["--imitate", "band:hi=0.9:lo=0.08", "--actions", "dpls",
                    "--out", str(tmp_path / "x.pt")])


def test_the_warm_start_clips_its_gradients_as_the_updates_do(tiny_path, tmp_path, monkeypatch):
    """Every clone minibatch clips the gradient norm at --grad-clip: unclipped, the clone of the
    band rule reached the loss floor on some training seeds and stalled far above it on others
    (docs/learning.md)."""
    norms, real = [], torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *a, **k):
        norms.append(max_norm)
        return real(params, max_norm, *a, **k)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    train.train(cfg(tiny_path, tmp_path / "c.pt", steps=1, imitate="threshold:0.9", imitate_steps=3,
                    imitate_problems=4, grad_clip=0.3))
    assert norms[:3] == [0.3] * 3 and set(norms) == {0.3}, norms


def test_same_seed_and_thread_count_give_the_same_weights_in_two_processes(tiny_path, tmp_path):
    """What reproduces bit for bit (docs/learning.md, "Reproducibility"): the same command, seed and thread count in
    two separate processes. (Across thread counts the float sums of the updates are ordered differently, so the
    weights differ; that is measured in the docs, not pinned here.)"""
    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / f"{name}.pt")
        argv = [sys.executable, "train.py", "--model", tiny_path, "--gen-length", "16", "--block-length", "8",
                "--prompts-per-step", "2", "--group-size", "4", "--steps", "3", "--reward", "additive", "--alpha", "1",
                "--eval-every", "0", "--seed", "3", "--out", out]
        done = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outs.append(torch.load(out, weights_only=True))
    a, b = (o["policy"] for o in outs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert outs[0]["command"] == outs[1]["command"].replace("b.pt", "a.pt")
    assert outs[0]["command"] == "python train.py " + " ".join(argv[2:]).replace("b.pt", "a.pt")   # as typed, no more


def test_alpha_probe_measures_how_far_alpha_moves_the_logits(tiny_path, tmp_path, capsys):
    """support.alpha_probe: zero for a policy whose conditioning is at zero, the shift's size once alpha shifts the
    logits, a line per alpha; a per-alpha checkpoint or an alpha outside the range is one clear error."""
    from policy import PolicyConfig
    from support import alpha_probe
    c = PolicyConfig(alpha_lo=0.0, alpha_hi=10.0, init_bias=0.0)
    args = dict(model=tiny_path, task="chain", gen_length=16, block_length=8)
    torch.manual_seed(0)        # the FiLM's hidden layer is random: a fixed draw, not whatever earlier tests left
    pol = LearnedPolicy(c)

    def probe(name):
        save_policy(tmp_path / name, pol.state_dict(), c, **args)
        alpha_probe.main([str(tmp_path / name), "--n", "4", "--alphas", "0,10"])
        return capsys.readouterr().out
    out = probe("flat.pt")
    assert "moves a candidate's logit by 0.000" in out and "alpha     0:" in out and "alpha    10:" in out
    with torch.no_grad():
        pol.alpha_out[2].weight[1].fill_(0.01)     # shift = 0.01 * sum of alpha's features
    assert "moves a candidate's logit by 0.000" not in probe("shifted.pt")
    save_policy(tmp_path / "plain.pt", LearnedPolicy().state_dict(), PolicyConfig(), **args)
    with pytest.raises(SystemExit, match="not alpha-conditioned"):
        alpha_probe.main([str(tmp_path / "plain.pt")])
    with pytest.raises(SystemExit, match="outside the policy's range"):
        alpha_probe.main([str(tmp_path / "shifted.pt"), "--alphas", "20"])


def test_compile_gives_the_rollouts_of_eager(tiny_path, tmp_path):
    """train.py --compile puts the dLLM's forward (and the policy's update) under torch.compile: the rollouts, so the
    logged rewards, accuracy and NFE, are those of the eager run."""
    args = ["--model", tiny_path, "--gen-length", "16", "--block-length", "8", "--prompts-per-step", "2",
            "--group-size", "2", "--steps", "1", "--eval-every", "0", "--cache", "dual"]
    logs = []
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        out = subprocess.run([sys.executable, "train.py", *args, *extra, "--out", str(tmp_path / f"{name}.pt")],
                             cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        logs.append([json.loads(l) for l in open(tmp_path / f"{name}.jsonl")])
    keys = ("reward", "accuracy", "nfe", "zero_adv")
    assert [{k: r[k] for k in keys} for r in logs[0]] == [{k: r[k] for k in keys} for r in logs[1]]
