"""
Machinery for model.py's loaders: the device to run on, and an official LLaDA / Dream directory's
parts - its checkpoint key names, its files' sanity, its tokenizer (loaded without remote code).
"""
import json
import os

import torch


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


def checked_tokenizer(path):
    """load_tokenizer, with its chat template rendered once: a damaged file or template is one line
    naming path."""
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
    return tok
