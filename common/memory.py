"""
The memory plan: what a run will hold at its peak, added up from its shapes before anything large
is allocated, and compared with what the device has (a GPU's free memory; on the CPU the
machine's available RAM). A run that will not fit is refused in one line: what it needs, what
the device has, the flag to lower. Terms, in bytes:

  weights    every parameter at the dLLM's dtype (with gradient and Adam's moments when pretraining)
  kv cache   2 (K, V) x layers x rows x KV heads x (prompt + L) x head dim   (prefix / dual caches)
  forward    one layer's activations over the positions a forward computes (its largest transient)
  logits     rows x positions read x vocabulary at the dLLM's dtype, twice (output, scaled copy)
  softmax    token_stats' float32 softmax over the vocabulary, SOFTMAX_BYTES of rows at a time
  noise      T > 0: float64 Gumbel noise and float64 logits, NOISE_BYTES of rows at a time
  policy     the learned policy's activations at one step (float32, no gradient)
  memo       ForwardMemo's stored states (uncached GRPO rollouts at T = 0), up to its cap
  recorded   what GRPO rollouts record per step and row, collated once more for the update
  update     the policy's activations kept for the backward of one loss chunk
  runtime    what the process holds before any of these (interpreter and torch; a CUDA context)

A decode holds the weights, the cache and, at one step, the largest of its forward, its logits
with the softmax, and its logits with the noise; a GRPO round holds either that (with the
records) or the update. docs/real-models.md shows the plan for LLaDA-8B, and a test measures the
CPU's peak against it.
"""
import os
from dataclasses import dataclass, field

import torch

GiB = 2 ** 30
SOFTMAX_BYTES = 2 ** 28   # token_stats' float32 softmax: this many bytes of rows at a time
NOISE_BYTES = 2 ** 27     # token_stats' float64 Gumbel noise: this many bytes of rows (>= 1 row)
MEMO_BYTES = 2 ** 31      # a ForwardMemo stores states up to about this much, then only reads
RUNTIME = dict(cpu=0.25 * GiB, cuda=0.6 * GiB)   # interpreter + torch (CPU), the CUDA context (GPU)
POLICY_ACT_BYTES = 8 * 128 * 4        # the policy's live activations per position (float32)
POLICY_BYTES_PER_POSITION = 19_000    # its activations kept for backward, per position (measured)


@dataclass
class Plan:
    """What a run holds at its peak: its largest phase's terms (name -> bytes), and what it is."""
    what: str
    terms: dict = field(default_factory=dict)

    @property
    def total(self):
        return sum(self.terms.values())

    def line(self):
        big = sorted(self.terms.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v / GiB:.1f}" for k, v in big if v >= 0.05 * GiB) or "-"


def largest(what, *phases):
    """The phase (a dict of terms) with the largest total, as a Plan."""
    return Plan(what, max(phases, key=lambda p: sum(p.values())))


def weight_bytes(c, e):
    """Parameters x e bytes for a ModelConfig c (biases and norms included)."""
    hd = c.d_model // c.n_heads
    qkv = (c.n_heads + 2 * c.n_kv_heads) * hd
    per_layer = c.d_model * qkv + c.n_heads * hd * c.d_model + 3 * c.d_model * c.mlp_hidden
    per_layer += 2 * c.d_model + qkv * bool(c.qkv_bias)
    heads = 1 if c.tie_embeddings else 2
    return e * (c.n_layers * per_layer + heads * c.vocab_size * c.d_model + c.d_model)


def kv_bytes(c, e, rows, N):
    return 2 * c.n_layers * rows * c.n_kv_heads * (c.d_model // c.n_heads) * N * e


def layer_bytes(c, e, tokens):
    """The largest transient of one layer over `tokens` positions: the MLP (residual, normed input,
    gate and up, their product) or attention (q/k/v and rotary's float32 temporaries)."""
    hd = c.d_model // c.n_heads
    mlp = (2 * c.d_model + 4 * c.mlp_hidden) * e
    attn = (3 * c.d_model + (c.n_heads + 2 * c.n_kv_heads) * hd) * e + 3 * c.n_heads * hd * 4
    return tokens * max(mlp, attn)


def step_terms(c, e, rows, N, read, temperature, needs=()):
    """The largest moment of one decoding step of `rows` sequences over N positions, the LM head
    on `read` of them: the forward, or its logits with their scaled copy, the softmax's chunk (its
    probabilities, a float32 copy of bf16 logits, and the entropy's two temporaries) or the noise's
    chunk (the noise and the float64 logits)."""
    logits = rows * read * c.vocab_size * e
    f32, f64 = read * c.vocab_size * 4, read * c.vocab_size * 8          # one row's, per dtype
    copies = 1 + (e < 4) + 2 * ("entropy" in needs)
    softmax = min(rows, max(1, SOFTMAX_BYTES // f32)) * f32 * copies
    noise = min(rows, max(1, NOISE_BYTES // f64)) * f64 * 2 if temperature > 0 else 0
    phases = (dict(forward=layer_bytes(c, e, rows * N)), dict(logits=2 * logits),
              dict(logits=logits, softmax=softmax), dict(logits=logits, noise=noise))
    return max(phases, key=lambda t: sum(t.values()))


def decode_terms(c, e, rows, P, L, cache="none", temperature=0.0, needs=()):
    """What a decode of `rows` buffers (prompt P + L) holds at its peak, besides the weights."""
    terms = dict(step_terms(c, e, rows, P + L, L, temperature, needs))
    terms["policy"] = rows * L * POLICY_ACT_BYTES
    if cache != "none":
        terms["kv cache"] = kv_bytes(c, e, rows, P + L)
    return terms


def decode_plan(c, e, rows, P, L, cache="none", temperature=0.0, needs=(), device="cpu", what=None):
    """A Plan for decoding: weights, runtime and the decode's peak."""
    terms = dict(weights=weight_bytes(c, e), runtime=RUNTIME.get(device, RUNTIME["cpu"]))
    terms.update(decode_terms(c, e, rows, P, L, cache, temperature, needs))
    what = what or f"decoding {rows} x ({P} + {L}) positions, cache {cache}, T {temperature:g}"
    return Plan(what, terms)


def grpo_plan(c, e, prompts, G, E, P, L, cache="none", temperature=0.0, chunk=None, device="cpu"):
    """A Plan for one GRPO round: prompts x (G + E) rollouts of prompt P + L, then the update,
    whose loss chunks hold `chunk` recorded steps of L positions each (default: every step)."""
    rows, steps = prompts * G, prompts * (G + E) * L     # the policy's rollouts; every step
    base = dict(weights=weight_bytes(c, e), runtime=RUNTIME.get(device, RUNTIME["cpu"]))
    recorded = steps * L * 8                             # conf, masks, action per step and position
    roll = dict(base, **decode_terms(c, e, rows, P, L, cache, temperature), recorded=recorded)
    if cache == "none" and temperature == 0:             # a stored state: x0, conf, its key's bytes
        roll["memo"] = min(MEMO_BYTES, rows * L * (L * 20 + 200))
    chunk = steps if chunk is None else min(chunk, steps)
    upd = dict(base, recorded=2 * recorded, update=chunk * L * POLICY_BYTES_PER_POSITION)
    what = (f"a GRPO round of {prompts} x ({G} + {E}) rollouts, prompt {P} + L {L}, cache {cache}, "
            f"T {temperature:g}")
    return largest(what, roll, upd)


def pretrain_plan(c, rows, N, device="cpu"):
    """A Plan for one pretraining step of the tiny dLLM (float32, AdamW): weights with gradient and
    two moments, every layer's activations kept for backward, the logits with their log-softmax and
    gradient."""
    acts = c.n_layers * rows * N * (10 * c.d_model + 5 * c.mlp_hidden) * 4
    terms = dict(weights=4 * weight_bytes(c, 4), runtime=RUNTIME.get(device, RUNTIME["cpu"]),
                 activations=acts, logits=4 * rows * N * c.vocab_size * 4)
    return Plan(f"a pretraining step of {rows} sequences x {N} positions", terms)


def available(device):
    """Bytes a run may still allocate on device: a GPU's free memory (with what torch's allocator
    has cached), the machine's available RAM on a CPU (None where neither is known)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check(plan, device, lower, loaded=("weights", "runtime")):
    """Refuse a Plan that will not fit in one line (ValueError). loaded: terms already in memory
    (the weights of a loaded dLLM, the process itself), not counted again against what is free."""
    rest = Plan(plan.what, {k: v for k, v in plan.terms.items() if k not in loaded})
    have = available(device)
    if have is not None and rest.total > have:
        raise ValueError(f"{plan.what} needs about {rest.total / GiB:.1f} GiB ({rest.line()} GiB), "
                         f"and this device ({torch.device(device).type}) has {have / GiB:.1f} GiB "
                         f"free: lower {lower}")


def check_buffer(dllm, B, P, L, cache="none", temperature=0.0, needs=(),
                 lower="--batch-size or --gen-length"):
    """One clear error, before any work, for a buffer longer than the dLLM takes, or a decode of B
    buffers (prompt P + L) that will not fit in what the device has free."""
    N = P + L
    if dllm.max_len and N > dllm.max_len:
        raise ValueError(
            f"prompt of {P} tokens + gen length {L} exceeds {dllm.name}'s {dllm.max_len} positions")
    e = dllm.net.tok_emb.weight.element_size()
    what = f"a batch of {B} buffers of {N} positions (cache {cache}, T {temperature:g})"
    check(decode_plan(dllm.net.c, e, B, P, L, cache, temperature, needs, dllm.device.type, what),
          dllm.device, lower)


def check_round(dllm, prompts, G, E, P, L, cache, temperature, chunk):
    """One GRPO round (prompts x (G + E) rollouts of prompt P + L, then loss chunks of `chunk`
    steps) against the device's free memory."""
    check_buffer(dllm, prompts * G, P, L, cache, temperature)
    e = dllm.net.tok_emb.weight.element_size()
    check(grpo_plan(dllm.net.c, e, prompts, G, E, P, L, cache, temperature, chunk,
                    dllm.device.type), dllm.device,
          "--prompts-per-step, --group-size or --batch-size (the update's loss chunks)")
