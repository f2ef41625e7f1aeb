"""model.py: official layouts load through the real code path and compute what the architecture says."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, write_fixture
from model import TINY, ModelConfig, Transformer, build_shape, load_dllm


def reference_logits(sd, cfg, layout, x):
    """An independent, literal forward pass over the official key names (README: Real models), unpadded."""
    if layout == "llada":
        d, H, Hkv, theta, eps = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["rope_theta"], cfg["rms_norm_eps"]
        n, pre = cfg["n_layers"], "model.transformer."
        emb, lnf, head = sd[pre + "wte.weight"], sd[pre + "ln_f.weight"], sd[pre + "ff_out.weight"]
        names = lambda i: [f"{pre}blocks.{i}.{k}" for k in ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out",
                                                              "ff_norm", "ff_proj", "up_proj", "ff_out")]
    else:
        d, H, Hkv, theta, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rope_theta"], cfg["rms_norm_eps"]
        n = cfg["num_hidden_layers"]
        emb, lnf, head = sd["model.embed_tokens.weight"], sd["model.norm.weight"], sd["lm_head.weight"]
        names = lambda i: [f"model.layers.{i}.{k}" for k in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                           "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj",
                           "mlp.up_proj", "mlp.down_proj")]
    hd, N = d // H, x.shape[1]
    rms = lambda h, w: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w
    inv = theta ** (-torch.arange(0, hd, 2).float() / hd)
    ang = torch.arange(N).float()[:, None] * inv
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda t: t * cos + torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1) * sin
    lin = lambda h, k: h @ sd[k + ".weight"].T + (sd[k + ".bias"] if k + ".bias" in sd else 0)
    h = emb[x]
    for i in range(n):
        an, q, k, v, o, fn, g, u, dn = names(i)
        a = rms(h, sd[an + ".weight"])
        Q = lin(a, q).view(1, N, H, hd).transpose(1, 2)
        K = lin(a, k).view(1, N, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, 1)
        V = lin(a, v).view(1, N, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, 1)
        att = torch.softmax(rot(Q) @ rot(K).transpose(-1, -2) / hd ** 0.5, -1) @ V   # no causal mask
        h = h + lin(att.transpose(1, 2).reshape(1, N, d), o)
        f = rms(h, sd[fn + ".weight"])
        h = h + lin(torch.nn.functional.silu(lin(f, g)) * lin(f, u), dn)
    out = rms(h, lnf) @ head.T
    if layout == "dream":  # position i must score token i: read the logit one position earlier
        out = torch.cat([out[:, :1], out[:, :-1]], 1)
    return out


@pytest.mark.parametrize("layout", ["llada", "dream"])
def test_official_layout_matches_reference(tmp_path, layout):
    cfg, sd = write_fixture(str(tmp_path), layout, kv_heads=2 if layout == "dream" else 4)
    d = load_dllm(str(tmp_path), device="cpu")
    assert (d.mask_id, d.pad_id, d.shift) == (cfg["mask_token_id"], cfg["pad_token_id"], layout == "dream")
    x = torch.randint(7, cfg["vocab_size"], (1, 11))
    torch.testing.assert_close(d.logits(x), reference_logits(sd, cfg, layout, x), rtol=1e-4, atol=1e-4)
    # the prompt-skipping LM head returns exactly the tail
    torch.testing.assert_close(d.logits(x, start=5), d.logits(x)[:, 5:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["llada", "dream"])
def test_padded_equals_unpadded(request, layout):
    d = load_dllm(request.getfixturevalue(f"{layout}_dir"), device="cpu")
    texts = ["What is 2 + 3 ?", "What is 2 ?"]
    prompts = [d.prompt_text(t, "You are a math expert .", "<reasoning>") for t in texts]
    ids, am = d.encode(prompts)
    assert ids.shape[0] == 2 and am[1].sum() < am[0].sum() and am[1, 0] == 0   # left-padded
    start = {"llada": "<|startoftext|><|start_header_id|>system", "dream": "<|im_start|>system\n"}[layout]
    assert prompts[0].startswith(start)                                           # chat template applied
    x = torch.cat([ids, torch.full((2, 6), d.mask_id)], 1)
    full = d.logits(x, torch.cat([am, torch.ones(2, 6, dtype=am.dtype)], 1), start=ids.shape[1])
    for i in range(2):
        alone = int((am[i] == 0).sum())
        xi = x[i:i + 1, alone:]
        torch.testing.assert_close(full[i:i + 1], d.logits(xi, start=xi.shape[1] - 6), rtol=1e-4, atol=1e-4)


def test_shape_check_and_bad_names(tmp_path, llada_dir):
    cfg = json.load(open(os.path.join(llada_dir, "config.json")))
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in os.listdir(llada_dir):
        (bad / f).write_bytes(open(os.path.join(llada_dir, f), "rb").read())
    cfg["d_model"] = 16
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        load_dllm(str(bad), device="cpu")
    cfg["d_model"], cfg["pad_token_id"] = 32, cfg["mask_token_id"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pad token must not be the mask"):
        load_dllm(str(bad), device="cpu")
    with pytest.raises(ValueError, match="unknown model"):
        load_dllm("gpt-17", device="cpu")


def test_llada_8b_shape_on_meta():
    net = build_shape("llada")
    n = sum(p.numel() for p in net.parameters())
    assert 8.0e9 < n < 8.1e9, n    # LLaDA-8B: 8.02B parameters
    assert next(net.parameters()).device.type == "meta"
    out = subprocess.run([sys.executable, "model.py", "--shape", "dream"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "B parameters" in out.stdout


def test_hub_name_offline_is_one_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "model.py", "--name", "llada"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode != 0 and out.stderr.strip().startswith("error: could not fetch GSAI-ML/LLaDA-8B-Instruct")
    assert "Traceback" not in out.stderr


def test_tiny_checkpoint_roundtrip(tiny):
    assert tiny.is_tiny and tiny.pad_id != tiny.mask_id and "tiny" in TINY
    ids, am = tiny.encode(["123?6:", "45?9:"])
    assert ids.shape == (2, 6) and am[1, 0] == 0
    assert tiny.decode(tiny.tokenizer.encode("1+2=03#3") + [tiny.eos_id, 5]) == "1+2=03#3"


def test_pretrain_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "support.pretrain", "--name", "tiny", "--steps", "3", "--batch-size", "8",
                          "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and os.path.exists(tmp_path / "tiny.pt"), out.stderr
    d = load_dllm(str(tmp_path / "tiny.pt"), device="cpu")
    assert d.meta["pretrain"]["steps"] == 3
    from support import pretrain
    path = pretrain.pretrain(pretrain.PretrainConfig(name="tiny-b", steps=2, batch_size=4, out_dir=str(tmp_path)))
    b = load_dllm(path, device="cpu")          # the second model: a wider MLP, another seed
    assert b.net.c.mlp_hidden == 512 and b.net.c.d_model == 128 and b.logits(torch.tensor([[3, 4, 5]])).shape == (1, 3, b.vocab_size)
    assert not torch.equal(b.net.tok_emb.weight, d.net.tok_emb.weight[:, :128])
    out = subprocess.run([sys.executable, "-m", "support.pretrain", "--name", "huge"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown tiny model" in out.stderr


def test_pretrain_refuses_to_overwrite_and_records_its_command(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "support.pretrain", "--name", "tiny", "--steps", "2", "--batch-size", "4",
                                     "--out-dir", str(tmp_path), *a], cwd=ROOT, capture_output=True, text=True)
    assert run().returncode == 0
    d = load_dllm(str(tmp_path / "tiny.pt"), device="cpu")
    assert d.meta["command"] == f"python -m support.pretrain --name tiny --steps 2 --batch-size 4 --out-dir {tmp_path}"
    before = (tmp_path / "tiny.pt").read_bytes()
    out = run("--steps", "1")
    assert out.returncode != 0 and "exists" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "tiny.pt").read_bytes() == before                     # nothing written over it
    out = run("--steps", "0")
    assert out.returncode != 0 and "--steps must be an integer in [1, " in out.stderr
    out = run("--check", "tiny", "--num-problems", "-5")
    assert out.returncode != 0 and "--num-problems must be an integer in [1, " in out.stderr and "Traceback" not in out.stderr


def test_suffix_masking_shows_left_to_right_contexts():
    from support import pretrain
    net = Transformer(ModelConfig(vocab_size=8, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=32))
    seen = []
    orig = net.forward
    net.forward = lambda x, am=None, start=0: (seen.append(x.clone()), orig(x, am, start))[1]
    x0 = torch.randint(3, 8, (256, 2 + 12))
    g = torch.Generator().manual_seed(0)
    loss = pretrain.diffusion_loss(net, x0, torch.ones_like(x0), 2, 1, 0.1, g, suffix_frac=1.0)
    m = seen[0][:, 2:] == 1                                                  # (256, 12) masked positions
    assert torch.isfinite(loss) and (seen[0][:, :2] == x0[:, :2]).all()     # the prompt is never masked
    assert m[:, -1].all()                                                    # every row masks a suffix: the last one always
    seen.clear()
    pretrain.diffusion_loss(net, x0, torch.ones_like(x0), 2, 1, 0.1, g, suffix_frac=0.0)
    assert not (seen[0][:, 2:] == 1)[:, -1].all()                            # plain random masking does not


def test_shipped_weights_load_and_say_how_they_were_made():
    for name in TINY:
        d = load_dllm(name, device="cpu")
        assert d.meta["command"].startswith(f"python -m support.pretrain --name {name}")


def test_dream_tokenizer_loads_without_remote_code(dream_dir):
    """Dream's tokenizer_config.json maps AutoTokenizer to remote code (the fixture has the hub's fields); we load
    its vocab.json + merges.txt as the Qwen2 BPE it is, with the config's added tokens and chat template."""
    from transformers import AutoTokenizer
    cfg = json.load(open(os.path.join(dream_dir, "tokenizer_config.json")))
    assert cfg["auto_map"]["AutoTokenizer"][0] == "tokenization_dream.DreamTokenizer" and cfg["tokenizer_class"] == "DreamTokenizer"
    assert not os.path.exists(os.path.join(dream_dir, "tokenizer.json"))
    with pytest.raises(Exception, match="custom code|trust_remote_code"):
        AutoTokenizer.from_pretrained(dream_dir)                # what load_dllm used to do, and failed on
    d = load_dllm(dream_dir, device="cpu")
    tok, mcfg = d.tokenizer, json.load(open(os.path.join(dream_dir, "config.json")))
    assert tok.mask_token == "<|mask|>" and tok.convert_tokens_to_ids("<|mask|>") == d.mask_id == mcfg["mask_token_id"]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == d.eos_id == d.pad_id
    ids = tok("<|im_start|>user\nWhat is 2 + 3 ?<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(ids) == "<|im_start|>user\nWhat is 2 + 3 ?<|im_end|>"        # byte-level BPE round trip
    assert d.decode(ids + [d.eos_id, ids[1]]) == "<|im_start|>user\nWhat is 2 + 3 ?<|im_end|>"


def test_llada_tokenizer_files(llada_dir, tmp_path):
    """LLaDA's hub tokenizer_config names PreTrainedTokenizerFast (no remote code); an export that adds an auto_map
    still loads from its tokenizer.json. Missing tokenizer files and a tokenizer from another model are one clear error."""
    cfg = json.load(open(os.path.join(llada_dir, "tokenizer_config.json")))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in json.dumps(cfg) + "".join(os.listdir(llada_dir))
    d = load_dllm(llada_dir, device="cpu")
    assert d.tokenizer.convert_tokens_to_ids("<|mdm_mask|>") == d.mask_id
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in os.listdir(llada_dir):
        (copy / f).write_bytes(open(os.path.join(llada_dir, f), "rb").read())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_llada.LLaDATokenizer", None]}
    cfg["tokenizer_class"] = "LLaDATokenizer"
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_dllm(str(copy), device="cpu").tokenizer.convert_tokens_to_ids("<|mdm_mask|>") == d.mask_id
    mcfg = json.load(open(copy / "config.json"))
    mcfg["mask_token_id"] = d.mask_id - 1
    cfg["mask_token"] = "<|mdm_mask|>"
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    (copy / "config.json").write_text(json.dumps(mcfg))
    with pytest.raises(ValueError, match="different models"):
        load_dllm(str(copy), device="cpu")
    (copy / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_dllm(str(copy), device="cpu")
    (copy / "config.json").write_text(json.dumps({"d_model": 32}))
    with pytest.raises(ValueError, match="lacks or mistypes the field"):
        load_dllm(str(copy), device="cpu")
    (copy / "config.json").write_text(json.dumps(json.load(open(os.path.join(llada_dir, "config.json")))))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(copy / f)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_dllm(str(copy), device="cpu")


def test_merged_projections_compute_the_same_function(llada_dir, dream_dir):
    """Block.merge_projections (on by default on CUDA): q/k/v and gate/up as one matmul each; float32 logits equal the
    separate projections' to float rounding, with the KV cache too."""
    for path in (llada_dir, dream_dir):
        sep, merged = load_dllm(path, device="cpu"), load_dllm(path, device="cpu", merge=True)
        assert not hasattr(sep.net.blocks[0], "qkv") and hasattr(merged.net.blocks[0], "qkv")
        x = torch.randint(3, 20, (3, 19), generator=torch.Generator().manual_seed(0))
        am = torch.ones_like(x)
        am[1, :3] = 0
        a, kv_a = sep.logits(x, am, start=7, return_kv=True)
        b, kv_b = merged.logits(x, am, start=7, return_kv=True)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sep.logits_span(x, am, 7, 4, 8, kv_a), merged.logits_span(x, am, 7, 4, 8, kv_b),
                                   rtol=1e-5, atol=1e-5)
