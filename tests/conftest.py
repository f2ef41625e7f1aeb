"""Shared fixtures: a briefly trained tiny dLLM, and small checkpoints in the official LLaDA / Dream layouts."""
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Under pytest-xdist (`-n 2`) a worker per core, each on one thread, and so the scripts it starts;
# alone, two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
# Every test runs on the CPU, on a machine with a GPU too (and the scripts they start inherit it); the CUDA tests
# (test_cuda.py) pass their device explicitly.
os.environ["DLLM_UNMASK_DEVICE"] = "cpu"

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
SPECIALS = ["[UNK]", "<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>",
            "<|start_header_id|>", "<|end_header_id|>"]
WORDS = ["system", "user", "assistant", "You", "are", "a", "math", "expert", "What", "is", "2", "3", "+", "?",
         "<", ">", "reasoning", "answer", "boxed", "{", "}", "\\", ".", ",", "the", "of", "solve", "step", "by"]


def write_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="[UNK]", mask_token="<|mdm_mask|>",
                                   additional_special_tokens=SPECIALS[3:4] + SPECIALS[5:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return vocab


def byte_alphabet():
    """GPT-2 / Qwen2 byte-level BPE's 256 symbols: printable bytes stand for themselves, the rest move to 256+."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b], extra = chr(256 + extra), extra + 1
    return [out[b] for b in range(256)]


QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]


def write_dream_tokenizer(path):
    """Dream-v0-Instruct-7B's tokenizer files as the hub has them: Qwen2's byte-level BPE in vocab.json + merges.txt,
    no tokenizer.json, and a tokenizer_config.json whose auto_map names its remote DreamTokenizer class, with the
    added special tokens (<|mask|> among them), the special-token fields and a chat template."""
    symbols = byte_alphabet()
    merges = [("G", "S"), ("\u0120", "2"), ("\u0120", "+"), ("a", "t"), ("h", "e")]   # \u0120 is the byte-level space
    vocab = {s: i for i, s in enumerate(symbols)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    with open(os.path.join(path, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(path, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    added = {str(len(vocab) + i): dict(content=t, lstrip=False, normalized=False, rstrip=False, single_word=False,
                                       special=True) for i, t in enumerate(DREAM_SPECIALS)}
    cfg = dict(add_bos_token=False, add_prefix_space=False, added_tokens_decoder=added,
               additional_special_tokens=["<|im_start|>", "<|im_end|>"],
               auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
               bos_token="<|beginoftext|>", chat_template=QWEN_TEMPLATE, clean_up_tokenization_spaces=False,
               eos_token="<|endoftext|>", errors="replace", mask_token="<|mask|>", model_max_length=131072,
               pad_token="<|endoftext|>", split_special_tokens=False, tokenizer_class="DreamTokenizer", unk_token=None)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return {**vocab, **{t["content"]: int(i) for i, t in added.items()}}


def write_fixture(path, layout, vocab_size=None, d=32, layers=2, heads=4, kv_heads=4, hidden=64, seed=0):
    """A random model in the official layout: config.json, model.safetensors (official key names), tokenizer files
    with the fields of the hub's (LLaDA: tokenizer.json + tokenizer_config.json naming PreTrainedTokenizerFast;
    Dream: vocab.json + merges.txt + a tokenizer_config.json that maps to remote code)."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    if layout == "llada":
        vocab = write_tokenizer(path)
        tc = os.path.join(path, "tokenizer_config.json")
        cfg = json.load(open(tc))
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"      # what LLaDA's hub file says
        json.dump(cfg, open(tc, "w"))
        vocab_size = vocab_size or 48
    else:
        vocab = write_dream_tokenizer(path)
        vocab_size = vocab_size or len(vocab) + 3               # the model's vocab is padded past the tokenizer's

    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g) * 0.2
    hd = d // heads
    sd = {}
    if layout == "llada":
        cfg = dict(model_type="llada", d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
                   mlp_hidden_size=hidden, rope_theta=500000.0, rms_norm_eps=1e-5, vocab_size=vocab_size,
                   embedding_size=vocab_size, weight_tying=False, input_emb_norm=False, scale_logits=False,
                   include_qkv_bias=False, mask_token_id=vocab["<|mdm_mask|>"], eos_token_id=vocab["<|endoftext|>"],
                   pad_token_id=vocab["<|endoftext|>"], eot_token_id=vocab["<|eot_id|>"], max_sequence_length=4096)
        p = "model.transformer."
        sd[p + "wte.weight"], sd[p + "ln_f.weight"], sd[p + "ff_out.weight"] = w(vocab_size, d), 1 + w(d), w(vocab_size, d)
        for i in range(layers):
            b = f"{p}blocks.{i}."
            sd.update({b + "attn_norm.weight": 1 + w(d), b + "q_proj.weight": w(heads * hd, d),
                       b + "k_proj.weight": w(kv_heads * hd, d), b + "v_proj.weight": w(kv_heads * hd, d),
                       b + "attn_out.weight": w(d, heads * hd), b + "ff_norm.weight": 1 + w(d),
                       b + "ff_proj.weight": w(hidden, d), b + "up_proj.weight": w(hidden, d),
                       b + "ff_out.weight": w(d, hidden)})
    else:
        cfg = dict(model_type="Dream", hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                   num_key_value_heads=kv_heads, intermediate_size=hidden, rope_theta=1e6, rms_norm_eps=1e-6,
                   vocab_size=vocab_size, tie_word_embeddings=False, mask_token_id=vocab["<|mask|>"],
                   pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                   max_position_embeddings=4096)
        sd["model.embed_tokens.weight"], sd["model.norm.weight"], sd["lm_head.weight"] = w(vocab_size, d), 1 + w(d), w(vocab_size, d)
        for i in range(layers):
            b = f"model.layers.{i}."
            sd.update({b + "input_layernorm.weight": 1 + w(d), b + "post_attention_layernorm.weight": 1 + w(d),
                       b + "self_attn.q_proj.weight": w(heads * hd, d), b + "self_attn.q_proj.bias": w(heads * hd),
                       b + "self_attn.k_proj.weight": w(kv_heads * hd, d), b + "self_attn.k_proj.bias": w(kv_heads * hd),
                       b + "self_attn.v_proj.weight": w(kv_heads * hd, d), b + "self_attn.v_proj.bias": w(kv_heads * hd),
                       b + "self_attn.o_proj.weight": w(d, heads * hd), b + "mlp.gate_proj.weight": w(hidden, d),
                       b + "mlp.up_proj.weight": w(hidden, d), b + "mlp.down_proj.weight": w(d, hidden)})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(path, "model.safetensors"))
    return cfg, sd


TINY_ARGS = dict(model="tiny", task="chain", gen_length=32, block_length=32, alpha=1.0)   # what train.py stores, at least


def save_policy(path, state, config, **args):
    """A checkpoint file as train.py writes one (its weights, config, training arguments and step), for tests that
    build a policy by hand. config: a PolicyConfig or a dict of one."""
    config = config if isinstance(config, dict) else vars(config)
    torch.save(dict(policy=state, policy_config=config, args={**TINY_ARGS, **args}, step=1), path)
    return str(path)


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("llada"))
    write_fixture(path, "llada")
    return path


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dream"))
    write_fixture(path, "dream", kv_heads=2)
    return path


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    """A tiny dLLM trained for a few seconds: the real code path, not the 8-minute model. Trained
    once per test run: parallel workers (pytest-xdist) share it through the run's temporary
    folder, under a lock."""
    from filelock import FileLock
    from support import pretrain
    base = tmp_path_factory.getbasetemp()
    out = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny-dllm"
    with FileLock(str(out) + ".lock"):
        if (out / "tiny.pt").is_file():
            return str(out / "tiny.pt")
        cfg = pretrain.PretrainConfig(name="tiny", out_dir=str(out), steps=60, batch_size=64,
                                      warmup=10)
        return pretrain.pretrain(cfg)


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from model import load_dllm
    return load_dllm(tiny_path, device="cpu")
