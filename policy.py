"""
Unmasking policies, all behind one interface for env.generate: `act(obs) -> Action(unmask, logp,
order)`. The hand rules (reference semantics below) and the learned policy (paper section 4) differ
only in how they choose among the candidates (masked positions of the current block).

  random / topk / margin / entropy (steps=S)  fixed schedule: S steps split equally over the blocks; in a block its
                 masks are split evenly over its steps, the remainder to the earliest steps; chosen uniformly / by
                 highest conf / highest top1-top2 margin / lowest entropy
  threshold (lam)   Fast-dLLM: every candidate with conf >= lam, and always the row's most confident one
  factor (f)        Fast-dLLM: the longest prefix of the sorted confs with c(n) >= 1 - f / (n + 1)
  eb (gamma)        EB-sampler: by entropy ascending, the largest prefix whose entropy sum minus its max is <= gamma
  pc (lam, steps)   PC-Sampler (arXiv 2508.13021): the top-k schedule on exp(-lam * d) * conf, d the position
  eosdamp (g, steps) EOSER (arXiv 2509.23924): the top-k schedule on conf, end-of-text proposals' conf times a
                    factor rising linearly from g to 1 over the steps
  band (hi, lo)     every candidate with conf >= hi or conf <= lo, and always the row's most confident one
  learned           one adaptive-LayerNorm transformer block over (conf, mask bit, time [, alpha]
                    [, its block and the setting: BL, dLLM temperature]) -> one logit per position,
                    turned into an action by a Bernoulli per position or by DPLS (actions.py)
Ties in a ranking (common: a saturated tiny model gives conf == 1.0) go to the lowest position.

A spec string names a policy: 'topk:steps=32', 'threshold:0.9', 'band:hi=0.9:lo=0.08', or a
checkpoint 'out/ckpt.pt:tau=0.5' (both parsed by decode.parse_policy). Each hand rule is one class
that declares its spec name and arguments (Arg) once; parsing, eval.py's sweeps and the list in the
README all come from those declarations (RULES). Adding a heuristic is adding a class here.

    python policy.py          # the spec of every policy
"""
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from actions import action_log_prob, bernoulli_sample, dpls_sample
from common.specs import COARSE_STEP_COUNTS, STEP_COUNTS, Arg, value_text
from model import apply_rotary, rotary


@dataclass
class Action:
    """What a policy returns for one step of the b unfinished rows."""
    # (b, L) bool: reveal these positions now (env.generate keeps only candidates)
    unmask: torch.Tensor
    logp: torch.Tensor = None     # (b,) float32 log-probability of the action (learned policies)
    # (b, L) long: the order a DPLS action drew its positions in (-1: not drawn)
    order: torch.Tensor = None


def rank_select(score, cand, k):
    """Select the k (per row, (b,) long) highest-scoring candidates; ties go to the lowest
    position."""
    score = score.masked_fill(~cand, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices         # (b, L)
    positions = torch.arange(score.shape[1], device=score.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return cand & (ranks < k[:, None])


def best_one(score, cand):
    """Each row's single highest-scoring candidate (b, L) bool."""
    one = torch.ones(score.shape[0], dtype=torch.long, device=score.device)
    return rank_select(score, cand, one)


def sorted_prefix(values, cand, descending, ok_fn):
    """Length (b,) of the longest prefix of the candidates' values, sorted, for which ok_fn holds
    (>= 1)."""
    fill = float("-inf") if descending else 1e9
    v = torch.sort(values.masked_fill(~cand, fill), dim=1, descending=descending).values   # (b, L)
    # 1-based rank
    n = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    return ok_fn(v, n).long().cumprod(1).sum(1).clamp(min=1)




# --------------------------------------------------------------------------------------------------
# the hand rules

# spec name -> the class of that hand rule (every subclass of Heuristic with a name registers
# itself)
RULES = {}


class Heuristic:
    """A hand rule: a spec name, its arguments, and select(obs) -> (b, L) bool."""
    name = None        # the spec's name; a class that sets it is registered in RULES
    args = ()          # its Args, in spec order
    # "paper" (the paper's heuristics), "eos-aware" (PC-Sampler, EOSER) or "hand" (beyond both)
    group = "paper"
    in_all = True      # part of `eval.py --sweep all`
    needs = ()         # extra observations it reads: "margin", "entropy", "eos"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # a class that names itself (not a subclass that only inherits a name)
        if cls.__dict__.get("name"):
            RULES[cls.name] = cls

    def __init__(self, *values):
        """Values in the order of args (parse_policy checks a spec's text first)."""
        for a, v in zip(self.args, values):
            setattr(self, a.name, a.kind(v))
        self.spec = (self.name or type(self).__name__) + "".join(
            f":{a.name}={value_text(v)}" if a.keyword else f":{value_text(v)}"
            for a, v in zip(self.args, values))
        self.validate()

    @classmethod
    def usage(cls):
        return cls.name + "".join(f":{a.name}={a.metavar}" if a.keyword else f":{a.metavar}"
                                  for a in cls.args)

    def validate(self):
        """Constraints between arguments (each one's own range is checked by its Arg)."""

    def check(self, L, BL):
        """Refuse a decoding setup this rule cannot run (fixed-step rules: the step count)."""

    def act(self, obs):
        return Action(self.select(obs))


STEPS = Arg("steps", "S", int, grid=STEP_COUNTS)


class Scheduled(Heuristic):
    """LLaDA's fixed schedule: `steps` in total, split equally over the blocks; each step takes its
    share of the block's masks, ranked by score(obs) (highest first)."""
    args = (STEPS,)

    def check(self, L, BL):
        if not 0 < self.steps <= L or self.steps % (L // BL):
            raise ValueError(
                f"{self.spec}: steps must be in 1..{L} and a multiple of the {L // BL} blocks")

    def select(self, obs):
        per_block = self.steps // obs.n_blocks
        left = (per_block - obs.block_step).clamp(min=1)                 # steps left in this block
        # ceil: the remainder goes first
        k = -(-obs.cand.sum(1) // left)
        return rank_select(self.score(obs), obs.cand, k)


class TopK(Scheduled):
    name = "topk"

    def score(self, obs):
        return obs.conf


class Random(Scheduled):
    # below top-k everywhere: a few points do
    name, args = "random", (Arg("steps", "S", int, grid=COARSE_STEP_COUNTS),)

    def score(self, obs):
        return obs.uniform()


class Margin(Scheduled):
    name, needs, in_all = "margin", ("margin",), False

    def score(self, obs):
        return obs.margin


class Entropy(Scheduled):
    name, needs, in_all = "entropy", ("entropy",), False

    def score(self, obs):
        return -obs.entropy


class PositionCalibrated(Scheduled):
    """PC-Sampler's score exp(-lam * d) * conf, d from the start of the generation (its corpus
    prior left out: docs/design.md, "Hand rules")."""
    name, group, in_all = "pc", "eos-aware", False
    args = (Arg("lam", "L", lo=0, grid=(0.25, 1.0)), STEPS)

    def score(self, obs):
        d = torch.arange(obs.conf.shape[1], device=obs.conf.device, dtype=torch.float32)
        return torch.exp(-self.lam * d)[None] * obs.conf


class EOSDamped(Scheduled):
    """EOSER: an end-of-text proposal's conf times g + (1 - g) * progress, progress = steps spent /
    (steps - 1) rising from 0 to 1."""
    name, group, needs, in_all = "eosdamp", "eos-aware", ("eos",), False
    args = (Arg("g", "G", lo=0, hi=1, grid=(0.4,)), STEPS)

    def score(self, obs):
        spent = (obs.t * obs.conf.shape[1]).round()
        progress = (spent / max(self.steps - 1, 1)).clamp(max=1.0)[:, None]         # (b, 1)
        return torch.where(obs.eos, obs.conf * (self.g + (1 - self.g) * progress), obs.conf)


class Threshold(Heuristic):
    name = "threshold"
    args = (Arg("lam", "LAMBDA", lo=0, hi=1, open_lo=True, keyword=False,
                grid=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)), )

    def select(self, obs):
        return (obs.cand & (obs.conf >= self.lam)) | best_one(obs.conf, obs.cand)


class Factor(Heuristic):
    name = "factor"
    args = (Arg("f", "F", lo=0, keyword=False, grid=(0.25, 0.5, 1, 2, 4, 6, 8, 12, 16)),)

    def select(self, obs):
        k = sorted_prefix(obs.conf, obs.cand, True, lambda c, n: c >= 1 - self.f / (n + 1))
        return rank_select(obs.conf, obs.cand, k)


class EB(Heuristic):
    name, needs = "eb", ("entropy",)
    args = (Arg("gamma", "G", lo=0, grid=(0.001, 0.01, 0.03, 0.1, 0.3, 0.6, 1, 3)),)

    def select(self, obs):
        k = sorted_prefix(obs.entropy, obs.cand, False, lambda e, n: e.cumsum(1) - e <= self.gamma)
        return rank_select(-obs.entropy, obs.cand, k)


class Band(Heuristic):
    name, group, in_all = "band", "hand", False
    args = (Arg("hi", "H", lo=0, hi=1, grid=(0.7, 0.8, 0.9, 0.95)),
            Arg("lo", "L", lo=0, hi=1, grid=(0.05, 0.08, 0.12)))

    def validate(self):
        if not self.lo < self.hi:
            raise ValueError(f"{self.spec!r}: need 0 <= lo < hi <= 1")

    def select(self, obs):
        return (obs.cand & ((obs.conf >= self.hi) |
                            (obs.conf <= self.lo))) | best_one(obs.conf, obs.cand)


# --------------------------------------------------------------------------------------------------
# the learned policy (paper section 4)

@dataclass
class PolicyConfig:
    width: int = 128        # hidden size
    heads: int = 2          # attention heads (rotary positions, bidirectional)
    mlp: int = 512          # GELU MLP width
    init_bias: float = -2.0 # output bias: every masked token starts at sigmoid(-2) = 0.12
    alpha_lo: float = None  # alpha-conditioned (train.py --alpha-range LO,HI): its range;
    alpha_hi: float = None  # None = one policy per alpha, as in the paper
    alpha_features: str = "smooth"  # how alpha is encoded (alpha_features)
    actions: str = "bernoulli"      # logits -> action (actions.py): bernoulli or dpls (App. E)
    # what the policy reads of a confidence c: raw = c alone (paper), log = c, log c and log(1 - c),
    # block = those and log(c / the block's highest candidate c)
    features: str = "log"
    # reads the decoding setting (train.py --block-lengths / --temperature-range): which positions
    # are its block's candidates, BL / L, the dLLM temperature, the block's progress
    setting: bool = False


FEATURES = {"raw": 1, "log": 3, "block": 4}   # input features per position


def conf_features(conf, kind, cand=None):
    """(n, L) confidences -> (n, L, F) input features. The paper feeds c itself to Linear(1, d).
    "log" adds log c and log(1 - c) (scaled by 1/10, c clamped to [1e-6, 1 - 1e-6]): each decade of
    c near 0, or of 1 - c near 1, is then one step of the input, where c alone moves by 0.09 from
    0.9 to 0.99 and by 0.05 from 0.05 to 0.1. "block" adds log(c / the highest c among the
    candidates (n, L) bool) / 10, 0 at the block's best candidate: which one is the block's best is
    then read at the position itself, at any block length, not found by attention."""
    c = conf.float()[..., None]
    if kind == "raw":
        return c
    c = c.clamp(1e-6, 1 - 1e-6)
    out = [c, c.log() / 10, (-c).log1p() / 10]
    if kind == "block":
        if cand is None:
            raise ValueError("block features need the candidates (env.Obs.cand)")
        # (n, 1, 1)
        best = c.squeeze(-1).masked_fill(~cand, 1e-6).max(1, keepdim=True).values[..., None]
        out.append((c / best).log().clamp(max=0) / 10)
    return torch.cat(out, -1)


def smooth_features(u, dim):
    """(n,) values of order 1 -> (n, dim) sin / cos features at frequencies pi/4 to 4 pi: every
    feature is a smooth function of u, so what is learned at one value carries over to its
    neighbours."""
    half = dim // 2
    k = torch.arange(half, device=u.device, dtype=torch.float32)
    freqs = math.pi / 4 * 16 ** (k / max(half - 1, 1))
    a = u.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


SETTING_DIM = 16   # features per setting value


def setting_features(setting, L):
    """(n, 3) settings (BL / L, dLLM temperature, block_step / BL; env.Obs.setting) ->
    (n, 3 * SETTING_DIM): smooth features of log(BL) / log(L) (BL 4, 8, 16, 32 at L 32: 0.4, 0.6,
    0.8, 1; full diffusion is always 1), of the temperature and of the block's progress."""
    u_bl = 1 + torch.log(setting[:, 0]) / math.log(max(L, 2))
    return torch.cat(
        [smooth_features(u, SETTING_DIM) for u in (u_bl, setting[:, 1], setting[:, 2])], -1)


def sinusoidal(t, dim, max_period=10000.0):
    """(n,) times in [0, 1] -> (n, dim) sinusoidal features (t scaled by 1000, as diffusion
    timesteps)."""
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / half)
    a = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


def alpha_features(alpha, hi, dim, kind="smooth"):
    """(n,) reward exponents in [0, hi] -> (n, dim) sinusoidal features of
    u = log(1 + alpha) / log(1 + hi) in [0, 1] (the reward's sensitivity to alpha is roughly
    logarithmic). "smooth": frequencies from pi/4 to 4 pi, so every feature is a smooth function of
    u and what is learned at one alpha carries over to its neighbours. "timestep": the
    diffusion-time encoding (frequencies up to 1000 per unit of u), kept for the checkpoints that
    use it."""
    u = torch.log1p(alpha.float()) / math.log1p(hi)
    return sinusoidal(u, dim) if kind == "timestep" else smooth_features(u, dim)


def mlp(d_in, d, d_out, zero=True):
    """Linear -> SiLU -> Linear; zero: its output layer starts at zero."""
    m = nn.Sequential(nn.Linear(d_in, d), nn.SiLU(), nn.Linear(d, d_out))
    if zero:
        nn.init.zeros_(m[2].weight), nn.init.zeros_(m[2].bias)
    return m


@dataclass(frozen=True)
class Knobs:
    """How a learned policy is read at one call; nothing of it is stored in the network."""
    # policy temperature: unmask p = sigmoid(logit / tau) (paper: 0.5 for BL 32, 1 for BL = L)
    tau: float = 1.0
    # paper Fig. 6: p = min(1, beta * sigmoid(logit / tau)); DPLS: STOP's logit is -log(beta)
    beta: float = 1.0
    # an alpha-conditioned policy's point on its front (GRPO rollouts pass their own, obs.alpha)
    alpha: float = None
    # evaluation: a row that drew nothing unmasks its best candidate (GRPO rollouts: False)
    fallback: bool = True


# The env.Obs fields the learned policy reads, by name and in forward()'s order: rollouts record
# them (env.generate(record=READS)) and the update reads them back (grpo.step_log_prob). A new
# input: a field of env.Obs, its name here, and its use in forward().
READS = ("conf", "masked", "t", "alpha", "cand", "setting")
# how GRPO's rollouts read the policy; the update scores their actions with the same
ROLLOUT = Knobs(fallback=False)


class LearnedPolicy(nn.Module):
    """The paper's policy (section 4): the READS fields -> one unmask logit per position (n, L): one
    adaptive-LayerNorm transformer block over confidence features, conditioned on time [, alpha] [,
    the setting], which also scale and shift the logits (from zero: docs/design.md, "Learning")."""

    def __init__(self, c: PolicyConfig = PolicyConfig()):
        super().__init__()
        d, self.c = c.width, c
        if c.features not in FEATURES:
            raise ValueError(
                f"unknown policy features {c.features!r}: use one of {sorted(FEATURES)}")
        self.conf_in = nn.Linear(FEATURES[c.features], d)
        self.mask_emb = nn.Embedding(3 if c.setting else 2, d)
        self.time_mlp = mlp(d, d, d, zero=False)
        self.ada = nn.Linear(d, 6 * d)   # shift, scale, gate for attention and MLP
        self.ln1, self.ln2 = (nn.LayerNorm(d, elementwise_affine=False) for _ in range(2))
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, c.mlp), nn.GELU(), nn.Linear(c.mlp, d))
        self.ln_out, self.head = nn.LayerNorm(d), nn.Linear(d, 1)
        # identity modulation at init
        nn.init.zeros_(self.ada.weight), nn.init.zeros_(self.ada.bias)
        nn.init.zeros_(self.head.weight), nn.init.constant_(self.head.bias, c.init_bias)
        if c.alpha_hi is not None:   # conditioning, and a scale and a shift of the logits
            self.alpha_mlp, self.alpha_out = mlp(d, d, d), mlp(d, d, 2)
        if c.setting:
            self.setting_mlp = mlp(3 * SETTING_DIM, d, d, zero=False)
            self.setting_out = mlp(3 * SETTING_DIM, d, 2)

    @property
    def conditioned(self):
        return self.c.alpha_hi is not None

    def modulation(self, masked, t, alpha=None, cand=None, setting=None):
        """(n, L, 6d): ada of position i's conditioning mask_emb[state_i] + time_mlp(t) [+
        alpha_mlp(alpha)] [+ setting_mlp(setting)]. ada is linear, so that is ada of the row's part
        (one per row) plus ada's weight applied to the state embeddings: no per-position matmul."""
        row = self.time_mlp(sinusoidal(t, self.c.width))                             # (n, d)
        if self.conditioned:
            if alpha is None:
                raise ValueError(
                    "an alpha-conditioned policy needs alpha (a checkpoint spec 'ckpt.pt:alpha=A')")
            row = row + self.alpha_mlp(
                alpha_features(alpha, self.c.alpha_hi, self.c.width, self.c.alpha_features))
        state = masked.long()
        if self.c.setting:
            row = row + self.setting_mlp(setting_features(setting, masked.shape[1]))
            # 0 revealed, 1 masked elsewhere, 2 a candidate
            state = state + cand.long()
        # F.embedding, not table[masked]: its backward sums in a fixed order (indexing's does not on
        # several threads)
        table = F.linear(self.mask_emb.weight, self.ada.weight)
        return F.embedding(state, table) + self.ada(row)[:, None]

    def forward(self, conf, masked, t, alpha=None, cand=None, setting=None):
        """The READS fields -> (n, L) float32 logits, autocast or not (the rollouts' and the
        update's log-probabilities must agree): per-position features, the block, then the scale and
        shift of alpha and of the setting. A new input is its name in READS, here and where it
        enters."""
        if self.c.setting and (cand is None or setting is None):
            raise ValueError(
                "a setting-reading policy needs the candidates and the setting (env.Obs)")
        with torch.autocast(conf.device.type, enabled=False):
            conf, t, L = conf.float(), t.float(), conf.shape[1]
            setting = None if setting is None else setting.float()
            h = self.conf_in(conf_features(conf, self.c.features, cand))            # (n, L, d)
            logits = self.block(h, self.modulation(masked, t, alpha, cand, setting))
            if self.conditioned:
                a = alpha_features(alpha, self.c.alpha_hi, self.c.width, self.c.alpha_features)
                scale, shift = self.alpha_out(a).unbind(-1)                          # (n,) each
                logits = logits * (1 + scale[:, None]) + shift[:, None]
            if self.c.setting:
                scale, shift = self.setting_out(setting_features(setting, L)).unbind(-1)
                logits = logits * (1 + scale[:, None]) + shift[:, None]
        return logits

    def block(self, h, mod):
        """The adaptive-LayerNorm transformer block: features h (n, L, d), modulation mod (n, L, 6d)
        -> logits (n, L)."""
        n, L, _ = h.shape
        b1, s1, g1, b2, s2, g2 = mod.chunk(6, dim=-1)
        a = self.ln1(h) * (1 + s1) + b1
        # (n, H, L, hd) each
        q, k, v = self.qkv(a).view(n, L, 3, self.c.heads, -1).permute(2, 0, 3, 1, 4)
        cos, sin = rotary(torch.arange(L, device=h.device).expand(n, L), q.shape[-1], 10000.0)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, L, -1)
        h = h + (1 + g1) * self.proj(a)
        h = h + (1 + g2) * self.mlp(self.ln2(h) * (1 + s2) + b2)
        return self.head(self.ln_out(h)).squeeze(-1)                                # (n, L)

    @torch.no_grad()
    def act(self, obs, knobs=Knobs()):
        """One step's action for the observation, read with knobs -> Action (logp: its exact
        log-probability)."""
        # GRPO's rollouts carry their own alpha, else the knob's
        if self.conditioned and obs.alpha is None:
            if knobs.alpha is None:
                raise ValueError(f"an alpha-conditioned policy (trained on [{self.c.alpha_lo:g}, "
                                 f"{self.c.alpha_hi:g}]) needs its point on the front: ':alpha=A'")
            obs = dataclasses.replace(
                obs, alpha=torch.full(obs.t.shape, float(knobs.alpha), device=obs.t.device))
        logits = self(**{k: getattr(obs, k) for k in READS})
        if self.c.actions == "dpls":   # never empty: no fallback needed
            u, order = dpls_sample(logits, obs.cand, obs.uniform(), obs.uniform(1),
                                   obs.uniform(2)[:, 0], knobs.tau, knobs.beta)
        else:
            u = bernoulli_sample(logits, obs.cand, obs.uniform(), knobs.tau, knobs.beta)
            order = None
        logp = action_log_prob(self.c.actions, logits, obs.cand, u, order, knobs)
        if knobs.fallback and order is None:
            u = u | (~u.any(1, keepdim=True) & best_one(logits, obs.cand))
        return Action(u, logp, order)


@dataclass
class Learned:
    """A learned policy as env.generate drives it: the network and how it is read (spec: the rows'
    name for it)."""
    net: LearnedPolicy
    knobs: Knobs = field(default_factory=Knobs)
    spec: str = "learned"
    trained: tuple = None     # (L, block lengths) it was trained at, for a checkpoint
    needs = ()

    def check(self, L, BL):
        """Any decoding setup: the policy reads every position it is given."""

    def act(self, obs):
        return self.net.act(obs, self.knobs)


def spec_forms():
    """Every policy's spec form, as the README lists them."""
    return [rule.usage() for rule in RULES.values()] + ["path.pt[:tau=T][:beta=B][:alpha=A]"]


if __name__ == "__main__":
    print("\n".join(spec_forms()))
