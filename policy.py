"""
Unmasking policies, all behind one interface: `act(obs) -> (unmask (b, L) bool, logp (b,) or None)`,
driven by env.generate. Heuristics (reference semantics below) and the learned policy (paper section 4) differ
only in how they score the candidates (masked positions of the current block).

  random / topk / margin / entropy (steps=S)  fixed schedule: S steps split equally over the blocks; in a
                 block its masks are split evenly over its steps, the remainder to the earliest steps;
                 chosen uniformly / by highest conf / highest top1-top2 margin / lowest entropy
  threshold (lam)   Fast-dLLM: every candidate with conf >= lam, and always the row's most confident one
  band (hi, lo)     a threshold rule with a lower band too: every candidate with conf >= hi or conf <= lo, and
                    always the row's most confident one (the strongest hand rule of the tiny world: its
                    least confident tokens are harmless filler, docs/tiny-world.md)
  factor (f)        Fast-dLLM: longest prefix of sorted confs with c(n) >= 1 - f / (n + 1)
  eb (gamma)        EB-sampler: by entropy ascending, largest prefix whose entropy sum minus its max <= gamma
  pc (lam, steps)   PC-Sampler (arXiv 2508.13021): top-k schedule on exp(-lam * d) * conf, d the position
  eosdamp (g, steps) EOSER (arXiv 2509.23924): top-k schedule on conf, end-of-text proposals' conf times a factor
                    rising linearly from g to 1 over the steps
  learned           one adaptive-LayerNorm transformer block over (conf, mask bit, time [, alpha]) -> one logit per
                    position, turned into an action by a Bernoulli per position or by DPLS (actions.py)
Ties in a ranking (common: a saturated tiny model gives conf == 1.0) go to the lowest position.

    parse_policy("topk:steps=32"), parse_policy("pc:lam=0.25:steps=8"), parse_policy("out/ckpt.pt:tau=0.5:beta=2")
"""
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from actions import ACTIONS, bernoulli_entropy, bernoulli_log_prob, bernoulli_sample, dpls_log_prob, dpls_sample  # noqa: F401
from model import apply_rotary, rotary


def rank_select(score, cand, k):
    """Select the k (per row, (b,) long) highest-scoring candidates; ties go to the lowest position."""
    score = score.masked_fill(~cand, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices         # (b, L)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return cand & (ranks < k[:, None])


def sorted_prefix(values, cand, descending, ok_fn):
    """Length (b,) of the longest prefix of the candidates' values, sorted, for which ok_fn holds (>= 1)."""
    fill = float("-inf") if descending else 1e9
    v = torch.sort(values.masked_fill(~cand, fill), dim=1, descending=descending).values   # (b, L)
    n = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)                   # 1-based rank
    return ok_fn(v, n).long().cumprod(1).sum(1).clamp(min=1)


class Heuristic:
    needs = ()
    spec = "?"

    def check(self, L, BL):
        pass

    def act(self, obs):
        return self.select(obs), None


class FixedSteps(Heuristic):
    """random / topk / margin / entropy with a fixed number of steps (LLaDA's schedule)."""

    def __init__(self, kind, steps):
        self.kind, self.steps, self.spec = kind, int(steps), f"{kind}:steps={steps}"
        self.needs = {"margin": ("margin",), "entropy": ("entropy",)}.get(kind, ())

    def check(self, L, BL):
        if not 0 < self.steps <= L or self.steps % (L // BL):
            raise ValueError(f"{self.spec}: steps must be in 1..{L} and a multiple of the {L // BL} blocks")

    def select(self, obs):
        score = {"random": obs.uniform,
                 "topk": lambda: obs.conf, "margin": lambda: obs.margin,
                 "entropy": lambda: -obs.entropy}[self.kind]()
        return self.ranked(obs, score)

    def ranked(self, obs, score):
        """The schedule: this step's share of the block's masks, the highest-scoring candidates."""
        per_block = self.steps // obs.n_blocks
        left = (per_block - obs.block_step).clamp(min=1)                 # steps left in this block
        k = -(-obs.cand.sum(1) // left)                                  # ceil: remainder goes first
        return rank_select(score, obs.cand, k)


class PositionCalibrated(FixedSteps):
    """PC-Sampler's position-aware calibration, score exp(-lam * d) * conf, with LLaDA's top-k schedule. d counts
    from the start of the generation; from the first still-masked position instead would only multiply every
    candidate of a row by the same factor, which a ranking does not see (it would matter for a threshold on the
    score, which we do not use). The published version also divides by a token-frequency prior from a reference
    corpus: left out, because no corpus of the dLLM's training data is at hand (and the prior it mostly corrects,
    end-of-text, is what eosdamp targets directly)."""

    def __init__(self, lam, steps):
        super().__init__("topk", steps)
        self.lam, self.spec = float(lam), f"pc:lam={lam}:steps={steps}"

    def select(self, obs):
        d = torch.arange(obs.conf.shape[1], device=obs.conf.device, dtype=torch.float32)
        return self.ranked(obs, torch.exp(-self.lam * d)[None] * obs.conf)


class EOSDamped(FixedSteps):
    """EOSER's end-of-text damping with LLaDA's top-k schedule: an end-of-text proposal's conf is multiplied by
    g + (1 - g) * progress, progress = steps spent / (steps - 1) rising from 0 to 1, so padding is no longer revealed
    first from the right in full diffusion."""

    def __init__(self, g, steps):
        super().__init__("topk", steps)
        self.g, self.spec, self.needs = float(g), f"eosdamp:g={g}:steps={steps}", ("eos",)

    def select(self, obs):
        progress = ((obs.t * obs.conf.shape[1]).round() / max(self.steps - 1, 1)).clamp(max=1.0)[:, None]   # (b, 1)
        damp = self.g + (1 - self.g) * progress
        return self.ranked(obs, torch.where(obs.eos, obs.conf * damp, obs.conf))


class Threshold(Heuristic):
    def __init__(self, lam):
        self.lam, self.spec = float(lam), f"threshold:{lam}"

    def select(self, obs):  # the fallback is per row: no row ever stalls
        one = torch.ones(obs.conf.shape[0], dtype=torch.long, device=obs.conf.device)
        return (obs.cand & (obs.conf >= self.lam)) | rank_select(obs.conf, obs.cand, one)


class Band(Heuristic):
    """Reveal the sure tokens (conf >= hi) and the ones so unsure that the dLLM has no preference (conf <= lo),
    plus the row's most confident candidate."""

    def __init__(self, hi, lo):
        self.hi, self.lo, self.spec = float(hi), float(lo), f"band:hi={hi}:lo={lo}"

    def select(self, obs):
        one = torch.ones(obs.conf.shape[0], dtype=torch.long, device=obs.conf.device)
        return (obs.cand & ((obs.conf >= self.hi) | (obs.conf <= self.lo))) | rank_select(obs.conf, obs.cand, one)


class Factor(Heuristic):
    def __init__(self, f):
        self.f, self.spec = float(f), f"factor:{f}"

    def select(self, obs):
        k = sorted_prefix(obs.conf, obs.cand, True, lambda c, n: c >= 1 - self.f / (n + 1))
        return rank_select(obs.conf, obs.cand, k)


class EB(Heuristic):
    needs = ("entropy",)

    def __init__(self, gamma):
        self.gamma, self.spec = float(gamma), f"eb:gamma={gamma}"

    def select(self, obs):
        k = sorted_prefix(obs.entropy, obs.cand, False, lambda e, n: e.cumsum(1) - e <= self.gamma)
        return rank_select(-obs.entropy, obs.cand, k)


# ----------------------------------------------------------------------------------------------------
# the learned policy (paper section 4)

@dataclass
class PolicyConfig:
    width: int = 128        # hidden size
    heads: int = 2          # attention heads (rotary positions, bidirectional)
    mlp: int = 512          # GELU MLP width
    init_bias: float = -2.0 # output bias: every masked token starts at sigmoid(-2) = 0.12
    alpha_lo: float = None  # alpha-conditioned policy (train.py --alpha-range LO,HI): the range it was trained on;
    alpha_hi: float = None  # None = one policy per alpha, as in the paper
    alpha_features: str = "smooth"  # how alpha is encoded (alpha_features); checkpoints from before read "timestep"
    actions: str = "bernoulli"  # how logits become an action (actions.py): bernoulli (paper) or dpls (App. E)
    features: str = "log"   # what the policy reads of a confidence c: "raw" = c alone (paper), "log" = c, log c and
                            # log(1 - c) (see conf_features)


FEATURES = {"raw": 1, "log": 3}   # input features per position


def conf_features(conf, kind):
    """(n, L) confidences -> (n, L, F) input features. The paper feeds c itself to Linear(1, d). "log" adds log c and
    log(1 - c) (scaled by 1/10, c clamped to [1e-6, 1 - 1e-6]): each decade of c near 0, or of 1 - c near 1, is one
    step of the input, where c alone moves by 0.09 from 0.9 to 0.99 and by 0.05 from 0.05 to 0.1. Those are the ends
    where the tiny world's decisions lie; docs/learning.md measures what it changes."""
    c = conf.float()[..., None]
    if kind == "raw":
        return c
    c = c.clamp(1e-6, 1 - 1e-6)
    return torch.cat([c, c.log() / 10, (-c).log1p() / 10], -1)


def sinusoidal(t, dim, max_period=10000.0):
    """(n,) times in [0, 1] -> (n, dim) sinusoidal features (t scaled by 1000, as diffusion timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    a = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


def alpha_features(alpha, hi, dim, kind="smooth"):
    """(n,) reward exponents in [0, hi] -> (n, dim) sinusoidal features of u = log(1 + alpha) / log(1 + hi) in [0, 1]
    (the reward's sensitivity to alpha is roughly logarithmic). "smooth": frequencies from pi/4 to 4 pi, so every
    feature is a smooth function of u and what is learned at one alpha carries over to its neighbours. "timestep"
    (checkpoints from before): the diffusion-time encoding, frequencies up to 1000 per unit of u, under which
    neighbouring alphas look unrelated (docs/learning.md measures what that did)."""
    u = torch.log1p(alpha.float()) / math.log1p(hi)
    if kind == "timestep":
        return sinusoidal(u, dim)
    half = dim // 2
    freqs = math.pi / 4 * 16 ** (torch.arange(half, device=u.device, dtype=torch.float32) / max(half - 1, 1))
    a = u[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


class LearnedPolicy(nn.Module):
    """conf (n, L), mask bit (n, L), time (n,) [, alpha (n,)] -> one unmask logit per position (n, L).
    With alpha_hi set, the policy is conditioned on the reward exponent twice: an MLP of alpha's features is added to
    the time / mask conditioning (so alpha can change how confidences are read), and another scales and shifts the
    logits (so alpha moves the reveal threshold directly). Their output layers start at zero and they are built last,
    so at initialisation the policy is exactly the unconditioned one of the same seed, whatever alpha."""

    def __init__(self, c: PolicyConfig = PolicyConfig()):
        super().__init__()
        d, self.c = c.width, c
        if c.features not in FEATURES:
            raise ValueError(f"unknown policy features {c.features!r}: use one of {sorted(FEATURES)}")
        self.conf_in = nn.Linear(FEATURES[c.features], d)
        self.mask_emb = nn.Embedding(2, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.ada = nn.Linear(d, 6 * d)   # shift, scale, gate for attention and MLP
        self.ln1, self.ln2 = nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d, elementwise_affine=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, c.mlp), nn.GELU(), nn.Linear(c.mlp, d))
        self.ln_out, self.head = nn.LayerNorm(d), nn.Linear(d, 1)
        nn.init.zeros_(self.ada.weight), nn.init.zeros_(self.ada.bias)     # identity modulation at init
        nn.init.zeros_(self.head.weight), nn.init.constant_(self.head.bias, c.init_bias)
        if c.alpha_hi is not None:
            self.alpha_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
            nn.init.zeros_(self.alpha_mlp[2].weight), nn.init.zeros_(self.alpha_mlp[2].bias)
            # output FiLM: a scale and a shift of every logit from alpha. The adaLN path above reaches the logits only
            # through ada, which starts at zero, so its gradient starts at zero too (docs/learning.md measures it);
            # this path's shift gets the summed policy gradient of every position from the first step
            self.alpha_out = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 2))
            nn.init.zeros_(self.alpha_out[2].weight), nn.init.zeros_(self.alpha_out[2].bias)
        self.tau, self.beta, self.fallback, self.spec = 1.0, 1.0, True, "learned"
        self.alpha = None   # evaluation: the point on the front (ckpt.pt:alpha=A) of an alpha-conditioned policy

    @property
    def conditioned(self):
        return self.c.alpha_hi is not None

    def modulation(self, masked, t, alpha=None):
        """(n, L, 6d): ada of position i's conditioning mask_emb[mask_i] + time_mlp(t) [+ alpha_mlp(alpha)]. ada is
        linear, so that is ada of the row's part (one per row) plus ada's weight applied to the two mask embeddings:
        no per-position matmul (a test checks it against ada applied at every position)."""
        row = self.time_mlp(sinusoidal(t, self.c.width))                             # (n, d)
        if self.conditioned:
            if alpha is None:
                raise ValueError("an alpha-conditioned policy needs alpha (a checkpoint spec 'ckpt.pt:alpha=A')")
            row = row + self.alpha_mlp(alpha_features(alpha, self.c.alpha_hi, self.c.width, self.c.alpha_features))
        # F.embedding, not table[masked]: its backward sums in a fixed order (indexing's does not on several threads)
        return F.embedding(masked.long(), F.linear(self.mask_emb.weight, self.ada.weight)) + self.ada(row)[:, None]

    def forward(self, conf, masked, t, alpha=None):
        logits = self.trunk(conf, masked, t, alpha)
        if not self.conditioned:
            return logits
        a = alpha_features(alpha, self.c.alpha_hi, self.c.width, self.c.alpha_features)
        scale, shift = self.alpha_out(a).unbind(-1)                                  # (n,) each
        return logits * (1 + scale[:, None]) + shift[:, None]

    def trunk(self, conf, masked, t, alpha=None):
        """The transformer block: (n, L) logits before the output FiLM of an alpha-conditioned policy."""
        n, L = conf.shape
        h = self.conf_in(conf_features(conf, self.c.features))                      # (n, L, d)
        b1, s1, g1, b2, s2, g2 = self.modulation(masked, t, alpha).chunk(6, dim=-1)  # each (n, L, d)
        a = self.ln1(h) * (1 + s1) + b1
        q, k, v = self.qkv(a).view(n, L, 3, self.c.heads, -1).permute(2, 0, 3, 1, 4)  # (n, H, L, hd) each
        cos, sin = rotary(torch.arange(L, device=conf.device).expand(n, L), q.shape[-1], 10000.0)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, L, -1)
        h = h + (1 + g1) * self.proj(a)
        h = h + (1 + g2) * self.mlp(self.ln2(h) * (1 + s2) + b2)
        return self.head(self.ln_out(h)).squeeze(-1)                                # (n, L)

    def check(self, L, BL):
        pass

    def alpha_of(self, obs):
        """(b,) alpha per row: the rollout's own (obs.alpha, GRPO with --alpha-range), else the one asked for."""
        if not self.conditioned:
            return None
        if obs.alpha is not None:
            return obs.alpha
        if self.alpha is None:
            raise ValueError(f"{self.spec} is alpha-conditioned (trained on [{self.c.alpha_lo:g}, {self.c.alpha_hi:g}]): "
                             f"pick the point on its front with ':alpha=A'")
        return torch.full(obs.t.shape, float(self.alpha), device=obs.t.device)

    @torch.no_grad()
    def act(self, obs):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=obs.conf.is_cuda):
            logits = self(obs.conf, obs.masked, obs.t, self.alpha_of(obs)).float()
        if self.c.actions == "dpls":   # never empty: no fallback needed
            u, order = dpls_sample(logits, obs.cand, obs.uniform(), obs.uniform(1), obs.uniform(2)[:, 0], self.tau, self.beta)
            return u, dpls_log_prob(logits, obs.cand, order, self.tau, self.beta), order
        u = bernoulli_sample(logits, obs.cand, obs.uniform(), self.tau, self.beta)
        logp = bernoulli_log_prob(logits, obs.cand, u, self.tau, self.beta)
        if self.fallback:  # evaluation: a row that drew nothing unmasks its best candidate
            none = ~u.any(1, keepdim=True)
            best = rank_select(logits, obs.cand, torch.ones_like(logp, dtype=torch.long))
            u = u | (none & best)
        return u, logp


CHECKPOINT_KEYS = ("policy", "policy_config", "args", "step")   # what every train.py checkpoint holds


def read_checkpoint(path):
    """A train.py checkpoint as a dict, checked: a missing, empty, truncated, foreign or non-policy file is one
    clear ValueError / FileNotFoundError, never an EOFError or KeyError from deep inside."""
    if os.path.isdir(path):
        raise ValueError(f"policy checkpoint {path} is a directory: pass the checkpoint file (e.g. {path}/ckpt.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"policy checkpoint {path} not found (train one with python train.py)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, not a torch file, or foreign pickled objects
        raise ValueError(f"{path} is not a policy checkpoint written by train.py ({type(e).__name__})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in CHECKPOINT_KEYS):
        raise ValueError(f"{path} is not a policy checkpoint written by train.py (it lacks "
                         f"{[k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]})")
    return ck


def load_weights(pol, state, new=("alpha_mlp.", "alpha_out.")):
    """Load a state dict whose only missing weights are those of `new` modules (a conditioned policy from before the
    output FiLM, or a per-alpha policy that starts a conditioned one: train.py --init). Those stay at their
    initialisation, which leaves the policy's function unchanged (their output layers are zero)."""
    missing, unexpected = pol.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(new)] + list(unexpected)
    if bad:
        raise RuntimeError(f"weights that do not fit: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")


def load_policy(path, device="cpu"):
    """A learned policy from a train.py checkpoint -> (policy in eval mode, checkpoint dict)."""
    ck = read_checkpoint(path)
    if ck["policy_config"].get("actions", "bernoulli") not in ACTIONS:
        raise ValueError(f"{path}: unknown action type {ck['policy_config']['actions']!r} (this code knows {ACTIONS})")
    try:
        pol = LearnedPolicy(PolicyConfig(**{"features": "raw", "alpha_features": "timestep",   # older files'
                                            **ck["policy_config"]}))
        load_weights(pol, ck["policy"])
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: its policy weights do not match its policy config "
                         f"({str(e).splitlines()[0][:200]})") from None
    pol.spec = path  # the path as given: several checkpoints share a file name
    pol.tau = float(ck["args"].get("tau", 1.0))   # the temperature it was trained to be read at (train.py --tau)
    return pol.to(device).eval(), ck


def number(spec, text, what):
    """A finite float from a spec's argument, or one clear error."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{spec!r}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{spec!r}: {what} must be finite, not {text}")
    return v


def parse_policy(spec, device="cpu"):
    """One spec string -> a policy object. 'topk:steps=64', 'threshold:0.9', 'eb:gamma=0.1', 'factor:1',
    'random:32', 'pc:lam=0.25:steps=8', 'eosdamp:g=0.4:steps=8', 'band:hi=0.9:lo=0.08', or a checkpoint 'path/ckpt.pt' with ':tau=0.5'."""
    name, _, arg = spec.strip().partition(":")
    key, _, val = arg.rpartition("=")
    if name.endswith(".pt"):
        return checkpoint_policy(spec, name, arg, device)
    keys = {"random": "steps", "topk": "steps", "margin": "steps", "entropy": "steps",
            "threshold": "lam", "factor": "f", "eb": "gamma"}
    if name in TWO_ARGUMENTS:   # two arguments, colon-separated so the spec survives a comma list
        return two_argument_rule(spec, name, arg)
    if name not in keys:
        raise ValueError(f"unknown policy {spec!r}: use one of {sorted(keys) + list(TWO_ARGUMENTS)} (e.g. topk:steps=32) "
                         f"or a *.pt checkpoint")
    if not val or key not in ("", keys[name]):
        raise ValueError(f"{spec!r}: write it as {name}:{keys[name]}=VALUE")
    num = number(spec, val, keys[name])
    if keys[name] == "steps":
        return FixedSteps(name, steps_of(spec, num))
    if name == "threshold" and not 0 < num <= 1:
        raise ValueError(f"{spec!r}: a confidence threshold must be in (0, 1]")
    if name in ("factor", "eb") and num < 0:
        raise ValueError(f"{spec!r}: {keys[name]} must be >= 0")
    return {"threshold": Threshold, "factor": Factor, "eb": EB}[name](val)


def checkpoint_policy(spec, path, arg, device):
    """'ckpt.pt', 'ckpt.pt:tau=0.5', 'ckpt.pt:beta=2', 'ckpt.pt:alpha=3', 'ckpt.pt:tau=0.5:beta=2:alpha=3' -> the
    learned policy. Its spec (the rows' identity) is the path followed by the options as given. beta (paper Fig. 6):
    unmask with probability min(1, beta * sigmoid(logit / tau)); for DPLS, STOP's logit becomes -log(beta)."""
    opts = {}
    for part in filter(None, arg.split(":")):
        k, _, v = part.partition("=")
        if k not in ("tau", "beta", "alpha") or k in opts:
            raise ValueError(f"{spec!r}: a checkpoint takes ':tau=T', ':beta=B' and, if alpha-conditioned, ':alpha=A'")
        opts[k] = (v, number(spec, v, k))
    for k in ("tau", "beta"):
        if k in opts and opts[k][1] <= 0:
            raise ValueError(f"{spec!r}: {k} must be > 0")
    pol, _ = load_policy(path, device)
    if pol.conditioned and "alpha" not in opts:
        raise ValueError(f"{spec!r}: {path} is alpha-conditioned (trained on [{pol.c.alpha_lo:g}, {pol.c.alpha_hi:g}]): "
                         f"pick the point on its front with ':alpha=A'")
    if "alpha" in opts:
        a = opts["alpha"][1]
        if not pol.conditioned:
            raise ValueError(f"{spec!r}: {path} is not alpha-conditioned (it was trained for one alpha); drop ':alpha='")
        if not pol.c.alpha_lo <= a <= pol.c.alpha_hi:
            raise ValueError(f"{spec!r}: alpha {a:g} is outside the range the policy was trained on "
                             f"[{pol.c.alpha_lo:g}, {pol.c.alpha_hi:g}]")
        pol.alpha = a
    pol.tau = opts["tau"][1] if "tau" in opts else pol.tau
    pol.beta = opts["beta"][1] if "beta" in opts else 1.0
    pol.spec = path + "".join(f":{k}={v}" for k, (v, _) in opts.items())
    return pol


def steps_of(spec, num):
    if num != int(num) or num < 1:
        raise ValueError(f"{spec!r}: steps must be a positive integer")
    return int(num)


TWO_ARGUMENTS = dict(pc=("lam", "steps"), eosdamp=("g", "steps"), band=("hi", "lo"))


def two_argument_rule(spec, name, arg):
    """'pc:lam=0.25:steps=8', 'eosdamp:g=0.4:steps=8' and 'band:hi=0.9:lo=0.08'."""
    first, second = TWO_ARGUMENTS[name]
    parts = dict(p.partition("=")[::2] for p in arg.split(":") if p)
    if set(parts) != {first, second} or not all(parts.values()):
        raise ValueError(f"{spec!r}: write it as {name}:{first}=VALUE:{second}=VALUE")
    v = number(spec, parts[first], first)
    if name == "band":
        lo = number(spec, parts["lo"], "lo")
        if not 0 <= lo < v <= 1:
            raise ValueError(f"{spec!r}: need 0 <= lo < hi <= 1")
        return Band(parts["hi"], parts["lo"])
    if name == "pc" and v < 0:
        raise ValueError(f"{spec!r}: lam must be >= 0")
    if name == "eosdamp" and not 0 <= v <= 1:
        raise ValueError(f"{spec!r}: g must be in [0, 1]")
    steps = steps_of(spec, number(spec, parts["steps"], "steps"))
    return PositionCalibrated(parts[first], steps) if name == "pc" else EOSDamped(parts[first], steps)


def parse_policies(specs, device="cpu"):
    """A comma-separated list of specs -> list of policies (the CLIs' --policies); an empty list is an error."""
    pols = [parse_policy(s, device) for s in specs.split(",") if s.strip()]
    if not pols:
        raise ValueError(f"no policy in {specs!r}: pass comma-separated specs, e.g. 'topk:steps=32,threshold:0.9'")
    return pols
