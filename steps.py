"""
The dLLM's denoising step for env.generate: one forward -> x0, conf (and margin / entropy), each (b,
L), for the rows asked. Three steps behind one call, step(x, am, rows, block, temperature, seeds):

  UncachedStep  the dLLM over the whole buffer of the rows (exact)
  ForwardMemo   the same, read back where an earlier call computed the state (exact at T = 0)
  CachedStep    Fast-dLLM's prefix / dual KV cache (approximate, semi-autoregressive only)

docs/design.md says why each exists and what it costs.
"""
import torch

from common.memory import MEMO_BYTES, NOISE_BYTES, SOFTMAX_BYTES


def make_step(dllm, P, L, BL, cache, needs, memo, memo_keys):
    """The step generate() runs: cached (cache 'prefix' / 'dual'), else memoised (memo given) or
    plain."""
    if cache != "none":
        return CachedStep(dllm, P, L, BL, cache, needs)
    return UncachedStep(dllm, P, needs, memo, memo_keys)


def token_stats(logits, temperature=0.0, seeds=None, needs=()):
    """x0, conf and, where needs asks, margin and entropy (each (b, L)) from logits (b, L, V).
    temperature: one for every row or (b,); x0 is the argmax at T = 0, else a sample (sample_x0).
    conf comes from the noise-free softmax, computed a few rows at a time (at LLaDA's vocabulary one
    float32 softmax of 16 x 256 positions is 2 GB); per row, the numbers of one softmax."""
    b, L, V = logits.shape
    temps = temperature.tolist() if torch.is_tensor(temperature) else [temperature] * b
    hot = [i for i, T in enumerate(temps) if T > 0]                     # the rows that sample
    if len(hot) < b:
        x0 = logits.argmax(-1)
    else:
        x0 = torch.empty((b, L), dtype=torch.long, device=logits.device)
    if hot:
        sample_x0(x0, logits, hot, temps, seeds)
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


def sample_x0(x0, logits, hot, temps, seeds):
    """x0[i] for the rows i in hot: a Gumbel-max sample in float64, an exact draw from
    softmax(logits / T), each row's noise from a generator seeded by seeds[i] (common/rng.py), a few
    rows at a time (NOISE_BYTES)."""
    if seeds is None:
        raise ValueError("sampling at temperature > 0 needs per-row seeds (common/rng.py)")
    (_, L, V), dev, seeds = logits.shape, logits.device, seeds.tolist()
    rows = max(1, NOISE_BYTES // (8 * L * V))
    g = torch.empty((min(rows, len(hot)), L, V), dtype=torch.float64, device=dev)
    for c in range(0, len(hot), rows):
        part = hot[c:c + rows]
        g = g[:len(part)]
        for j, i in enumerate(part):
            gen = torch.Generator(dev).manual_seed(int(seeds[i]))
            torch.rand((L, V), dtype=torch.float64, generator=gen, out=g[j])
        g.clamp_min_(1e-300).log_().neg_().log_()                      # -Gumbel noise (rows, L, V)
        T = torch.tensor([temps[i] for i in part], dtype=torch.float64, device=dev)[:, None, None]
        contiguous = part[-1] - part[0] == len(part) - 1
        sel = slice(part[0], part[-1] + 1) if contiguous else torch.tensor(part, device=dev)
        x0[sel] = logits[sel].to(torch.float64, copy=True).div_(T).sub_(g).argmax(-1)  # logits kept


class UncachedStep:
    """One exact denoising step: the dLLM over the whole buffer of the given rows (or, with a
    ForwardMemo at T = 0, only of the rows whose state no earlier call has computed)."""

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
    """The dLLM's outputs (x0, conf, margin, entropy) per visited state (row key, generated tokens),
    for generate(memo=...) at T = 0 without a cache, where a row's forward depends on its tokens
    alone: a state computed once is read back by every later call that reaches it (docs/design.md).
    hits / misses count the rows read and computed; needs: the margin / entropy computed with every
    state; max_bytes caps what is kept."""

    def __init__(self, needs=(), max_bytes=MEMO_BYTES):
        # what every stored state carries besides x0 and conf (the callers' policies' needs)
        self.needs = tuple(needs)
        self.table, self.prompts = {}, {}
        self.bytes, self.max_bytes, self.hits, self.misses = 0, max_bytes, 0, 0

    def check_prompts(self, keys, prompt_ids):
        """Once per generate call: each row key must come with the (padded) prompt it came with
        before."""
        for k, prompt in zip(keys.tolist(), prompt_ids.cpu()):
            prompt = prompt.numpy().tobytes()
            if self.prompts.setdefault(k, prompt) != prompt:
                raise ValueError(
                    f"a ForwardMemo is for one set of prompts batched one way: row key {k} came "
                    "with another (padded) prompt")

    def step(self, dllm, x, am, rows, keys, P, needs=()):
        """x0, conf, margin, entropy (b, L) for the unfinished rows (margin and entropy where needs
        asks, else None): read where stored, else one forward of the rest."""
        extra = tuple(n for n in ("margin", "entropy") if n in needs or n in self.needs)
        want = [True, True, "margin" in needs, "entropy" in needs]
        states = list(zip(keys[rows].tolist(), (g.numpy().tobytes() for g in x[rows, P:].cpu())))
        got = [self.table.get(st) for st in states]
        has = lambda g: g is not None and all(g[0][n] is not None for n in range(4) if want[n])
        got = [g if has(g) else None for g in got]
        miss = [i for i, g in enumerate(got) if g is None]
        self.hits += len(got) - len(miss)
        self.misses += len(miss)
        if miss:
            sel = rows[torch.tensor(miss, device=rows.device)]
            out = token_stats(dllm.logits(x[sel], of_rows(am, sel), start=P), 0.0, needs=extra)
            # stored in host memory, not the GPU's
            batch = tuple(None if t is None else t.cpu() for t in out)
            keep = self.bytes < self.max_bytes
            if keep:
                self.bytes += sum(t.nbytes for t in batch if t is not None)
                self.bytes += sum(len(states[i][1]) + 100 for i in miss)
            for j, i in enumerate(miss):
                got[i] = (batch, j)
                if keep:
                    self.table[states[i]] = got[i]
            # nothing was read: the forward as it is
            if len(miss) == len(got):
                return [o if w else None for o, w in zip(out, want)]
        return [torch.stack([b[n][j] for b, j in got]).to(x.device) if want[n] else None
                for n in range(4)]


class CachedStep:
    """One step with Fast-dLLM's prefix or dual KV cache, one forward per call (docs/design.md): a
    block's first step refreshes every row's keys/values; later steps run the block (dual) or the
    block to the end (prefix) against them, writing their fresh keys/values in place; rows that
    leave the block are dropped by compacting the cache once (`copies` counts it). Positions outside
    the block keep the block's first x0 and conf."""

    def __init__(self, dllm, P, L, BL, mode, needs):
        self.dllm, self.P, self.L, self.BL, self.mode, self.needs = dllm, P, L, BL, mode, needs
        # per layer (K, V), each (b, Hkv, P + L, hd) for the b rows in self.held
        self.kv = None
        self.held = None        # (b,) the rows whose keys/values the cache holds, ascending
        # x0, conf, margin, entropy (B, L): the last values computed at each position
        self.stats = None
        self.block = None       # the block the cache was computed for
        # compactions of the cache (at most one per row that left a block early)
        self.copies = 0

    def __call__(self, x, am, rows, block, temperature, seeds):
        B = x.shape[0]
        lo, hi = block * self.BL, (block + 1) * self.BL
        if self.block != block:                     # the block's first step: every row
            if len(rows) != B:
                raise RuntimeError(
                    "a cached batch starts each block with all of its rows (generate keeps them in "
                    "step)")
            # the old cache goes before the new one is computed
            self.kv = None
            logits, self.kv = self.dllm.logits(x, am, start=self.P, return_kv=True)
            self.block, self.held = block, rows
            self.stats = list(token_stats(logits, temperature, seeds, self.needs))
            # later steps update stats in place
            return [None if s is None else s.clone() for s in self.stats]
        # rows left the block: keep only the others' keys/values
        if len(rows) != len(self.held):
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
