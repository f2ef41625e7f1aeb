"""
The dLLM: one bidirectional transformer (RMSNorm, rotary positions, SwiGLU, optional grouped KV
heads and q/k/v biases) that serves the tiny models trained here and the real ones.
LLaDA-8B-Instruct / LLaDA-1.5 and Dream-v0-Instruct-7B load by copying the official safetensors into
it through a key map with shape checks (common/hub.py, docs/real-models.md) - no remote code, so
nothing executes from the hub and no transformers release can break it.

    load_dllm("tiny")   -> DLLM with .mask_id .eos_id .pad_id .vocab_size .device .tokenizer
                           .logits(x, attention_mask) -> (B, N, V), position i scores token i
    python model.py --shape llada      # build LLaDA-8B's exact shape on the meta device, count params
    python model.py --name tiny        # load the shipped weights and print a summary

Names: tiny, tiny-b (trained by pretrain.py, shipped in weights/), llada, llada-1.5, dream (hub),
a local directory in the official LLaDA or Dream layout, or a tiny checkpoint file (*.pt).
"""
import argparse
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.chars import CharTokenizer
from common.cli import write_atomic
from common.hub import (HUB, SHAPES, TINY, check_model_name, config_fields, read_dir, read_tiny,
                        resolve_device)

# The tiny dLLMs ship with the repository (a few MB each); pretrain.py rebuilds them (the exact
# command is in each file's meta). Resolved next to this file, so any working directory finds them.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

@dataclass
class ModelConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_embeddings: bool = False
    emb_scale: float = 1.0    # LLaDA input_emb_norm: embeddings * sqrt(d_model)
    logit_scale: float = 1.0  # LLaDA scale_logits: logits / sqrt(d_model)


# --------------------------------------------------------------------------------------------------
# the architecture

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()  # normalise in float32, cast back, then scale (LLaDA / Qwen2 convention)
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rotary(pos, head_dim, theta):
    """cos, sin of shape (B, 1, N, hd) for integer positions pos (B, N), computed in float32."""
    i = torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32)
    inv_freq = theta ** (-i / head_dim)
    freqs = pos.float()[..., None] * inv_freq             # (B, N, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]      # (B, 1, N, hd), "NeoX" layout
    return emb.cos(), emb.sin()


def apply_rotary(x, cos, sin):
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        hd = c.d_model // c.n_heads
        self.c, self.hd = c, hd
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.q = nn.Linear(c.d_model, c.n_heads * hd, bias=c.qkv_bias)
        self.k = nn.Linear(c.d_model, c.n_kv_heads * hd, bias=c.qkv_bias)
        self.v = nn.Linear(c.d_model, c.n_kv_heads * hd, bias=c.qkv_bias)
        self.o = nn.Linear(c.n_heads * hd, c.d_model, bias=False)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.gate = nn.Linear(c.d_model, c.mlp_hidden, bias=False)
        self.up = nn.Linear(c.d_model, c.mlp_hidden, bias=False)
        self.down = nn.Linear(c.mlp_hidden, c.d_model, bias=False)

    def merge_projections(self):
        """One matmul for q, k and v and one for gate and up: the same weights, concatenated, so a
        GPU runs fewer and larger kernels (load_dllm does it on CUDA). The sums inside a matmul may
        run in another order: logits move by float rounding (about 1e-6 of their scale in float32,
        1e-2 in bf16)."""
        if hasattr(self, "qkv"):
            return
        def cat(*layers):
            out = nn.Linear(layers[0].in_features, sum(l.out_features for l in layers),
                            bias=layers[0].bias is not None, device=layers[0].weight.device,
                            dtype=layers[0].weight.dtype)
            out.weight = nn.Parameter(torch.cat([l.weight for l in layers]), requires_grad=False)
            if out.bias is not None:
                out.bias = nn.Parameter(torch.cat([l.bias for l in layers]), requires_grad=False)
            return out
        self.qkv, self.gate_up = cat(self.q, self.k, self.v), cat(self.gate, self.up)
        self.split = (self.q.out_features, self.k.out_features, self.v.out_features)
        del self.q, self.k, self.v, self.gate, self.up

    def forward(self, x, cos, sin, attn_mask, kv=None, span=None):
        """x (B, n, d) at positions span = (a, b) of the buffer (the whole buffer when kv is None).
        kv: this layer's cached (K, V) (B, Hkv, N, hd) for the whole buffer; the new keys/values of
        positions a..b-1 are written into it (in place: no copy of the cache), the rest attend as
        cached. Returns (x, (k, v) of x's own positions)."""
        B, n, _ = x.shape
        h = self.attn_norm(x)
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(h).split(self.split, -1)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        q = q.view(B, n, -1, self.hd).transpose(1, 2)          # (B, H, n, hd)
        k = k.view(B, n, -1, self.hd).transpose(1, 2)          # (B, Hkv, n, hd)
        v = v.view(B, n, -1, self.hd).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        new = (k, v)
        # the cached keys/values of the whole buffer (B, Hkv, N, hd), the fresh span written in
        if kv is not None:
            a, b = span
            kv[0][:, :, a:b], kv[1][:, :, a:b] = k, v
            k, v = kv
        # grouped KV heads (Dream): query head h reads KV head h // rep, so the rep query heads of a
        # group are folded into its query positions (B, Hkv, rep * n, hd) - K and V are never
        # expanded (the mask is per key only)
        a = F.scaled_dot_product_attention(q.reshape(B, k.shape[1], -1, self.hd), k, v,
                                           attn_mask=attn_mask)
        # bidirectional, 1/sqrt(hd)
        x = x + self.o(a.view(B, -1, n, self.hd).transpose(1, 2).reshape(B, n, -1))
        h = self.mlp_norm(x)
        if hasattr(self, "gate_up"):
            gate, up = self.gate_up(h).chunk(2, -1)
        else:
            gate, up = self.gate(h), self.up(h)
        return x + self.down(F.silu(gate) * up), new


class Transformer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def merge_projections(self):
        for block in self.blocks:
            block.merge_projections()
        return self

    def forward(self, x, attention_mask=None, start=0, cache=None, span=None, return_kv=False,
                end=None):
        """x (B, N) token ids; attention_mask (B, N) 1 = real token, 0 = left padding. -> logits (B,
        N - start, V) for positions start.. (the LM head skips the prompt). KV cache (env.py's
        prefix / dual modes): return_kv=True also returns every layer's (K, V) (B, Hkv, N, hd); with
        cache (that list) and span = (a, b), only positions a..b-1 are computed - they attend to
        their own fresh keys/values and to the cached ones elsewhere - and the logits are those of
        positions max(start, a)..b-1 (..end-1 when end is given: the LM head over a vocabulary of
        126K is worth skipping where nobody reads it)."""
        N = x.shape[1]
        if attention_mask is None:
            pos = torch.arange(N, device=x.device).expand_as(x)
            attn = None
        else:  # positions from the cumulative mask, so left padding changes nothing
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            attn = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, N) keys
        a, b = span if span is not None else (0, N)
        if cache is not None and span is None:
            raise ValueError("a cached forward needs the span of positions it computes")
        cos, sin = rotary(pos[:, a:b], self.c.d_model // self.c.n_heads, self.c.rope_theta)
        h = self.tok_emb(x[:, a:b]) * self.c.emb_scale                     # (B, b - a, d)
        kvs = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, cos, sin, attn, None if cache is None else cache[i], (a, b))
            if return_kv:   # kept across steps: each owns its bytes (a merged V is a view of q/k/v)
                kvs.append(tuple(t if t.untyped_storage().nbytes() == t.nbytes else t.contiguous()
                                 for t in kv))
        h = h[:, max(start - a, 0):(end - a if end is not None else None)]
        logits = self.lm_head(self.norm(h)) * self.c.logit_scale
        return (logits, kvs) if return_kv else logits


# --------------------------------------------------------------------------------------------------
# the dLLM object the rest of the repo sees

class DLLM:
    """A frozen dLLM: the network, its tokenizer and its special ids. Shift handling lives here
    only."""

    def __init__(self, net, tokenizer, name, mask_id, eos_id, pad_id, stop_ids=(), shift=False):
        if pad_id == mask_id:
            raise ValueError(f"{name}: the pad token must not be the mask token ({pad_id})")
        if not 0 <= mask_id < net.c.vocab_size:
            raise ValueError(
                f"{name}: mask id {mask_id} outside the vocabulary ({net.c.vocab_size})")
        self.net, self.tokenizer, self.name = net.eval().requires_grad_(False), tokenizer, name
        self.mask_id, self.eos_id, self.pad_id, self.shift = mask_id, eos_id, pad_id, shift
        self.stop_ids = {eos_id, *stop_ids}
        self.vocab_size = net.c.vocab_size
        self.is_tiny = isinstance(tokenizer, CharTokenizer)
        self.max_len = None  # longest prompt + buffer the model takes (None: no limit known)

    @property
    def device(self):
        return self.net.tok_emb.weight.device

    def compile(self):
        """torch.compile the network's forward, with dynamic shapes (the batch shrinks as rows
        finish, prompts differ in length, a cached step's span moves with the block): eval.py /
        sample.py --compile. The uncached forward, a block's first step (which returns the keys and
        values) and the cached steps are each compiled on first use (and again for a shape the first
        graph did not generalise to); the cache is still written in place. Fused kernels round
        differently from eager ones, so logits move by about 1e-5 and a near-tie between two tokens
        could flip (docs/speed.md has what it gains)."""
        self.net.forward = torch.compile(self.net.forward, dynamic=True)
        return self

    @torch.no_grad()
    def logits(self, x, attention_mask=None, start=0, return_kv=False):
        """(B, N) ids -> (B, N - start, V) logits where row j scores token start + j (and, with
        return_kv, every layer's keys/values for a KV cache). Dream's logit at i predicts token i+1,
        so it reads one position earlier; nothing else knows."""
        if not self.shift:
            return self.net(x, attention_mask, start, return_kv=return_kv)
        if start == 0:
            if return_kv:
                raise ValueError("a KV cache needs a prompt before the generated positions")
            out = self.net(x, attention_mask)
            # position 0 has no predictor: repeat
            return torch.cat([out[:, :1], out[:, :-1]], dim=1)
        out = self.net(x, attention_mask, start - 1, return_kv=return_kv)
        return (out[0][:, :-1], out[1]) if return_kv else out[:, :-1]

    @torch.no_grad()
    def logits_span(self, x, attention_mask, start, lo, hi, cache, run_to=None):
        """Cached step: (b, hi - lo, V) logits scoring tokens start+lo .. start+hi-1 of x. The
        network runs only on the positions that produce them (one earlier for Dream), or on
        lo..run_to-1 when run_to is given (prefix cache: to the end of the buffer), attending to
        `cache` (from logits(return_kv=True)) everywhere else."""
        s, run_to = int(self.shift), hi if run_to is None else run_to
        a = start + lo - s
        return self.net(x, attention_mask, a, cache=cache, span=(a, start + run_to - s),
                        end=start + hi - s)

    def prompt_text(self, question, system, answer_prefix):
        """The full prompt string: chat template for real models, the bare question for tiny ones.
        """
        if self.is_tiny:
            return question
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": question})
        return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                  tokenize=False) + answer_prefix

    def encode(self, texts):
        """Left-padded prompt ids (B, P) and attention mask (B, P) on the model's device."""
        encode = self.tokenizer.encode if self.is_tiny else (
            lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"])
        ids = [encode(t) for t in texts]
        P = max(len(t) for t in ids)
        x = torch.full((len(ids), P), self.pad_id, dtype=torch.long)
        am = torch.zeros((len(ids), P), dtype=torch.long)
        for i, t in enumerate(ids):
            x[i, P - len(t):], am[i, P - len(t):] = torch.tensor(t), 1
        return x.to(self.device), am.to(self.device)

    def decode(self, ids):
        """Generated ids -> text, cut at the first end-of-text / end-of-turn; masks shown as '_'."""
        out = []
        for i in ids:
            if i in self.stop_ids:
                break
            out.append(i)
        if self.is_tiny:
            return "".join("_" if i == self.mask_id else self.tokenizer.decode([i]) for i in out)
        return self.tokenizer.decode([self.pad_id if i == self.mask_id else i for i in out],
                                     skip_special_tokens=False)


# --------------------------------------------------------------------------------------------------
# loading

def load_hf_dir(path, device, dtype, name=None):
    """A directory in the official LLaDA or Dream layout (read by common/hub.py) -> DLLM."""
    net, tok, ids, layout, max_len = read_dir(path, device, dtype,
                                              lambda f: Transformer(ModelConfig(**f)))
    d = DLLM(net, tok, name or path, ids["mask"], ids["eos"], ids["pad"],
             (ids["eot"],) if "eot" in ids else (), shift=(layout == "dream"))
    d.max_len = max_len
    return d


def save_tiny(path, net, meta):
    """Tiny checkpoint: config + weights + how it was trained; written atomically."""
    ck = {"config": asdict(net.c), "state_dict": net.state_dict(), "meta": meta}
    write_atomic(path, lambda tmp: torch.save(ck, tmp))


# A tiny dLLM saw about 60 positions in pretraining (10% of sequences twice that): far past them its
# rotary positions mean nothing, and a buffer this long is all the memory a CPU has.
TINY_MAX_LEN = 1024


def load_tiny_file(path, device, name=None):
    """A tiny dLLM checkpoint (support/pretrain.py) -> DLLM."""
    tok = CharTokenizer()
    c, state, meta = read_tiny(path, ModelConfig, len(tok))
    net = Transformer(c)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: its weights do not match its config ({str(e).splitlines()[0]})") from None
    d = DLLM(net.to(device), tok, name or path, tok.mask_token_id, tok.eos_token_id,
             tok.pad_token_id)
    d.max_len, d.meta = TINY_MAX_LEN, meta
    return d


def load_dllm(name, device=None, dtype=None, revision=None, weights_dir=WEIGHTS_DIR, merge=None,
              compile=False):
    """Any dLLM by name (see the module docstring). bf16 on GPU, fp32 on CPU unless dtype says
    otherwise. merge (default: on CUDA): one matmul for q/k/v and one for gate/up
    (Block.merge_projections); the CPU keeps the separate ones, so its numbers stay those of the
    layout the weights come in. compile: DLLM.compile."""
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if name in TINY:
        path = os.path.join(weights_dir, f"{name}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing (it ships with the repository): rebuild it with "
                f"python -m support.pretrain --name {name} --out-dir {weights_dir}")
        dllm = load_tiny_file(path, device, name)
    elif name.endswith(".pt") and os.path.isfile(name):
        dllm = load_tiny_file(name, device)
    elif os.path.isdir(name):
        dllm = load_hf_dir(name, device, dtype)
    elif name in HUB:
        try:
            from huggingface_hub import snapshot_download
            path = snapshot_download(
                HUB[name], revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        except Exception as e:
            raise RuntimeError(
                f"could not fetch {HUB[name]} from the hub ({type(e).__name__}); download it "
                f"with huggingface-cli and pass the local directory instead") from None
        dllm = load_hf_dir(path, device, dtype, name)
    else:
        check_model_name(name)
    if merge if merge is not None else device.type == "cuda":
        dllm.net.merge_projections()
    return dllm.compile() if compile else dllm


def build_shape(kind, device="meta"):
    """A randomly initialised (or, on meta, unallocated) network of a real model's exact shape."""
    with torch.device(device):
        return Transformer(ModelConfig(**config_fields(SHAPES[kind])[0]))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES),
                   help="build this real shape on the meta device and count params")
    p.add_argument("--name", help="load a dLLM by name and print a summary")
    p.add_argument("--revision", default=None, help="hub revision (commit, tag) to pin")
    a = p.parse_args()
    if a.shape:
        net = build_shape(a.shape)
        print(
            f"{a.shape}: {sum(t.numel() for t in net.parameters()) / 1e9:.3f}B parameters, config "
            f"{net.c}")
    if a.name:
        try:
            d = load_dllm(a.name, revision=a.revision)
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}")
        n = sum(t.numel() for t in d.net.parameters())
        print(f"{d.name}: {n / 1e6:.2f}M parameters on {d.device} ({d.net.tok_emb.weight.dtype}), "
              f"mask {d.mask_id} eos {d.eos_id} pad {d.pad_id}, vocab {d.vocab_size}")
    if not (a.shape or a.name):
        p.print_help()
