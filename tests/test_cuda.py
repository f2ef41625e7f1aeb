"""What only a GPU exercises (each test skips without CUDA): the float32 policy and GRPO loss on CUDA (under autocast
too) against the CPU's, each KV cache's logits against the uncached forward in bf16, the merged projections, and GRPO and
sampling end to end on a model in the official layout. Tolerances: bf16 keeps 8 bits of mantissa, so logits agree
with float32 to about 1% of their scale; that is what the tests allow."""
import copy
import json
import math

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def policy_batch(b=32, L=16, device="cpu"):
    from env import Obs, row_keys
    g = torch.Generator().manual_seed(0)
    conf, cand = torch.rand(b, L, generator=g), torch.rand(b, L, generator=g) < 0.6
    obs = Obs(torch.zeros(b, L, dtype=torch.long), conf, cand.clone(), cand, torch.rand(b, generator=g),
              torch.zeros(b, dtype=torch.long), 1, row_keys(0, torch.arange(b)))
    return obs


def to(obs, device):
    from dataclasses import fields, replace
    return replace(obs, **{f.name: getattr(obs, f.name).to(device) for f in fields(obs)
                           if isinstance(getattr(obs, f.name), torch.Tensor)})


@cuda
def test_the_policy_and_the_grpo_loss_in_float32_on_cuda():
    """The policy runs in float32 on CUDA too (TF32 off by default), under autocast or not: its actions and its GRPO
    loss agree with the CPU's, and a rollout's log-probability equals the update's (the first ratio is 1)."""
    from grpo import grpo_loss
    from policy import Knobs, LearnedPolicy
    torch.manual_seed(0)
    cpu = LearnedPolicy()
    with torch.no_grad():
        cpu.head.weight.normal_(0, 0.5)
    gpu = copy.deepcopy(cpu).cuda()
    obs = policy_batch()
    a_cpu = cpu.act(obs, Knobs(fallback=False))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a_gpu = gpu.act(to(obs, "cuda"), Knobs(fallback=False))
    assert a_gpu.logp.dtype == torch.float32 and a_gpu.unmask.is_cuda
    assert (a_gpu.unmask.cpu() == a_cpu.unmask).float().mean() > 0.99   # the same draws (float rounding aside)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        again = gpu.act(to(obs, "cuda"), Knobs(fallback=False)).logp
    assert (again - a_gpu.logp).abs().max() < 1e-3
    b = dict(conf=obs.conf, masked=obs.masked, cand=obs.cand, t=obs.t, action=a_cpu.unmask, logp_old=a_cpu.logp,
             row=torch.arange(32) % 4, expert=torch.zeros(32, dtype=torch.bool), alpha=None,
             order=None, choices=obs.cand, reads=["conf", "masked", "t"])
    adv = torch.tensor([1.0, -0.5, 0.25, -0.75])
    out = {}
    for name, net, dev in (("cpu", cpu, "cpu"), ("cuda", gpu, "cuda")):
        net.zero_grad()
        bd = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        loss, _, ent = grpo_loss(net, bd, adv.to(dev), 4, 0.5, chunk=8)
        grads = torch.cat([p.grad.flatten().cpu() for p in net.parameters() if p.grad is not None])
        out[name] = (loss, ent, grads)
    assert abs(out["cpu"][0] - out["cuda"][0]) < 1e-3 and abs(out["cpu"][1] - out["cuda"][1]) < 1e-3
    cos = torch.nn.functional.cosine_similarity(out["cpu"][2], out["cuda"][2], dim=0)
    assert torch.isfinite(out["cuda"][2]).all() and cos > 0.99


@cuda
@pytest.mark.parametrize("which", ["llada_dir", "dream_dir"])
def test_cached_spans_match_the_uncached_forward_in_bf16(request, which):
    from model import load_dllm
    d = load_dllm(request.getfixturevalue(which), device="cuda")
    assert d.net.tok_emb.weight.dtype == torch.bfloat16
    g = torch.Generator().manual_seed(0)
    B, P, L = 3, 7, 12
    x = torch.randint(3, 20, (B, P + L), generator=g).cuda()
    x[:, P + 5:] = d.mask_id
    am = torch.ones_like(x)
    am[1, :3] = 0
    full, kv = d.logits(x, am, start=P, return_kv=True)
    scale = full.float().abs().max().item()
    assert (full.float() - d.logits(x, am, start=P).float()).abs().max().item() <= 0.01 * scale
    for lo, hi, run_to in [(4, 8, 12), (0, 4, 12), (4, 8, None), (8, 12, None)]:
        part = d.logits_span(x, am, P, lo, hi, kv, run_to)
        assert (part.float() - full[:, lo:hi].float()).abs().max().item() <= 0.02 * scale, (lo, hi, run_to)


@cuda
def test_merged_projections_give_the_same_logits(llada_dir):
    from model import load_dllm
    d = load_dllm(llada_dir, device="cuda", merge=False)
    x = torch.randint(3, 20, (2, 16), generator=torch.Generator().manual_seed(1)).cuda()
    before = d.logits(x, start=4).float()
    d.net.merge_projections()
    after = d.logits(x, start=4).float()
    assert (after - before).abs().max().item() <= 0.02 * before.abs().max().item()


def gsm8k_file(tmp_path, n=8):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"What is {i} + 3 ?", "answer": f"... #### {i + 3}"})
                              for i in range(n)))
    return str(path)


@cuda
@pytest.mark.parametrize("cache", ["none", "dual"])
def test_one_grpo_step_and_sampling_on_a_real_layout_model(llada_dir, tmp_path, cache):
    import sample
    import train
    data = gsm8k_file(tmp_path)
    out = str(tmp_path / f"p_{cache}.pt")
    pol, m = train.train(train.TrainConfig(model=llada_dir, task="gsm8k", data=data, gen_length=16, block_length=8,
                                           prompts_per_step=2, group_size=2, steps=1, eval_every=0, batch_size=4,
                                           expert="threshold:0.9", cache=cache, device="cuda", out=out))
    assert next(pol.parameters()).is_cuda and math.isfinite(m["loss"]) and torch.load(out, weights_only=True)["step"] == 1
    rows = sample.main(["--model", llada_dir, "--task", "gsm8k", "--data", data, "--policy", out, "--policies",
                        "threshold:0.9", "--gen-length", "16", "--block-length", "8", "--n", "4", "--cache", cache,
                        "--device", "cuda"])
    assert len(rows) == 2 and all(1 <= r["mean_nfe"] <= 16 for r in rows)
