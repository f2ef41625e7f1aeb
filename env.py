"""
The unmasking MDP (paper section 3), with the frozen dLLM as the environment.

  state    buffer x = [prompt | L x MASK] per row, its current block, NFE spent, done flag
  step     one dLLM forward over the unfinished rows: x0 = argmax logits (or a Gumbel sample at
           temperature T > 0, noise in float64 from a per-row, per-step seed), conf = softmax(logits)[x0]
           from the noise-free logits
  obs      conf and mask bit at all L positions, candidates (masked positions of the current block),
           time t = NFE / L, the setting (BL / L, the dLLM temperature, the block's iterations spent / BL);
           heuristics may also ask for the top1-top2 margin and the entropy
  action   a subset of the candidates; selected positions take x0 and are never remasked
  NFE      +1 per row per forward while that row has masks in its current block; finished rows are
           not computed at all
  end      no masks left, or the step budget is spent (BL iterations per block, L in total: a block
           that is not filled in time is left with its masks and the next block starts)
  reward   computed outside (grpo.rewards) from the grader: correct * ((L - NFE + 1) / L) ** alpha

Semi-autoregressive decoding fills blocks of BL positions left to right (BL < L); BL == L is full
diffusion. Every policy - heuristic or learned - runs through this one `generate` loop.

    python sample.py --model tiny --task chain --policies "topk:steps=32,threshold:0.9"   # uses this
"""
from dataclasses import dataclass, field

import torch

from common import memory
from common.memory import MEMO_BYTES, NOISE_BYTES, SOFTMAX_BYTES


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
    # (b, 3) float32 BL / L, the row's dLLM temperature, block_step / BL
    setting: torch.Tensor = None

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
    # per step: dict(rows, conf, masked, cand, t, setting, action, logp, alpha, order)
    steps: list = field(default_factory=list)
    forwards: int = 0         # dLLM forwards run (a step of several rows is one forward)
    cache_copies: int = 0     # compactions of the KV cache as rows left a block early (CachedStep.copies)


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


def token_stats(logits, temperature=0.0, seeds=None, needs=()):
    """x0, conf and, where needs asks, margin and entropy (each (b, L)) from logits (b, L, V). Greedy at T = 0;
    otherwise a Gumbel-max sample in float64, an exact draw from softmax(logits / T), each row's noise from its own
    generator seeded by seeds (b,) (noise_seeds). temperature: one for every row, or (b,) one per row. conf always
    comes from the noise-free softmax, which is computed a few rows at a time: at LLaDA's vocabulary one float32
    softmax of 16 x 256 positions would be 2 GB. Per row the numbers are those of one softmax over the whole batch."""
    b, L, V = logits.shape
    temps = temperature.tolist() if torch.is_tensor(temperature) else [temperature] * b
    hot = [i for i, T in enumerate(temps) if T > 0]                     # the rows that sample
    x0 = logits.argmax(-1) if len(hot) < b else torch.empty((b, L), dtype=torch.long, device=logits.device)
    if hot:
        if seeds is None:
            raise ValueError("sampling at temperature > 0 needs per-row seeds (env.noise_seeds)")
        dev, seeds = logits.device, seeds.tolist()
        rows = max(1, NOISE_BYTES // (8 * L * V))                       # the noise a few rows at a time
        g = torch.empty((min(rows, len(hot)), L, V), dtype=torch.float64, device=dev)
        for c in range(0, len(hot), rows):
            part = hot[c:c + rows]
            g = g[:len(part)]
            for j, i in enumerate(part):
                torch.rand((L, V), dtype=torch.float64, generator=torch.Generator(dev).manual_seed(int(seeds[i])), out=g[j])
            g.clamp_min_(1e-300).log_().neg_().log_()                  # -Gumbel noise (rows, L, V) float64
            T = torch.tensor([temps[i] for i in part], dtype=torch.float64, device=dev)[:, None, None]
            sel = slice(part[0], part[-1] + 1) if part[-1] - part[0] == len(part) - 1 else torch.tensor(part, device=dev)
            # logits untouched
            x0[sel] = logits[sel].to(torch.float64, copy=True).div_(T).sub_(g).argmax(-1)
    conf = torch.empty((b, L), dtype=torch.float32, device=logits.device)
    margin = torch.empty_like(conf) if "margin" in needs else None
    entropy = torch.empty_like(conf) if "entropy" in needs else None
    rows = max(1, SOFTMAX_BYTES // (4 * L * V))
    for i in range(0, b, rows):
        probs = torch.softmax(logits[i:i + rows].float(), dim=-1)      # (rows, L, V) float32
        conf[i:i + rows] = probs.gather(-1, x0[i:i + rows, :, None]).squeeze(-1)
        if margin is not None:
            top2 = probs.topk(2, dim=-1).values
            margin[i:i + rows] = top2[..., 0] - top2[..., 1]
        if entropy is not None:
            entropy[i:i + rows] = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return x0, conf, margin, entropy


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


def check_buffer(dllm, B, P, L, cache="none", temperature=0.0, needs=(), lower="--batch-size or --gen-length"):
    """One clear error, before any work, for a buffer longer than the dLLM takes, or a decode of B buffers whose
    memory plan (common/memory.py: cache, logits, softmax, noise, activations) will not fit in what the device has
    free (the loaded weights already counted)."""
    N = P + L
    if dllm.max_len and N > dllm.max_len:
        raise ValueError(f"prompt of {P} tokens + gen length {L} exceeds {dllm.name}'s {dllm.max_len} positions")
    e = dllm.net.tok_emb.weight.element_size()
    memory.check(memory.decode_plan(dllm.net.c, e, B, P, L, cache, temperature, needs, dllm.device.type,
                                    f"a batch of {B} buffers of {N} positions (cache {cache}, T {temperature:g})"),
                 dllm.device, lower)


def generate(dllm, policy, prompt_ids, prompt_mask, gen_length, block_length, temperature=0.0,
             record=False, keys=None, cache="none", alpha=None, memo=None, memo_keys=None, noise_keys=None):
    """Run `policy` on a batch of left-padded prompts (B, P) until every row is finished -> Rollout.
    policy: `act(obs) -> policy.Action`, `check(L, BL)`, and a set `needs` of extra observations ('margin', 'entropy',
    'eos'). temperature: the dLLM's, one for all rows or (B,) one per row. keys (B,) seed each row's policy
    randomness and, at T > 0, the dLLM's Gumbel noise (default row_keys(0, arange(B))); noise_keys (B,), if given,
    seed the noise instead (GRPO gives a group's rollouts one noise key: common random numbers). cache: 'none' (exact) or 'prefix' / 'dual' (approximate KV caches, semi-autoregressive
    only: CachedStep). alpha (B,): each row's reward exponent, shown to an alpha-conditioned policy and recorded.
    memo: a ForwardMemo shared by calls on the same prompts, L and dLLM (exact at T = 0 without a cache); memo_keys (B,)
    name each row's prompt for it (default: keys; GRPO passes the prompt's index, so a group's rollouts share states).

    Each step is one dLLM forward. Without a cache the unfinished rows move on independently. With a cache the rows
    keep in step block by block: a row that fills its block early waits (it is not computed and spends no NFE) until
    every row has, and the next block starts for all of them at once with one forward that refreshes the cache. A
    row's numbers are the same either way (nothing in a row depends on the others); what changes is that no step
    ever needs two forwards for rows in different blocks."""
    L, BL = gen_length, block_length
    check_decoding(L, BL, cache)
    policy.check(L, BL)
    B, P = prompt_ids.shape
    dev = prompt_ids.device
    # (B,) each row's
    temps = torch.as_tensor(temperature, dtype=torch.float64, device=dev).expand(B)
    hottest = float(temps.max()) if B else 0.0
    check_buffer(dllm, B, P, L, cache, hottest, getattr(policy, "needs", ()))
    x = torch.cat([prompt_ids, torch.full((B, L), dllm.mask_id, dtype=torch.long, device=dev)], 1)  # (B, P+L)
    am = None   # no padding, no mask: attention can take its fastest (flash) kernel
    if not bool(prompt_mask.bool().all()):
        am = torch.cat([prompt_mask, torch.ones((B, L), dtype=prompt_mask.dtype, device=dev)], 1)
    in_block = (torch.arange(L, device=dev) // BL)[None]                # (1, L) the block of each position
    # per row
    block, block_step, nfe = (torch.zeros(B, dtype=torch.long, device=dev) for _ in range(3))
    order = torch.zeros((B, L), dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    keys = (row_keys(0, torch.arange(B)) if keys is None else keys).to(dev)
    noise_keys = keys if noise_keys is None else noise_keys.to(dev)
    needs = getattr(policy, "needs", ())
    memo = memo if hottest == 0 and cache == "none" else None          # exact only there
    memo_keys = keys if memo_keys is None else memo_keys.to(dev)
    if memo is not None:
        memo.check_prompts(memo_keys, prompt_ids)
    step = CachedStep(dllm, P, L, BL, cache, needs) if cache != "none" else UncachedStep(dllm, P, needs, memo, memo_keys)
    stop_ids = torch.tensor(sorted(dllm.stop_ids), device=dev)
    steps, current, forwards = [], 0, 0                                  # current: the block of a cached batch
    while True:
        todo = ~done & (block == current) if cache != "none" else ~done
        rows = todo.nonzero().squeeze(1)                               # (b,) the rows computed now: one sync a step
        if len(rows) == 0:
            if cache == "none" or current + 1 >= L // BL:
                break
            current += 1                                               # every row has left the block: the next one
            continue
        seeds = noise_seeds(noise_keys[rows], nfe[rows]) if hottest > 0 else None
        x0, conf, margin, entropy = step(x, am, rows, current, temps[rows] if torch.is_tensor(temperature)
                                         else temperature, seeds)
        forwards += 1
        gen = x[rows, P:]                                              # (b, L)
        masked = gen == dllm.mask_id
        setting = torch.stack([torch.full_like(temps[rows], BL / L), temps[rows], block_step[rows] / BL], 1).float()
        obs = Obs(x0, conf, masked, masked & (in_block == block[rows, None]), nfe[rows].float() / L, block_step[rows],
                  L // BL, keys[rows], margin, entropy, alpha=None if alpha is None else alpha[rows], setting=setting)
        if "eos" in needs:
            obs.eos = torch.isin(x0, stop_ids)
        act = policy.act(obs)
        unmask = act.unmask & obs.cand                                 # never touch anything else
        nfe[rows] += 1
        x[rows, P:] = torch.where(unmask, x0, gen)
        order[rows] = torch.where(unmask, nfe[rows, None], order[rows])
        if record:
            steps.append(dict(rows=rows, conf=conf, masked=masked, cand=obs.cand, t=obs.t, setting=setting,
                              action=unmask, logp=act.logp, alpha=obs.alpha, order=act.order))
        # advance blocks: filled, or out of iterations (BL per block)
        left = (obs.cand & ~unmask).any(1)
        block_step[rows] += 1
        advance = ~left | (block_step[rows] >= BL)
        block[rows] += advance.long()
        block_step[rows] = torch.where(advance, 0, block_step[rows])
        done[rows] = block[rows] >= L // BL
    return Rollout(x[:, P:], nfe, order, steps, forwards, getattr(step, "copies", 0))


class UncachedStep:
    """One exact denoising step: the dLLM over the whole buffer of the given rows (or, with a ForwardMemo at T = 0,
    only of the rows whose state no earlier call has computed)."""

    def __init__(self, dllm, P, needs, memo, keys):
        self.dllm, self.P, self.needs, self.memo, self.keys = dllm, P, needs, memo, keys

    def __call__(self, x, am, rows, block, temperature, seeds):
        if self.memo is not None:
            return self.memo.step(self.dllm, x, am, rows, self.keys, self.P, self.needs)
        logits = self.dllm.logits(x[rows], of_rows(am, rows), start=self.P)     # (b, L, V)
        return token_stats(logits, temperature, seeds, self.needs)


def of_rows(am, rows):
    """The attention mask of some rows (None: no row is padded)."""
    return None if am is None else am[rows]


class ForwardMemo:
    """The dLLM's outputs (x0, conf, margin, entropy) per visited state, for generate(memo=...): at temperature 0
    without a cache a row's forward depends on nothing but its tokens, so a state computed once (for one policy or
    block length) is read back by every later call that reaches it: the first step (everything masked) is shared by
    every policy, and so is every later state two policies agree on. A state is (row key, generated tokens); the row
    key stands for its prompt, which is checked (one memo, one set of prompts). Each stored row keeps its whole
    forward batch alive, so a batch's bytes count once, when its first row is stored. hits / misses count the rows
    read and computed. needs: the margin / entropy the callers' policies will ask for, computed with every state
    (others are computed when asked, and such a state again)."""

    def __init__(self, needs=(), max_bytes=MEMO_BYTES):
        self.needs = tuple(needs)   # what every stored state carries besides x0 and conf (the callers' policies' needs)
        self.table, self.prompts = {}, {}
        self.bytes, self.max_bytes, self.hits, self.misses = 0, max_bytes, 0, 0

    def check_prompts(self, keys, prompt_ids):
        """Once per generate call: each row key must come with the (padded) prompt it came with before."""
        for k, prompt in zip(keys.tolist(), prompt_ids.cpu()):
            prompt = prompt.numpy().tobytes()
            if self.prompts.setdefault(k, prompt) != prompt:
                raise ValueError(f"a ForwardMemo is for one set of prompts batched one way: row key {k} came with "
                                 f"another (padded) prompt")

    def step(self, dllm, x, am, rows, keys, P, needs=()):
        """x0, conf, margin, entropy (b, L) for the unfinished rows (margin and entropy where needs asks, else
        None): read where stored, else one forward of the rest."""
        extra = tuple(n for n in ("margin", "entropy") if n in needs or n in self.needs)
        want = [True, True, "margin" in needs, "entropy" in needs]
        states = list(zip(keys[rows].tolist(), (g.numpy().tobytes() for g in x[rows, P:].cpu())))
        got = [self.table.get(st) for st in states]
        got = [g if g is not None and all(g[0][n] is not None for n in range(4) if want[n]) else None for g in got]
        miss = [i for i, g in enumerate(got) if g is None]
        self.hits += len(got) - len(miss)
        self.misses += len(miss)
        if miss:
            sel = rows[torch.tensor(miss, device=rows.device)]
            out = token_stats(dllm.logits(x[sel], of_rows(am, sel), start=P), 0.0, needs=extra)
            batch = tuple(None if t is None else t.cpu() for t in out)  # stored in host memory, not the GPU's
            keep = self.bytes < self.max_bytes
            if keep:
                self.bytes += sum(t.nbytes for t in batch if t is not None) + sum(len(states[i][1]) + 100 for i in miss)
            for j, i in enumerate(miss):
                got[i] = (batch, j)
                if keep:
                    self.table[states[i]] = got[i]
            if len(miss) == len(got):                                  # nothing was read: the forward as it is
                return [o if w else None for o, w in zip(out, want)]
        return [torch.stack([b[n][j] for b, j in got]).to(x.device) if want[n] else None for n in range(4)]


class CachedStep:
    """One denoising step with a KV cache (Fast-dLLM's prefix and dual caches). generate() keeps a cached batch in
    one block at a time, so every call is one forward:

      a block's first step: every row's full forward, which also returns every layer's keys/values (exact: the same
            logits as without a cache); they become the cache;
      later steps of the block, prefix: the model runs only on the positions from the block's start to the end of
            the buffer, attending to the cached keys/values before the block; the LM head reads the block only;
      later steps, dual: it runs only on the block's positions; the keys/values after the block are the ones
            computed at the block's first step.
    The fresh keys/values of the positions a step computes are written into the cache in place (no copy of it):
    those positions are computed again at every later step of the block, and the next block refreshes everything.
    When rows finish the block before the others, the cache drops theirs: it is compacted once, layer by layer, to
    the rows still working (`copies` counts these compactions), never copied per step.
    Both caches are approximations (attention is bidirectional, so a cached position's keys would change with the
    tokens revealed since). Positions outside the current block keep x0, conf (and margin / entropy) from the block's
    first step: the learned policy sees those stale confidences there; candidates are always fresh."""

    def __init__(self, dllm, P, L, BL, mode, needs):
        self.dllm, self.P, self.L, self.BL, self.mode, self.needs = dllm, P, L, BL, mode, needs
        self.kv = None          # per layer (K, V), each (b, Hkv, P + L, hd) for the b rows in self.held
        self.held = None        # (b,) the rows whose keys/values the cache holds, ascending
        self.stats = None       # x0, conf, margin, entropy (B, L): the last values computed at each position
        self.block = None       # the block the cache was computed for
        self.copies = 0         # compactions of the cache (at most one per row that left a block early)

    def __call__(self, x, am, rows, block, temperature, seeds):
        B = x.shape[0]
        lo, hi = block * self.BL, (block + 1) * self.BL
        if self.block != block:                     # the block's first step: every row
            if len(rows) != B:
                raise RuntimeError("a cached batch starts each block with all of its rows (generate keeps them in step)")
            self.kv = None                          # the old cache goes before the new one is computed
            logits, self.kv = self.dllm.logits(x, am, start=self.P, return_kv=True)
            self.block, self.held = block, rows
            self.stats = list(token_stats(logits, temperature, seeds, self.needs))
            return [None if s is None else s.clone() for s in self.stats]   # later steps update stats in place
        if len(rows) != len(self.held):             # rows left the block: keep only the others' keys/values
            keep = torch.searchsorted(self.held, rows)
            for i, (K, V) in enumerate(self.kv):
                self.kv[i] = (K[keep], V[keep])
            self.held, self.copies = rows, self.copies + 1
        logits = self.dllm.logits_span(x[rows], of_rows(am, rows), self.P, lo, hi, self.kv,
                                       run_to=self.L if self.mode == "prefix" else hi)
        for old, new in zip(self.stats, token_stats(logits, temperature, seeds, self.needs)):
            if old is not None:
                old[rows, lo:hi] = new
        return [None if s is None else s[rows] for s in self.stats]
