"""
Machinery for model.py's loaders: the device to run on, the model names (check_model_name), an
official LLaDA / Dream directory read into a network that model.py builds (read_dir: its config.json
read into model.ModelConfig's fields and checked, its checkpoint key names and shards, its files'
sanity, its tokenizer, loaded without remote code), and a tiny checkpoint's checks (read_tiny).
"""
import json
import math
import os

import torch

HUB = {"llada": "GSAI-ML/LLaDA-8B-Instruct", "llada-1.5": "GSAI-ML/LLaDA-1.5",
       "dream": "Dream-org/Dream-v0-Instruct-7B"}
TINY = ("tiny", "tiny-b")

# Token ids of the real models, from their official config.json files; the files' values win, these
# are the check.
KNOWN_IDS = {"llada": dict(mask=126336, eos=126081, pad=126081, eot=126348),
             "dream": dict(mask=151666, eos=151643, pad=151643)}

# Exact shapes of the real models, for meta-device builds and GPU benchmarks without a download.
SHAPES = {
    "llada": dict(model_type="llada", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                  mlp_hidden_size=12288, rope_theta=500000.0, rms_norm_eps=1e-5, vocab_size=126464,
                  embedding_size=126464, weight_tying=False, input_emb_norm=False,
                  scale_logits=False, include_qkv_bias=False),
    "dream": dict(model_type="Dream", hidden_size=3584, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, intermediate_size=18944,
                  rope_theta=1e6, rms_norm_eps=1e-6, vocab_size=152064, tie_word_embeddings=False)}


def default_device():
    """cuda, then mps, then cpu; the environment variable DLLM_UNMASK_DEVICE overrides it (the tests
    set it to cpu, so that they run the same on a machine with a GPU)."""
    if os.environ.get("DLLM_UNMASK_DEVICE"):
        return resolve_device(os.environ["DLLM_UNMASK_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name=None):
    """--device NAME -> torch.device, autodetected when None; a device this machine lacks is one
    clear error."""
    if not name:
        return default_device()
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {name!r} is not a device: use cuda, cuda:N, mps or cpu") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: this machine has no CUDA device (leave --device out to autodetect)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and
                                  torch.backends.mps.is_available()):
        raise ValueError(
            f"--device {name}: MPS is not available here (leave --device out to autodetect)")
    return dev


def key_map(layout, n_layers, qkv_bias, tied):
    """Official checkpoint key -> our parameter name."""
    if layout == "llada":
        pre, m = "model.transformer.", {"model.transformer.wte.weight": "tok_emb.weight",
                                        "model.transformer.ln_f.weight": "norm.weight",
                                        "model.transformer.ff_out.weight": "lm_head.weight"}
        names = dict(attn_norm="attn_norm", q_proj="q", k_proj="k", v_proj="v", attn_out="o",
                     ff_norm="mlp_norm", ff_proj="gate", up_proj="up", ff_out="down")
        block = lambda i, k: f"{pre}blocks.{i}.{k}"
    else:
        m = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "lm_head.weight"}
        names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "q", "self_attn.k_proj": "k",
                 "self_attn.v_proj": "v", "self_attn.o_proj": "o",
                 "post_attention_layernorm": "mlp_norm", "mlp.gate_proj": "gate",
                 "mlp.up_proj": "up", "mlp.down_proj": "down"}
        block = lambda i, k: f"model.layers.{i}.{k}"
    if tied:
        m = {k: v for k, v in m.items() if v != "lm_head.weight"}
    for i in range(n_layers):
        for theirs, ours in names.items():
            m[block(i, theirs) + ".weight"] = f"blocks.{i}.{ours}.weight"
            if qkv_bias and ours in ("q", "k", "v"):
                m[block(i, theirs) + ".bias"] = f"blocks.{i}.{ours}.bias"
    return m


def load_tokenizer(path):
    """The tokenizer of an official checkpoint directory, without remote code. AutoTokenizer reads
    most; but Dream's tokenizer_config.json maps AutoTokenizer to its own
    tokenization_dream.DreamTokenizer (remote code), which is Qwen2's byte-level BPE (vocab.json +
    merges.txt) plus the added tokens listed in that config. So when the config names a class
    transformers does not have, or an auto_map, load the files with the class they are:
    tokenizer.json -> PreTrainedTokenizerFast, vocab.json + merges.txt -> Qwen2's BPE tokenizer.
    from_pretrained of a concrete class reads the config's added tokens, special tokens and chat
    template and ignores its auto_map."""
    import transformers
    from transformers.utils import logging as hf_logging
    # they warn about the unknown model_type and the class name in the config
    hf_logging.set_verbosity_error()
    has = lambda f: os.path.isfile(os.path.join(path, f))
    if not (has("tokenizer.json") or
            (has("vocab.json") and has("merges.txt")) or has("tokenizer.model")):
        raise FileNotFoundError(
            f"{path} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt): "
            f"download the whole model directory")
    cfg = {}
    if has("tokenizer_config.json"):
        try:
            with open(os.path.join(path, "tokenizer_config.json")) as f:
                cfg = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}/tokenizer_config.json is not valid JSON ({e})") from None
    cls_name = str(cfg.get("tokenizer_class") or "")
    remote = "AutoTokenizer" in (cfg.get("auto_map") or {}) or (cls_name and
                                                                not hasattr(transformers, cls_name))
    if not remote:
        return transformers.AutoTokenizer.from_pretrained(path)
    if has("tokenizer.json"):
        return transformers.PreTrainedTokenizerFast.from_pretrained(path)
    if has("vocab.json") and has("merges.txt"):
        cls = getattr(transformers, "Qwen2TokenizerFast", None) or transformers.Qwen2Tokenizer
        return cls.from_pretrained(path)
    raise ValueError(
        f"{path}: tokenizer class {cls_name!r} needs remote code and there is no tokenizer.json or "
        f"vocab.json + merges.txt to load it from without")


def check_dir(path, files, cfg):
    """A model directory's files are regular and not empty, and its length limit is a positive
    integer -> the limit."""
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
    for fn in files + [f for f in tokenizer_files if os.path.lexists(os.path.join(path, f))]:
        full = os.path.join(path, fn)
        # a FIFO or a device would hang the reader, a dangling link fails deep inside
        if not os.path.isfile(full):
            raise ValueError(f"{full} is not a regular file: download the model directory again")
        # (safetensors says so itself)
        if os.path.getsize(full) == 0 and not fn.endswith(".safetensors"):
            raise ValueError(f"{full} is empty: download the model directory again")
    max_len = cfg.get("max_sequence_length") or cfg.get("max_position_embeddings")
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or
                                max_len < 1):
        raise ValueError(
            f"{path}/config.json: max_sequence_length / max_position_embeddings must be a positive "
            f"integer, not {max_len!r}")
    return max_len


def checked_tokenizer(path, mask_id):
    """load_tokenizer, with its chat template rendered once and its mask token checked against
    config.json's mask_id (the id the env fills the buffer with): a damaged file or template, or a
    tokenizer of another model, is one line naming path."""
    try:
        tok = load_tokenizer(path)
        msgs = [{"role": "user", "content": "1 + 1 ?"}]
        tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(str(e) if str(e).startswith(path) else f"{path}: {e}") from None
    # the tokenizers' and Jinja's own errors: a damaged file or a broken chat template
    except Exception as e:
        why = str(e).splitlines()[0][:160] if str(e) else ""
        raise ValueError(
            f"{path}: its tokenizer or chat template does not load ({type(e).__name__}: {why}): "
            f"download the model directory again") from None
    mask = getattr(tok, "mask_token", None)
    if mask is not None and tok.convert_tokens_to_ids(mask) != mask_id:
        raise ValueError(
            f"{path}: config.json says mask id {mask_id} but the tokenizer's mask token "
            f"{mask!r} is id {tok.convert_tokens_to_ids(mask)}: the config and tokenizer files are "
            "from different models")
    return tok


def config_fields(cfg):
    """(model.ModelConfig's fields, layout, ids) from an official config.json dict: 'llada' (OLMo
    names) or 'dream'."""
    kind = str(cfg.get("model_type", "")).lower()
    if "llada" in kind or "d_model" in cfg:
        d = cfg["d_model"]
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise ValueError(f"config.json: d_model is {d!r}, not a positive integer")
        mc = dict(vocab_size=cfg.get("embedding_size") or cfg["vocab_size"], d_model=d,
                  n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
                  n_kv_heads=cfg.get("n_kv_heads") or cfg["n_heads"],
                  mlp_hidden=cfg["mlp_hidden_size"],
                  rope_theta=cfg.get("rope_theta", 10000.0),
                  norm_eps=cfg.get("rms_norm_eps", 1e-5),
                  qkv_bias=bool(cfg.get("include_qkv_bias", False)),
                  tie_embeddings=bool(cfg.get("weight_tying", False)),
                  emb_scale=math.sqrt(d) if cfg.get("input_emb_norm") else 1.0,
                  logit_scale=1 / math.sqrt(d) if cfg.get("scale_logits") else 1.0)
        layout, known = "llada", KNOWN_IDS["llada"]
    elif "dream" in kind or "hidden_size" in cfg:
        mc = dict(vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"],
                  n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
                  n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                  mlp_hidden=cfg["intermediate_size"],
                  rope_theta=cfg.get("rope_theta", 10000.0),
                  norm_eps=cfg.get("rms_norm_eps", 1e-6), qkv_bias=True,
                  tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))
        layout, known = "dream", KNOWN_IDS["dream"]
    else:
        raise ValueError("config.json is neither the LLaDA (d_model, n_layers, ...) nor the Dream "
                         "(hidden_size, num_hidden_layers, ...) layout")
    ids = {k: cfg.get(f"{k}_token_id", v) for k, v in known.items()}
    check_fields(mc, ids)
    return mc, layout, ids


def check_fields(mc, ids):
    """The numbers of a config.json that the architecture divides by or allocates with: one clear
    error each."""
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden"):
        v = mc[name]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= 10 ** 7:
            raise ValueError(
                f"config.json: {name} (its field for it) is {v!r}, not a positive integer")
    for name in ("rope_theta", "norm_eps"):
        v = mc[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
            raise ValueError(f"config.json: {name} is {v!r}, not a positive number")
    if mc["d_model"] % mc["n_heads"] or mc["n_heads"] % mc["n_kv_heads"]:
        raise ValueError(
            f"config.json: d_model {mc['d_model']}, {mc['n_heads']} heads and {mc['n_kv_heads']} "
            "key/value heads do not divide (d_model must be a multiple of the heads, the heads of "
            "the key/value heads)")
    for k, v in ids.items():
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < mc["vocab_size"]:
            raise ValueError(
                f"config.json: {k}_token_id is {v!r}, not a token id of the "
                f"{mc['vocab_size']}-token vocabulary")


def read_config(path):
    """A model directory's config.json -> (its dict, ModelConfig's fields, layout, token ids), or
    one clear error."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"{path} is not a model directory: it has no config.json (LLaDA or Dream layout)")
    try:
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        return (cfg, *config_fields(cfg))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}/config.json is not valid JSON ({e})") from None
    except (KeyError, TypeError, AttributeError, ZeroDivisionError) as e:
        raise ValueError(
            f"{path}/config.json lacks or mistypes the field {e} of the LLaDA / Dream layout"
        ) from None
    except ValueError as e:   # check_fields', which names the field
        raise ValueError(f"{path}/{e}") from None


def read_weights(path, files, kmap, want, dtype, device):
    """The official *.safetensors shards -> our state dict (kmap: their key -> ours; want: our
    name -> shape), one shard at a time, straight to the target device and dtype; a damaged file,
    a shape the config does not say, quantized weights or a missing weight is one clear error."""
    from safetensors.torch import load_file
    sd = {}
    for fn in files:
        try:
            shard = load_file(os.path.join(path, fn), device=str(device))
        # safetensors' own error type for a truncated, empty or foreign file
        except Exception as e:
            raise ValueError(
                f"{path}/{fn} is not a readable safetensors file ({str(e).splitlines()[0][:120]}): "
                "it is truncated or damaged; download it again") from None
        for k, t in shard.items():
            if k not in kmap:
                continue  # e.g. rotary caches some exports carry
            if tuple(t.shape) != tuple(want[kmap[k]]):
                raise ValueError(
                    f"{path}/{fn}: {k} has shape {tuple(t.shape)}, the config says "
                    f"{tuple(want[kmap[k]])}")
            if t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
                raise ValueError(
                    f"{path}/{fn}: {k} is stored as {t.dtype} (quantized weights?); this loader "
                    "takes bf16, fp16 or fp32 weights: use the original checkpoint")
            sd[kmap[k]] = t.to(dtype)
    missing = sorted(set(kmap) - {k for k, v in kmap.items() if v in sd})
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
    return sd


def read_dir(path, device, dtype, build):
    """A directory in the official LLaDA or Dream layout -> (network, tokenizer, token ids, layout,
    the longest sequence it takes). build(fields) makes the network of ModelConfig's fields; its
    weights come from the shards, checked against it."""
    cfg, fields, layout, ids = read_config(path)
    files = sorted(fn for fn in os.listdir(path) if fn.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors weights")
    max_len = check_dir(path, files, cfg)
    with torch.device("meta"):
        net = build(fields)
    want = {k: v.shape for k, v in net.state_dict().items()}
    tied = net.c.tie_embeddings
    kmap = key_map(layout, net.c.n_layers, net.c.qkv_bias, tied)
    net.load_state_dict(read_weights(path, files, kmap, want, dtype, device), strict=not tied,
                        assign=True)
    if tied:
        net.lm_head.weight = net.tok_emb.weight
    return net, checked_tokenizer(path, ids["mask"]), ids, layout, max_len


def read_tiny(path, config, vocab):
    """A tiny dLLM checkpoint (support/pretrain.py) -> (its config(**fields), state dict, meta),
    checked to be one, of this version and of the tiny world's vocabulary (`vocab` tokens)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a tiny dLLM checkpoint ({type(e).__name__})") from None
    if not isinstance(ck, dict) or "config" not in ck or "state_dict" not in ck:
        raise ValueError(f"{path} is not a tiny dLLM checkpoint (written by pretrain.py)")
    try:
        c = config(**ck["config"])
    except TypeError as e:
        raise ValueError(f"{path} is not a tiny dLLM checkpoint of this version ({e})") from None
    if c.vocab_size != vocab:
        raise ValueError(
            f"{path} was trained with a vocabulary of {c.vocab_size} tokens, but the tiny world's "
            f"has {vocab}: rebuild it with python -m support.pretrain")
    return c, ck["state_dict"], ck.get("meta", {})


def check_model_name(name):
    """A --model that model.load_dllm can resolve, checked in a millisecond before anything else
    runs."""
    if (name in TINY or name in HUB or os.path.isdir(name)
            or (name.endswith(".pt") and os.path.isfile(name))):
        return
    if name.endswith(".pt"):
        raise FileNotFoundError(
            f"tiny dLLM checkpoint {name} not found (python -m support.pretrain writes one)")
    raise ValueError(
        f"unknown model {name!r}: use one of {TINY + tuple(HUB)}, a local directory in the "
        f"LLaDA or Dream layout, or a tiny checkpoint *.pt")
