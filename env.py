"""
The unmasking MDP (paper section 3), with the frozen dLLM as the environment.

  state    buffer x = [prompt | L x MASK] per row, its current block, NFE spent, done flag
  step     one dLLM forward over the unfinished rows (steps.py): x0 = argmax logits (or a Gumbel
           sample at temperature T > 0, noise from a per-row, per-step seed), conf = softmax[x0]
           of the noise-free logits
  obs      conf and mask bit at all L positions, candidates (masked positions of the current
           block), time t = NFE / L, the setting (BL / L, the dLLM temperature, the block's
           iterations / BL); heuristics may also ask for the top1-top2 margin and the entropy
  action   a subset of the candidates; selected positions take x0 and are never remasked
  NFE      +1 per row per forward while that row has masks in its current block; finished rows
           are not computed at all
  end      no masks left, or the step budget is spent (BL iterations per block, L in total: a
           block that is not filled in time is left with its masks and the next block starts)
  reward   computed outside (grpo.rewards) from the grader: correct * ((L - NFE + 1) / L) ** alpha

Semi-autoregressive decoding fills blocks of BL positions left to right (BL < L); BL == L is full
diffusion. Every policy - heuristic or learned - runs through this one `generate` loop.

    python sample.py --policies "topk:steps=32,threshold:0.9"   # uses this
"""
from dataclasses import dataclass, field

import torch

from common.memory import check_buffer
from common.rng import fmix32, noise_seeds, row_keys
from steps import make_step


@dataclass
class Obs:
    """What a policy sees at one step, for the b unfinished rows (shapes below)."""
    x0: torch.Tensor          # (b, L) long    the dLLM's proposal for every generation position
    conf: torch.Tensor        # (b, L) float32 probability of x0 (all positions, revealed ones too)
    masked: torch.Tensor      # (b, L) bool    still [MASK]
    cand: torch.Tensor        # (b, L) bool    masked and in the row's current block
    t: torch.Tensor           # (b,)   float32 NFE spent so far / L
    block_step: torch.Tensor  # (b,)   long    iterations already spent in the current block
    n_blocks: int             # L / BL
    keys: torch.Tensor        # (b,)   long    per-row random key (see uniform)
    margin: torch.Tensor = None   # (b, L) float32 top1 - top2 probability, when policy.needs it
    entropy: torch.Tensor = None  # (b, L) float32 entropy of the prediction, when needed
    eos: torch.Tensor = None      # (b, L) bool    x0 ends the text or the turn, when needed
    alpha: torch.Tensor = None    # (b,)   float32 the row's reward exponent, if any
    setting: torch.Tensor = None  # (b, 3) float32 BL / L, the row's temperature, block_step / BL

    def uniform(self, stream=0):
        """(b, L) uniforms in [0, 1) that depend only on (row key, NFE spent, position, stream): a
        row's draws do not change with batching or sharding, so the same seed gives the same
        rollouts everywhere. Streams 0, 1, 2 are independent draws (a DPLS action needs three)."""
        L = self.conf.shape[1]
        step = (self.t * L).round().long() + 0x51ED27 + 0x3C6EF372 * stream
        h = fmix32(self.keys[:, None] ^ fmix32(step[:, None]))
        h = fmix32(h ^ torch.arange(L, device=self.keys.device))
        return (h >> 8).float() / 2 ** 24


@dataclass
class Rollout:
    """The result of generate(). Steps are recorded only with record (what GRPO needs)."""
    tokens: torch.Tensor      # (B, L) final generation (MASK where never unmasked)
    nfe: torch.Tensor         # (B,) forwards spent per row
    order: torch.Tensor       # (B, L) the NFE (1-based) that unmasked each position, 0 = never
    steps: list = field(default_factory=list)   # per step: rows, recorded Obs fields, action, logp
    forwards: int = 0         # dLLM forwards run (a step of several rows is one forward)
    cache_copies: int = 0     # compactions of the KV cache as rows left a block early


CACHES = ("none", "prefix", "dual")


def check_decoding(L, BL, cache="none"):
    """The decoding setup every script and generate() accept: L a positive multiple of BL, and a KV
    cache only in semi-autoregressive decoding (in full diffusion every step would refresh the whole
    cache)."""
    if BL <= 0 or L <= 0 or L % BL:
        raise ValueError(
            f"--gen-length {L} must be a multiple of --block-length {BL}, both positive")
    if cache not in CACHES:
        raise ValueError(f"unknown cache {cache!r}: use one of {CACHES}")
    if cache != "none" and BL == L:
        raise ValueError(
            f"--cache {cache} needs semi-autoregressive decoding (--block-length < --gen-length "
            f"{L})")


def generate(dllm, policy, prompt_ids, prompt_mask, gen_length, block_length, temperature=0.0,
             record=(), keys=None, cache="none", alpha=None, memo=None, memo_keys=None,
             noise_keys=None):
    """Run `policy` (act(obs) -> policy.Action, check(L, BL), needs: extra Obs fields) on
    left-padded prompts (B, P) until every row is finished -> Rollout. record: the Obs fields kept
    per step (GRPO: policy.READS). temperature: the dLLM's, a float or (B,). keys (B,): each row's
    random key (its policy draws, and its dLLM noise unless noise_keys (B,)). cache: none, prefix or
    dual (steps.CachedStep; the rows keep in step block by block). alpha (B,): each row's reward
    exponent. memo / memo_keys: a steps.ForwardMemo and each row's prompt id."""
    L, BL, (B, P), dev = gen_length, block_length, prompt_ids.shape, prompt_ids.device
    needs = getattr(policy, "needs", ())
    temps = torch.as_tensor(temperature, dtype=torch.float64, device=dev).expand(B)   # each row's T
    hot = bool(B) and float(temps.max()) > 0
    check_decoding(L, BL, cache)
    policy.check(L, BL)
    check_buffer(dllm, B, P, L, cache, float(temps.max()) if B else 0.0, needs)
    x, am = buffer(dllm, prompt_ids, prompt_mask, L)                                    # (B, P + L)
    keys = (row_keys(0, torch.arange(B)) if keys is None else keys).to(dev)
    noise_keys = keys if noise_keys is None else noise_keys.to(dev)
    memo = None if hot or cache != "none" else memo          # exact only at T = 0 without a cache
    memo_keys = keys if memo_keys is None else memo_keys.to(dev)
    if memo is not None:
        memo.check_prompts(memo_keys, prompt_ids)
    step = make_step(dllm, P, L, BL, cache, needs, memo, memo_keys)
    s = State(B, L, BL, dev)
    stop_ids = torch.tensor(sorted(dllm.stop_ids), device=dev)
    steps, forwards = [], 0
    while (rows := s.rows(cache != "none")) is not None:      # (b,) the rows computed now
        seeds = noise_seeds(noise_keys[rows], s.nfe[rows]) if hot else None
        x0, conf, margin, entropy = step(x, am, rows, s.current, temps[rows], seeds)
        forwards += 1
        gen = x[rows, P:]                                                               # (b, L)
        masked = gen == dllm.mask_id
        obs = Obs(x0, conf, masked, masked & (s.in_block == s.block[rows, None]),
                  s.nfe[rows].float() / L, s.block_step[rows], L // BL, keys[rows], margin, entropy,
                  alpha=None if alpha is None else alpha[rows], setting=s.setting(rows, temps))
        if "eos" in needs:
            obs.eos = torch.isin(x0, stop_ids)
        act = policy.act(obs)
        unmask = act.unmask & obs.cand                                 # never touch anything else
        x[rows, P:] = torch.where(unmask, x0, gen)
        s.advance(rows, obs.cand, unmask)
        if record:   # the fields the learned policy reads (policy.READS), by name
            seen = {k: getattr(obs, k) for k in record}
            steps.append(dict(rows=rows, **seen, action=unmask, logp=act.logp, order=act.order))
    return Rollout(x[:, P:], s.nfe, s.order, steps, forwards, getattr(step, "copies", 0))


def buffer(dllm, prompt_ids, prompt_mask, L):
    """The buffer [prompt | L x MASK] (B, P + L) and its attention mask (None when no row is padded:
    attention can then take its fastest kernel)."""
    B, dev = prompt_ids.shape[0], prompt_ids.device
    x = torch.cat([prompt_ids, torch.full((B, L), dllm.mask_id, dtype=torch.long, device=dev)], 1)
    if bool(prompt_mask.bool().all()):
        return x, None
    return x, torch.cat([prompt_mask, torch.ones((B, L), dtype=prompt_mask.dtype, device=dev)], 1)


class State:
    """Where each of B rows stands: its block, the iterations spent in it, NFE, done, and when each
    position was unmasked (order, 1-based NFE; 0 = never)."""

    def __init__(self, B, L, BL, dev):
        self.L, self.BL, self.current = L, BL, 0           # current: a cached batch's block
        self.in_block = (torch.arange(L, device=dev) // BL)[None]     # (1, L) each position's block
        zeros = lambda: torch.zeros(B, dtype=torch.long, device=dev)
        self.block, self.block_step, self.nfe = zeros(), zeros(), zeros()
        self.order = torch.zeros((B, L), dtype=torch.long, device=dev)
        self.done = torch.zeros(B, dtype=torch.bool, device=dev)

    def rows(self, in_step):
        """(b,) the rows to compute now (one sync a step), or None when every row is finished."""
        while True:
            todo = ~self.done & (self.block == self.current) if in_step else ~self.done
            rows = todo.nonzero().squeeze(1)
            if len(rows):
                return rows
            if not in_step or self.current + 1 >= self.L // self.BL:
                return None
            self.current += 1                          # every row has left the block: the next one

    def setting(self, rows, temps):
        """(b, 3) float32: BL / L, each row's dLLM temperature, its block's iterations / BL."""
        t, BL = temps[rows], self.BL
        progress = self.block_step[rows] / BL
        return torch.stack([torch.full_like(t, BL / self.L), t, progress], 1).float()

    def advance(self, rows, cand, unmask):
        """One forward spent: count it, date the unmasked positions, and move on a row whose block
        is filled or out of iterations (BL per block)."""
        self.nfe[rows] += 1
        self.order[rows] = torch.where(unmask, self.nfe[rows, None], self.order[rows])
        left = (cand & ~unmask).any(1)
        self.block_step[rows] += 1
        advance = ~left | (self.block_step[rows] >= self.BL)
        self.block[rows] += advance.long()
        self.block_step[rows] = torch.where(advance, 0, self.block_step[rows])
        self.done[rows] = self.block[rows] >= self.L // self.BL
