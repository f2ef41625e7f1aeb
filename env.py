"""
The unmasking MDP (paper section 3), with the frozen dLLM as the environment.

  state    buffer x = [prompt | L x MASK] per row, its current block, NFE spent, done flag
  step     one dLLM forward over the unfinished rows: x0 = argmax logits (or a Gumbel sample at
           temperature T > 0, noise in float64 from a per-row, per-step seed), conf = softmax(logits)[x0]
           from the noise-free logits
  obs      conf and mask bit at all L positions, candidates (masked positions of the current block),
           time t = NFE / L; heuristics may also ask for the top1-top2 margin and the entropy
  action   a subset of the candidates; selected positions take x0 and are never remasked
  NFE      +1 per row per forward while that row has masks in its current block; finished rows are
           not computed at all
  end      no masks left, or the step budget is spent (BL iterations per block, L in total: a block
           that is not filled in time is left with its masks and the next block starts)
  reward   computed outside (train.py) from the grader: correct * ((L - NFE + 1) / L) ** alpha

Semi-autoregressive decoding fills blocks of BL positions left to right (BL < L); BL == L is full
diffusion. Every policy - heuristic or learned - runs through this one `generate` loop.

    python sample.py --model tiny --task chain --policies "topk:steps=32,threshold:0.9"   # uses this
"""
import os
from dataclasses import dataclass, field

import torch


@dataclass
class Obs:
    """What a policy sees at one step, for the b unfinished rows (shapes below)."""
    x0: torch.Tensor          # (b, L) long   the dLLM's proposal for every generation position
    conf: torch.Tensor        # (b, L) float32 probability of x0 (all positions, unmasked ones too)
    masked: torch.Tensor      # (b, L) bool   still [MASK]
    cand: torch.Tensor        # (b, L) bool   masked and in the row's current block (may be unmasked)
    t: torch.Tensor           # (b,)   float32 NFE spent so far / L
    block_step: torch.Tensor  # (b,)   long   iterations already spent in the current block
    n_blocks: int             # L / BL
    keys: torch.Tensor        # (b,)   long   per-row random key (see uniform)
    margin: torch.Tensor = None   # (b, L) float32 top1 - top2 probability, when policy.needs it
    entropy: torch.Tensor = None  # (b, L) float32 entropy of the predictive distribution, when needed
    eos: torch.Tensor = None      # (b, L) bool   x0 is an end-of-text / end-of-turn token, when needed
    alpha: torch.Tensor = None    # (b,)   float32 the row's reward exponent (alpha-conditioned GRPO), if any

    def uniform(self, stream=0):
        """(b, L) uniforms in [0, 1) that depend only on (row key, NFE spent, position, stream): a row's draws do
        not change with batching or sharding, so the same seed gives the same rollouts everywhere. Streams 0, 1, 2
        are independent draws (a DPLS action needs three)."""
        L = self.conf.shape[1]
        step = (self.t * L).round().long() + 0x51ED27 + 0x3C6EF372 * stream
        h = fmix32(fmix32(self.keys[:, None] ^ fmix32(step[:, None])) ^ torch.arange(L, device=self.keys.device))
        return (h >> 8).float() / 2 ** 24


@dataclass
class Rollout:
    """The result of generate(). Steps are recorded only with record=True (what GRPO needs)."""
    tokens: torch.Tensor      # (B, L) final generation (MASK where never unmasked)
    nfe: torch.Tensor         # (B,) forwards spent per row
    order: torch.Tensor       # (B, L) the NFE (1-based) at which each position was unmasked, 0 = never
    steps: list = field(default_factory=list)  # per step: dict(rows, conf, masked, cand, t, action, logp, alpha, order)


def fmix32(h):
    """MurmurHash3's 32-bit finaliser on int64 tensors (a counter-based random number generator)."""
    M = 0xFFFFFFFF
    h = h & M
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & M
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & M
    return h ^ (h >> 16)


def row_keys(seed, ids):
    """Random keys (B,) for rows identified by integers ids (B,) (e.g. problem index * G + member)."""
    return fmix32(fmix32(torch.as_tensor(ids, dtype=torch.long)) ^ fmix32(torch.tensor(seed, dtype=torch.long) + 0x9E37))


def noise_seeds(keys, nfe):
    """(b,) 63-bit seeds for the dLLM's Gumbel noise from (row key, NFE spent), salted apart from the policy's
    draws: a row's tokens at T > 0 never depend on batching, sharding or the other rows."""
    lo = fmix32(keys ^ fmix32(nfe + 0xD1CE))
    return (fmix32(lo ^ 0xB5297A4D) << 31) ^ lo


def sample_tokens(logits, temperature, seeds=None):
    """x0 and conf (b, L) from logits (b, L, V). Greedy at T = 0; otherwise a Gumbel-max sample in float64,
    which is an exact draw from softmax(logits / T), with each row's noise from its own generator seeded by
    seeds (b,) (noise_seeds). conf always uses the noise-free softmax."""
    probs = torch.softmax(logits.float(), dim=-1)                      # (b, L, V) float32
    if temperature > 0:
        if seeds is None:
            raise ValueError("sampling at temperature > 0 needs per-row seeds (env.noise_seeds)")
        dev = logits.device
        u = torch.stack([torch.rand(logits.shape[1:], dtype=torch.float64, device=dev,
                                    generator=torch.Generator(dev).manual_seed(int(s))) for s in seeds.tolist()])
        x0 = (logits.double() / temperature - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
    else:
        x0 = logits.argmax(-1)
    return x0, probs.gather(-1, x0[..., None]).squeeze(-1), probs


CACHES = ("none", "prefix", "dual")


def check_decoding(L, BL, cache="none"):
    """The decoding setup every script and generate() accept: L a positive multiple of BL, and a KV cache only in
    semi-autoregressive decoding (in full diffusion every step would refresh the whole cache)."""
    if BL <= 0 or L <= 0 or L % BL:
        raise ValueError(f"--gen-length {L} must be a multiple of --block-length {BL}, both positive")
    if cache not in CACHES:
        raise ValueError(f"unknown cache {cache!r}: use one of {CACHES}")
    if cache != "none" and BL == L:
        raise ValueError(f"--cache {cache} needs semi-autoregressive decoding (--block-length < --gen-length {L})")


def check_buffer(dllm, B, P, L):
    """One clear error, before any work, for a buffer longer than the dLLM takes, or a batch whose attention scores
    alone (B x heads x N x N float32, what an unfused kernel holds for one layer) would not fit in the device's
    memory."""
    N = P + L
    if dllm.max_len and N > dllm.max_len:
        raise ValueError(f"prompt of {P} tokens + gen length {L} exceeds {dllm.name}'s {dllm.max_len} positions")
    need = B * dllm.net.c.n_heads * N * N * 4
    dev = dllm.device
    if dev.type == "cuda":
        have = torch.cuda.mem_get_info(dev)[1]
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:
        return
    if need > have:
        raise ValueError(f"a batch of {B} buffers of {N} positions needs about {need / 2 ** 30:.0f} GiB for one layer's "
                         f"attention, more than this device's {have / 2 ** 30:.0f} GiB: lower --batch-size or --gen-length")


def generate(dllm, policy, prompt_ids, prompt_mask, gen_length, block_length, temperature=0.0,
             record=False, keys=None, cache="none", alpha=None, memo=None):
    """Run `policy` on a batch of left-padded prompts (B, P) until every row is finished.
    Returns a Rollout. The policy object needs `act(obs) -> (unmask (b, L) bool, logp (b,) or None[, order (b, L)])`
    and an optional set `needs` of extra observations ('margin', 'entropy', 'eos'). keys (B,) seed each row's
    policy randomness and, at T > 0, the dLLM's Gumbel noise (default: row_keys(0, arange(B))).
    cache: 'none' (exact), or 'prefix' / 'dual' (approximate KV caches, semi-autoregressive only; see below).
    alpha (B,): each row's reward exponent, shown to an alpha-conditioned policy (obs.alpha) and recorded.
    memo: a ForwardMemo shared by calls on the same prompts, L and dLLM (eval.py keeps one per setting's model, task,
    L and seed). At temperature 0 without a cache a row's forward depends on nothing but its tokens, so each state
    computed is stored there and every later call that reaches it reads it instead of running the model: the
    first step (everything masked) is shared by every policy, and so is every later state two policies agree on.
    The same numbers, fewer forwards (the tiny suite's heuristic sweeps run 2.3-3.9x fewer row-forwards)."""
    L, BL = gen_length, block_length
    check_decoding(L, BL, cache)
    policy.check(L, BL)
    B, P = prompt_ids.shape
    check_buffer(dllm, B, P, L)
    dev = prompt_ids.device
    x = torch.cat([prompt_ids, torch.full((B, L), dllm.mask_id, dtype=torch.long, device=dev)], 1)  # (B, P+L)
    am = torch.cat([prompt_mask, torch.ones((B, L), dtype=prompt_mask.dtype, device=dev)], 1)
    pos = torch.arange(L, device=dev)                                  # (L,)
    block = torch.zeros(B, dtype=torch.long, device=dev)               # current block per row
    block_step = torch.zeros(B, dtype=torch.long, device=dev)
    nfe = torch.zeros(B, dtype=torch.long, device=dev)
    order = torch.zeros((B, L), dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    keys = (row_keys(0, torch.arange(B)) if keys is None else keys).to(dev)
    needs = getattr(policy, "needs", ())
    stepper = CachedStep(dllm, P, L, BL, cache, needs) if cache != "none" else None
    stop_ids = torch.tensor(sorted(dllm.stop_ids), device=dev)
    steps = []
    memo = memo if temperature == 0 and stepper is None else None      # exact only there
    if memo is not None:
        memo.check_prompts(keys, prompt_ids)
    while not done.all():
        rows = (~done).nonzero().squeeze(1)                            # (b,) unfinished rows only
        seeds = noise_seeds(keys[rows], nfe[rows]) if temperature > 0 else None
        if stepper:
            x0, conf, margin, entropy = stepper(x, am, rows, block[rows], block_step[rows] == 0, temperature, seeds)
        elif memo is not None:
            x0, conf, margin, entropy = memo.step(dllm, x, am, rows, keys, P)
            margin, entropy = (v if k in needs else None for k, v in (("margin", margin), ("entropy", entropy)))
        else:
            logits = dllm.logits(x[rows], am[rows], start=P)           # (b, L, V)
            x0, conf, probs = sample_tokens(logits, temperature, seeds)
            margin, entropy = extras(probs, needs)
            del probs
        gx = x[rows, P:]                                               # (b, L)
        masked = gx == dllm.mask_id
        in_block = (pos[None] // BL) == block[rows, None]
        obs = Obs(x0, conf, masked, masked & in_block, nfe[rows].float() / L, block_step[rows], L // BL,
                  keys[rows], margin, entropy, alpha=None if alpha is None else alpha[rows])
        if "eos" in needs:
            obs.eos = torch.isin(x0, stop_ids)
        unmask, logp, *draw = policy.act(obs)                          # a DPLS policy also returns its draw order
        unmask = unmask & obs.cand                                     # never touch anything else
        nfe[rows] += 1
        x[rows, P:] = torch.where(unmask, x0, gx)
        order[rows] = torch.where(unmask, nfe[rows, None], order[rows])
        if record:
            steps.append(dict(rows=rows, conf=conf, masked=masked, cand=obs.cand, t=obs.t,
                              action=unmask, logp=logp, alpha=obs.alpha, order=draw[0] if draw else None))
        # advance blocks: filled, or out of iterations (BL per block)
        left = (obs.cand & ~unmask).any(1)
        block_step[rows] += 1
        advance = ~left | (block_step[rows] >= BL)
        block[rows] += advance.long()
        block_step[rows] = torch.where(advance, 0, block_step[rows])
        done[rows] = block[rows] >= L // BL
    return Rollout(x[:, P:], nfe, order, steps)


MEMO_BYTES = 2 ** 31   # a ForwardMemo stores states (in host memory) until it holds about this much, then only reads


class ForwardMemo:
    """The dLLM's outputs (x0, conf, margin, entropy) per visited state, for generate(memo=...): a state is (row key,
    generated tokens); the row key stands for its prompt, which is checked (one memo, one set of prompts). Each
    stored row keeps its whole forward batch alive, so a batch's bytes count once, when its first row is stored.
    hits / misses count the rows read and computed (eval.py prints the saving)."""

    def __init__(self, max_bytes=MEMO_BYTES):
        self.table, self.prompts = {}, {}
        self.bytes, self.max_bytes, self.hits, self.misses = 0, max_bytes, 0, 0

    def check_prompts(self, keys, prompt_ids):
        """Once per generate call: each row key must come with the (padded) prompt it came with before."""
        for k, prompt in zip(keys.tolist(), prompt_ids.cpu()):
            prompt = prompt.numpy().tobytes()
            if self.prompts.setdefault(k, prompt) != prompt:
                raise ValueError(f"a ForwardMemo is for one set of prompts batched one way: row key {k} came with "
                                 f"another (padded) prompt")

    def step(self, dllm, x, am, rows, keys, P):
        """x0, conf, margin, entropy (b, L) for the unfinished rows: read where stored, else one forward of the
        rest (all four always: a later policy may need margin or entropy)."""
        states = list(zip(keys[rows].tolist(), (g.numpy().tobytes() for g in x[rows, P:].cpu())))
        got = [self.table.get(st) for st in states]
        miss = [i for i, g in enumerate(got) if g is None]
        self.hits += len(got) - len(miss)
        self.misses += len(miss)
        if miss:
            sel = rows[torch.tensor(miss, device=rows.device)]
            x0, conf, probs = sample_tokens(dllm.logits(x[sel], am[sel], start=P), 0.0)
            out = (x0, conf, *extras(probs, ("margin", "entropy")))
            del probs
            batch = tuple(t.cpu() for t in out)                        # stored in host memory, not the GPU's
            keep = self.bytes < self.max_bytes
            if keep:
                self.bytes += sum(t.nbytes for t in batch) + sum(len(states[i][1]) + 100 for i in miss)
            for j, i in enumerate(miss):
                got[i] = (batch, j)
                if keep:
                    self.table[states[i]] = got[i]
            if len(miss) == len(got):                                  # nothing was read: the forward as it is
                return list(out)
        return [torch.stack([b[n][j] for b, j in got]).to(x.device) for n in range(4)]


def extras(probs, needs):
    """The observations some heuristics ask for: top1 - top2 margin and entropy (b, L), else None."""
    margin = entropy = None
    if "margin" in needs:
        top2 = probs.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
    if "entropy" in needs:
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return margin, entropy


def sub(seeds, sel):
    """The seeds of the selected rows (None at temperature 0, where there is no noise)."""
    return None if seeds is None else seeds[sel]


class CachedStep:
    """One denoising step with a KV cache (Fast-dLLM's prefix and dual caches), for the b unfinished rows.

      first step of a row's block: one full forward that also returns every layer's keys/values (exact: the
            same logits as without a cache), stored for that row;
      later steps of the block, prefix: the model runs only on the positions from the block's start to the end
            of the buffer, attending to the cached keys/values of everything before the block; the LM head reads
            the block's positions only (nothing else can be unmasked in this step);
      later steps, dual: it runs only on the block's positions; the keys/values after the block are the ones
            computed at the block's first step.
    Both are approximations (attention is bidirectional, so cached positions' keys would change with the tokens
    revealed since). Positions outside the current block keep x0, conf (and margin / entropy) from the block's
    first step (or, before the block, from when they were last computed): the learned policy sees those stale
    confidences there; candidates (the current block) are always fresh. Rows in different blocks are computed in
    separate forwards, one per block."""

    def __init__(self, dllm, P, L, BL, mode, needs):
        self.dllm, self.P, self.L, self.BL, self.mode, self.needs = dllm, P, L, BL, mode, needs
        self.kv = None                       # per layer (K, V) for all B rows: (B, Hkv, P+L, hd)
        self.x0 = self.conf = self.margin = self.entropy = None   # (B, L), last computed values

    def __call__(self, x, am, rows, block, refresh, temperature, seeds):
        B = x.shape[0]
        if self.x0 is None:
            self.x0 = torch.zeros((B, self.L), dtype=torch.long, device=x.device)
            self.conf = torch.zeros((B, self.L), dtype=torch.float32, device=x.device)
            self.margin, self.entropy = torch.zeros_like(self.conf), torch.zeros_like(self.conf)
        fresh = rows[refresh]
        if len(fresh):
            logits, kv = self.dllm.logits(x[fresh], am[fresh], start=self.P, return_kv=True)
            if self.kv is None:
                self.kv = [tuple(torch.zeros((B, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in layer)
                           for layer in kv]
            for (K, V), (k, v) in zip(self.kv, kv):
                K[fresh], V[fresh] = k, v
            self.store(fresh, 0, self.L, logits, temperature, sub(seeds, refresh))
        for blk in block[~refresh].unique().tolist():   # later steps: one forward per block the rows are in
            sel = ~refresh & (block == blk)
            r = rows[sel]
            lo, hi = blk * self.BL, (blk + 1) * self.BL
            logits = self.dllm.logits_span(x[r], am[r], self.P, lo, hi, [(K[r], V[r]) for K, V in self.kv],
                                           run_to=self.L if self.mode == "prefix" else hi)
            self.store(r, lo, hi, logits, temperature, sub(seeds, sel))
        pick = lambda t: t[rows] if t is not None else None
        return self.x0[rows], self.conf[rows], pick(self.margin if "margin" in self.needs else None), \
            pick(self.entropy if "entropy" in self.needs else None)

    def store(self, r, lo, hi, logits, temperature, seeds):
        x0, conf, probs = sample_tokens(logits, temperature, seeds)
        self.x0[r, lo:hi], self.conf[r, lo:hi] = x0, conf
        margin, entropy = extras(probs, self.needs)
        if margin is not None:
            self.margin[r, lo:hi] = margin
        if entropy is not None:
            self.entropy[r, lo:hi] = entropy
