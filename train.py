"""
GRPO training of the unmasking policy against the frozen dLLM (paper section 5). Per step: P
prompts, a group of G rollouts each (env.generate), reward R = correct * ((L - NFE + 1) / L)**alpha,
advantage A = R - the group's mean, then K optimizer steps of the clipped objective
(grpo.py). As the paper: no KL term, no reference model, advantages not divided by the group's std.
Variants: --alpha-range (one policy for every alpha), --actions dpls (App. E), --expert (App. F),
--imitate (a cloned warm start), --block-lengths / --temperature-range (one policy for every
setting). The run's machinery (checks, logs, checkpoints, ranks) is in common/runs.py.

    python train.py --out out/p.pt       # the tiny world's recipe: blocks of 8, alpha 1 (2 min)
    python train.py --block-length 32 --expert threshold:0.9 --steps 60 --eval-tau 0.5 --out f.pt
    python train.py --block-length 8 --alpha-range 0,10 --out out/front.pt   # alpha in [0, 10]
    python train.py --block-length 32 --block-lengths 4,8,16,32 --temperature-range 0,1 \
        --features block --imitate band:hi=0.9:lo=0.08 --imitate-steps 600 --lr 2e-4 --steps 60 \
        --eval-tau 0.5 --out out/u.pt                                          # weights/policy.pt
    python train.py --model llada --block-length 32 --out out/llada.pt    # the paper's (one GPU)
    torchrun --nproc_per_node=8 train.py --model llada --out out/dp.pt   # each rank its prompts
"""
from common.start import quiet_ctrl_c

quiet_ctrl_c(__name__)

import dataclasses
import math
import random
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from actions import check_actions
from common.checkpoints import check_finite_state, read_checkpoint
from common.cli import entry, option, parse_config
from common.hub import TINY, check_model_name, resolve_device
from common.rng import fmix32
from common.runs import (RunLog, StopRequested, bounds, check_files, check_finite, check_numbers,
                         check_round, command_of, locked, reduced, resume, save_checkpoint,
                         setup_distributed)
from decode import checkpoint_of, evaluate, load_weights, parse_policy
from env import Rollout, check_decoding, generate, row_keys
from grpo import (REWARDS, advantages, collate, concat_batches, grpo_loss, old_expert_log_probs,
                  rewards)
from model import load_dllm
from policy import FEATURES, READS, ROLLOUT, Knobs, Learned, LearnedPolicy, PolicyConfig
from steps import ForwardMemo
from tasks import GRADERS, check_task, grade_many, prompts_of, training_sets


@dataclass
class TrainConfig:
    model: str = option("tiny",
                        "the frozen dLLM: tiny, tiny-b, llada, llada-1.5, dream, a dir, a *.pt")
    revision: str = option(None, "hub revision of the dLLM, to pin it")
    task: str = option(None, "training task (tiny: chain; real: gsm8k's train split)")
    data: str = option(None, "a local jsonl of the task instead of downloading it")
    gen_length: int = option(None, "L, the generation buffer (tiny 32, real 256)")
    block_length: int = option(None, "BL; BL == L is full diffusion (tiny 8, real 32)")
    block_lengths: str = option(None, "B1,B2,...: each group decodes at one; the policy reads it")
    alpha: float = option(None, "reward correct * ((L - NFE + 1) / L) ** alpha (tiny 1, real 3)")
    alpha_range: str = option(None, "LO,HI: one alpha-conditioned policy for the whole front")
    reward: str = option("mult", "mult (the paper's) or additive: correct - alpha * NFE / L")
    grader: str = option("paper",
                         "GSM8K / MATH grader of the reward: paper or verify (math-verify)")
    actions: str = option("bernoulli", "bernoulli (paper) or dpls (Plackett-Luce, App. E)")
    expert: str = option(None,
                         "expert steering (App. F): a heuristic spec, one more rollout a group")
    expert_block_length: int = option(None, "the expert's BL (default --block-length)")
    group_size: int = option(8, "G, rollouts per prompt")
    prompts_per_step: int = option(None, "prompts per GRPO step, over all ranks (16)")
    steps: int = option(None, "GRPO steps (tiny 60; real 0 = one epoch)")
    updates_per_batch: int = option(2, "optimizer steps on each rollout batch")
    clip_eps: float = option(0.5, "PPO clip range eps")
    std_adv: bool = option(False, "divide advantages by the group std (the paper does not)")
    lr: float = option(None, "AdamW peak learning rate (tiny 1e-3, real 3e-5)")
    weight_decay: float = option(0.1, "AdamW weight decay")
    grad_clip: float = option(0.2, "gradient-norm clip (the updates and the --imitate warm start)")
    warmup: int = option(None, "linear warm-up steps, then cosine to 0 (tiny 10, real 100)")
    temperature: float = option(0.0, "dLLM sampling temperature during rollouts")
    temperature_range: str = option(None,
                                    "LO,HI: each group's dLLM temperature; the policy reads it")
    cache: str = option("none", "KV cache of the rollouts: none, prefix or dual (semi-AR only)")
    width: int = option(128, "policy width (331K parameters at 128)")
    init_bias: float = option(None, "output bias at init (tiny blocks 0, else -2: the paper's)")
    features: str = option("log", "the policy's inputs per c: raw (c, the paper), log, block")
    imitate: str = option(None, "warm start: clone this heuristic (e.g. band:hi=0.9:lo=0.08)")
    imitate_steps: int = option(150, "warm-start minibatches (512 recorded steps each)")
    imitate_problems: int = option(2048,
                                   "training prompts the heuristic decodes for the warm start")
    imitate_lr: float = option(2e-3, "the warm start's peak learning rate (cosine to zero)")
    init: str = option(None, "start from this checkpoint's weights (a per-alpha policy)")
    alpha_norm: bool = option(False, "divide a group's advantages by its mean speed factor")
    batch_size: int = option(None, "rows per loss chunk and per held-out batch (memory)")
    eval_every: int = option(None, "held-out evaluation every N steps (tiny tasks; 0: never)")
    eval_n: int = option(None, "held-out problems per evaluation")
    eval_tau: float = option(None, "policy temperature of evaluations, stored (blocks 0.5, else 1)")
    seed: int = option(0, "seed of the data order, the policy's init and every rollout draw")
    out: str = option("out/ckpt.pt",
                      "checkpoint path; its per-step log is written beside it (.jsonl)")
    save_every: int = option(50, "checkpoint every N steps (and at the end)")
    resume: bool = option(False, "continue the run in --out")
    wandb: bool = option(False, "also log to Weights & Biases")
    device: str = option(None, "cuda, cuda:N, mps or cpu (default: autodetect)")
    compile: bool = option(False, "torch.compile the policy's update and the dLLM's forward")


# Defaults that depend on the world: the paper's for real models, tuned ones for the tiny world
# (docs/learning.md).
REAL = dict(task="gsm8k", gen_length=256, block_length=32, alpha=3.0, prompts_per_step=16, steps=0,
            lr=3e-5, warmup=100, batch_size=16, eval_every=100, eval_n=200, init_bias=-2.0)
TINY_DEFAULTS = dict(task="chain", gen_length=32, block_length=8, alpha=1.0, prompts_per_step=16,
                     steps=60, lr=1e-3, warmup=10, batch_size=128, eval_every=10, eval_n=256)
SETUP = ("model", "task", "gen_length", "block_length", "alpha", "reward", "group_size", "width",
         "cache", "alpha_range", "actions", "expert", "expert_block_length", "features", "imitate",
         "init", "alpha_norm", "temperature_range", "block_lengths")  # fixed on resume


def resolve(cfg):
    """The settings with the world's defaults filled in, every value checked - all before a model
    loads."""
    table = TINY_DEFAULTS if (cfg.model in TINY or cfg.model.endswith(".pt")) else REAL
    cfg = dataclasses.replace(cfg, **{k: v for k, v in table.items() if getattr(cfg, k) is None})
    blocks = cfg.block_length < cfg.gen_length
    # tiny world: blocks of 8 start at unmask p 0.5, full diffusion at the paper's 0.12
    cfg.init_bias = (0.0 if blocks else -2.0) if cfg.init_bias is None else cfg.init_bias
    cfg.eval_tau = (0.5 if blocks else 1.0) if cfg.eval_tau is None else cfg.eval_tau
    if cfg.expert is not None and cfg.expert_block_length is None:
        cfg.expert_block_length = cfg.block_length
    check_numbers(cfg)
    check_settings(cfg)
    check_files(cfg, SETUP)
    resolve_device(cfg.device)
    check_model_name(cfg.model)
    return cfg


def check_settings(cfg):
    """The names, specs and combinations of the settings (their numbers and files:
    common/runs.py)."""
    for flag, value, known in (("--reward", cfg.reward, REWARDS), ("--grader", cfg.grader, GRADERS),
                               ("--features", cfg.features, FEATURES)):
        if value not in known:
            raise ValueError(f"{flag} must be one of {', '.join(known)}, not {value!r}")
    if cfg.width % PolicyConfig.heads:
        raise ValueError(f"--width {cfg.width} must be a multiple of the policy's "
                         f"{PolicyConfig.heads} attention heads")
    check_decoding(cfg.gen_length, cfg.block_length, cfg.cache)
    block_lengths(cfg)
    check_actions(cfg.actions)
    if cfg.expert is not None:
        if cfg.actions == "dpls":
            raise ValueError(
                "--expert needs --actions bernoulli: an expert's step is a set with no order, and "
                "a DPLS likelihood is of a set and its order")
        if reads_setting(cfg) and cfg.expert_block_length != cfg.block_length:
            raise ValueError("--expert-block-length: a policy trained over settings has its expert "
                             "decode in each group's own blocks; drop it")
        heuristic("--expert", "the expert", cfg.expert, cfg.gen_length,
                  block_lengths(cfg) if reads_setting(cfg) else (cfg.expert_block_length,))
    if cfg.imitate is not None:
        if cfg.init is not None:
            raise ValueError("--init and --imitate are two warm starts: pick one")
        if cfg.actions != "bernoulli" or cfg.alpha_range is not None:
            raise ValueError("--imitate clones into a Bernoulli policy for one alpha: drop "
                             "--actions dpls / --alpha-range")
        heuristic("--imitate", "the warm start's teacher", cfg.imitate, cfg.gen_length,
                  block_lengths(cfg))
    check_task(cfg.task, cfg.data)
    if cfg.init is not None:
        init_weights(cfg)


def heuristic(flag, role, spec, L, bls):
    """--expert / --imitate: the hand rule of a spec that decodes L in blocks of each of bls."""
    if checkpoint_of(spec):
        raise ValueError(
            f"{flag} {spec}: {role} is a heuristic spec (e.g. threshold:0.9), not a checkpoint")
    rule = parse_policy(spec)
    for BL in bls:
        check_decoding(L, BL)
        rule.check(L, BL)
    return rule


def init_weights(cfg):
    """--init CKPT: its weights, checked against this run's policy (width, features, actions) -> a
    state dict."""
    ck = read_checkpoint(cfg.init)
    mine = dict(width=cfg.width, features=cfg.features, actions=cfg.actions)
    theirs = {k: ck["policy_config"].get(k, ck["args"].get(k)) for k in mine}
    if theirs != mine:
        raise ValueError(f"--init {cfg.init}: its policy ({theirs}) is not this run's ({mine})")
    check_finite_state(ck["policy"], f"--init {cfg.init}: its policy weights")
    return ck["policy"]


ALPHA0_SHARE = 0.2   # --alpha-range: share of groups at alpha = LO when LO = 0 (pure correctness)
T_LO_SHARE = 0.25    # --temperature-range: share of groups at LO (greedy decoding when LO = 0)


def block_lengths(cfg):
    """--block-lengths '4,8,16,32' -> (4, 8, 16, 32), each dividing L, --block-length among them;
    without it (--block-length,)."""
    if cfg.block_lengths is None:
        return (cfg.block_length,)
    try:
        bls = tuple(int(b) for b in cfg.block_lengths.split(","))
    except ValueError:
        raise ValueError(
            f"--block-lengths {cfg.block_lengths!r}: write them as B1,B2,..., e.g. 4,8,16,32"
        ) from None
    for b in bls:
        check_decoding(cfg.gen_length, b, cfg.cache if b < cfg.gen_length else "none")
    if len(set(bls)) != len(bls) or cfg.block_length not in bls:
        raise ValueError(f"--block-lengths {cfg.block_lengths}: distinct values, --block-length "
                         f"{cfg.block_length} among them")
    return bls


def reads_setting(cfg):
    """Whether the policy is trained over block lengths or temperatures, and so reads them."""
    return cfg.block_lengths is not None or cfg.temperature_range is not None


def temperatures(cfg):
    """The rollouts' dLLM temperatures: --temperature-range's (LO, HI), else (--temperature,)."""
    if cfg.temperature_range is None:
        return (cfg.temperature,)
    return bounds(cfg.temperature_range, "--temperature-range")


def draw_settings(cfg, prompt_index):
    """Each prompt's group's setting from its index (counter-based, so resume and ranks agree) ->
    block lengths (P,) long and dLLM temperatures (P,) float64: the block length uniformly from
    --block-lengths, the temperature uniformly from --temperature-range with T_LO_SHARE of the
    groups at LO (without them: --block-length and --temperature)."""
    h = fmix32(fmix32(prompt_index ^ 0x5E77) ^ cfg.seed)
    u1, u2, u3 = ((fmix32(h + i) >> 8).double() / 2 ** 24 for i in range(3))
    bls = torch.tensor(block_lengths(cfg))
    BL = bls[(u1 * len(bls)).long().clamp(max=len(bls) - 1)]
    if cfg.temperature_range is None:
        return BL, torch.full(u2.shape, cfg.temperature, dtype=torch.float64)
    lo, hi = temperatures(cfg)
    return BL, torch.where(u2 < T_LO_SHARE, lo, lo + (hi - lo) * u3)


def draw_alphas(prompt_index, lo, hi, seed):
    """One alpha per prompt (P,) from its index (counter-based, so resume and ranks agree).
    Log-uniform on [max(LO, 0.1), HI] - the reward ((L - NFE + 1) / L) ** alpha changes by the same
    factor per doubling of alpha, so each octave gets the same share - plus ALPHA0_SHARE of the
    groups at alpha = 0 when LO = 0, which a log scale cannot reach and which is the front's
    accurate end."""
    h = fmix32(fmix32(prompt_index ^ 0xA1FA) ^ seed)
    u1, u2 = (h >> 8).float() / 2 ** 24, (fmix32(h + 1) >> 8).float() / 2 ** 24
    base = lo if lo > 0 else min(0.1, hi)
    a = base * (hi / base) ** u2
    return torch.where((u1 < ALPHA0_SHARE) & (lo == 0), torch.zeros_like(a), a)


def cosine_lr(step, peak, warmup, total):
    """Linear warm-up to peak over `warmup` steps, then cosine to zero at `total` (GRPO and the
    imitation warm start)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# --------------------------------------------------------------------------------------------------
# one GRPO step: experience, then the clipped update

@dataclass
class Experience:
    """One step's rollouts: the policy's G per prompt, then (with --expert) the expert's E per
    prompt."""
    batch: dict               # every recorded step of every rollout, collated (grpo.collate)
    adv: torch.Tensor         # (B,) advantage per rollout, the policy's rollouts first
    reward: torch.Tensor      # (P * G,) rewards of the policy's own rollouts
    correct: torch.Tensor     # (P * G,) bool
    nfe: torch.Tensor         # (P * G,)
    zero_adv: float           # share of the groups whose advantages are all zero (no signal)
    expert: dict              # the expert's accuracy and NFE (empty without an expert)


def rollouts(dllm, policy, expert, cfg, problems, first, alpha, setting=None):
    """G rollouts per prompt by the policy (ROLLOUT knobs) and, with an expert, E = 1 more ->
    Experience, with advantages over each prompt's G + E. alpha: a number or (P * G,). setting: each
    group's (BL (P,), T (P,)), default draw_settings. A group shares its setting and its dLLM noise
    key (common random numbers)."""
    G, E, L, P = cfg.group_size, 1 if expert else 0, cfg.gen_length, len(problems)
    per_row = cfg.alpha_range is not None
    ids, am = prompts_of(dllm, problems)
    BL, T = setting if setting is not None else draw_settings(cfg, torch.arange(first, first + P))
    runs = [(Learned(policy.eval(), ROLLOUT), G, BL, cfg.seed, alpha)]
    if expert:
        expert_bl = BL if reads_setting(cfg) else torch.full_like(BL, cfg.expert_block_length)
        runs.append((expert, E, expert_bl, cfg.seed ^ 0xE5E5, alpha[::G] if per_row else alpha))
    noise = row_keys(cfg.seed ^ 0x401535, torch.arange(first, first + P))          # one per group
    # the rollouts of a prompt meet the same states (at least the first): one forward
    results, memo = [], ForwardMemo()
    for pol, n, bl, seed, a in runs:
        keys = row_keys(seed,
                        torch.tensor([(first + j) * n + g for j in range(P) for g in range(n)]))
        r = generate_rows(dllm, pol, ids.repeat_interleave(n, 0), am.repeat_interleave(n, 0), L,
                          bl.repeat_interleave(n),
                          T.repeat_interleave(n) if reads_setting(cfg) else cfg.temperature,
                          keys=keys, cache=cfg.cache, alpha=a if per_row else None, memo=memo,
                          memo_keys=torch.arange(P).repeat_interleave(n),
                          noise_keys=noise.repeat_interleave(n))
        correct = grade_rows(dllm, cfg.task, problems, r.tokens, n, cfg.grader)
        results.append((r, correct, rewards(correct, r.nfe, L, a, cfg.reward)))
    # (P, G + E) each prompt's group
    R = torch.cat([reward.view(P, -1) for _, _, reward in results], 1)
    nfe = torch.cat([r.nfe.view(P, -1) for r, _, _ in results], 1)
    group_alpha = alpha.view(P, G)[:, :1] if per_row else alpha
    A = advantages(R.reshape(-1), G + E, cfg.std_adv).view(P, G + E)
    A = A / speed_scale(nfe, L, group_alpha, cfg.alpha_norm)
    batch = collate(results[0][0].steps)
    if expert:
        expert_batch = collate(results[1][0].steps, expert=True, same_blocks=reads_setting(cfg))
        old_expert_log_probs(policy, expert_batch, (G, E), cfg.batch_size * L)
        batch = concat_batches(batch, expert_batch, P * G)
    r, correct, reward = results[0]
    stats = dict(expert_accuracy=100 * results[1][1].float().mean().item(),
                 expert_nfe=results[1][0].nfe.float().mean().item()) if expert else {}
    return Experience(batch, torch.cat([A[:, :G].reshape(-1), A[:, G:].reshape(-1)]), reward,
                      correct, r.nfe, (A.abs().max(1).values == 0).float().mean().item(), stats)


def generate_rows(dllm, pol, ids, am, L, bl, temperature, keys, cache, alpha, memo, memo_keys,
                  noise_keys):
    """env.generate (recording) for rows that decode at their own block lengths bl (B,): one call
    per block length, merged into one Rollout whose steps number the rows in the whole batch.
    temperature: a number or (B,)."""
    hot = torch.is_tensor(temperature)
    B = ids.shape[0]
    out = Rollout(torch.empty((B, L), dtype=torch.long, device=ids.device),
                  torch.empty(B, dtype=torch.long, device=ids.device),
                  torch.empty((B, L), dtype=torch.long, device=ids.device))
    for BL in bl.unique().tolist():
        idx = (bl == BL).nonzero().squeeze(1)
        # the inputs may live on the CPU or the device
        pick = lambda t: t[idx.to(t.device)]
        r = generate(dllm, pol, pick(ids), pick(am), L, BL,
                     pick(temperature) if hot else temperature, record=READS, keys=pick(keys),
                     cache=cache if BL < L else "none",
                     alpha=None if alpha is None else pick(alpha), memo=memo,
                     memo_keys=pick(memo_keys), noise_keys=pick(noise_keys))
        rows = idx.to(ids.device)
        out.tokens[rows], out.nfe[rows], out.order[rows] = r.tokens, r.nfe, r.order
        out.steps += [dict(st, rows=rows[st["rows"]]) for st in r.steps]
        out.forwards += r.forwards
    return out


def speed_scale(nfe, L, alpha, on):
    """--alpha-norm: (P, 1) divisors of the groups' advantages, the mean speed factor ((L - NFE + 1)
    / L) ** alpha of each group's rollouts nfe (P, G), so every alpha's advantages are on the
    correctness scale; 1 when off."""
    if not on:
        return torch.ones(nfe.shape[0], 1, device=nfe.device)
    return (((L - nfe.float() + 1) / L) ** alpha).mean(1, keepdim=True)


def grade_rows(dllm, task, problems, tokens, G, grader="paper"):
    """(B,) bool: rollout row i answers problems[i // G], by the grader asked for (tasks.GRADERS).
    """
    texts = [dllm.decode(row.tolist()) for row in tokens.cpu()]
    return torch.tensor(
        grade_many(task, [problems[i // G] for i in range(len(texts))], texts, grader),
        device=tokens.device)


def update(net, policy, opt, exp, cfg):
    """K optimizer steps of the clipped GRPO loss on one step's experience; none when every
    advantage is zero (on every rank). Returns (loss, clip fraction, entropy, gradient norm) of the
    last one."""
    nonzero = torch.tensor(float(exp.adv.abs().max() > 0), device=exp.adv.device)
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        dist.all_reduce(nonzero)
    out = (0.0, 0.0, 0.0, 0.0)
    policy.train()
    if nonzero.item() == 0:
        return out
    for k in range(cfg.updates_per_batch):
        opt.zero_grad(set_to_none=True)
        loss, clip_frac, ent = grpo_loss(net, exp.batch, exp.adv, len(exp.adv), cfg.clip_eps,
                                         chunk=cfg.batch_size * cfg.gen_length, actions=cfg.actions,
                                         mixture_sizes=(cfg.group_size, 1) if cfg.expert else None,
                                         metrics=k == cfg.updates_per_batch - 1, knobs=ROLLOUT)
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip).item()
        opt.step()
        out = (loss, clip_frac, ent, norm)
    return out


def imitate(policy, dllm, cfg, train_set, stop, say=print):
    """Warm start (--imitate SPEC): the heuristic decodes the last --imitate-problems training
    prompts (GRPO reaches them last), at each block length in turn; the policy fits its choices
    (binary cross-entropy per candidate, targets 0.02 / 0.98 so that rollouts still explore;
    gradients clipped at --grad-clip as in the updates) -> the final loss, said. A stop request
    exits (nothing is saved)."""
    expert, t0 = parse_policy(cfg.imitate), time.time()
    problems = train_set[-cfg.imitate_problems:]
    steps, bls, T = [], block_lengths(cfg), temperatures(cfg)[0]
    for i in range(0, len(problems), cfg.batch_size):
        ids, am = prompts_of(dllm, problems[i:i + cfg.batch_size])
        keys = row_keys(cfg.seed ^ 0xB0C, torch.arange(i, i + len(ids)))
        # the batches take the block lengths in turn
        BL = bls[i // cfg.batch_size % len(bls)]
        steps += generate(dllm, expert, ids, am, cfg.gen_length, BL, T, record=READS,
                          keys=keys, cache=cfg.cache if BL < cfg.gen_length else "none").steps
        stop.exit_if_asked("during the --imitate warm start")
    # S recorded steps, each (L,)
    data = collate(steps)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.imitate_lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    policy.train()
    for k in range(cfg.imitate_steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(k, cfg.imitate_lr, 0, cfg.imitate_steps)
        idx = torch.randint(0, len(data["t"]), (512,), generator=gen).to(data["t"].device)
        # (512, L)
        logits = policy(**{k: None if data[k] is None else data[k][idx] for k in data["reads"]})
        cand, target = data["cand"][idx], data["action"][idx].float() * 0.96 + 0.02
        loss = F.binary_cross_entropy_with_logits(logits[cand].float(), target[cand])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        stop.exit_if_asked("during the --imitate warm start")
    say(f"imitated {cfg.imitate} on {cfg.imitate_problems} problems: {cfg.imitate_steps} steps, "
        f"loss {loss.item():.4f}, {time.time() - t0:.0f} s")
    return loss.item()


# --------------------------------------------------------------------------------------------------
# the loop

def train(cfg: TrainConfig, command=None):
    """Resolve and check the settings, then run the GRPO loop holding the lock on --out -> (policy,
    metrics). command (stored in the checkpoint): as typed; by default the flags set in cfg."""
    command = command or command_of(cfg)
    cfg = resolve(cfg)
    return locked(cfg, lambda: run(cfg, command))


def run(cfg, command):
    """Set up (ranks, seeds, data, the dLLM, the policy), then the paper's loop: rollouts ->
    rewards -> group advantages -> K clipped updates -> log -> checkpoint -> (policy, metrics)."""
    rank, world, ddp = setup_distributed(cfg)
    # seeds: the policy's init and everything random below (rollouts: env.row_keys)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # the data before the model: a bad --data fails in a second
    train_set, eval_set = training_sets(cfg.task, cfg.seed, cfg.data, cfg.prompts_per_step,
                                        cfg.eval_n if cfg.eval_every else 0)
    if cfg.steps == 0:  # one epoch
        cfg.steps = len(train_set) // cfg.prompts_per_step
    dllm = load_dllm(cfg.model, device=cfg.device, revision=cfg.revision, compile=cfg.compile)
    # the batch of rollouts must fit in memory
    check_round(dllm, cfg, world, prompts_of(dllm, train_set[:64])[0].shape[1],
                temperatures(cfg)[-1])
    policy, opt = build_policy(cfg, dllm.device)
    start, metrics = resume(cfg, policy, opt, rank, SETUP)
    with RunLog(cfg, rank, start) as log, StopRequested() as stop:
        log.header(dllm, policy, world, len(train_set))
        if cfg.imitate and start == 0:
            imitate(policy, dllm, cfg, train_set, stop, log.say)
        metrics = loop(cfg, command, rank, world, ddp, dllm, train_set, eval_set, policy, opt,
                       start, metrics, log, stop)
    if ddp:
        dist.destroy_process_group()
    if stop.asked:
        raise SystemExit(130)
    return policy, metrics


def loop(cfg, command, rank, world, ddp, dllm, train_set, eval_set, policy, opt, start, metrics,
         log, stop):
    """The GRPO steps from `start` (metrics: the last ones logged), logged and checkpointed -> the
    last metrics."""
    expert = parse_policy(cfg.expert) if cfg.expert else None
    net = torch.compile(policy) if cfg.compile else policy
    net = torch.nn.parallel.DistributedDataParallel(net) if ddp else net
    per_rank, step = cfg.prompts_per_step // world, start
    for step in log.steps():
        t0 = time.time()
        # 1. experience: this rank's share of the step's prompts, G rollouts each (+ the expert's),
        # rewards, advantages
        first = step * cfg.prompts_per_step + rank * per_rank
        problems = [train_set[(first + j) % len(train_set)] for j in range(per_rank)]
        alpha = cfg.alpha
        if cfg.alpha_range is not None:
            alpha = draw_alphas(torch.arange(first, first + per_rank),
                                *bounds(cfg.alpha_range, "--alpha-range"), cfg.seed)
            alpha = alpha.repeat_interleave(cfg.group_size).to(dllm.device)
        BL, T = draw_settings(cfg, torch.arange(first, first + per_rank))
        exp = rollouts(dllm, policy, expert, cfg, problems, first, alpha, (BL, T))
        t_roll = time.time() - t0
        # 2. the clipped policy-gradient update, K optimizer steps on this experience
        lr = cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, clip_frac, ent, gnorm = update(net, policy, opt, exp, cfg)
        check_finite(policy, step, loss, gnorm)
        # 3. log (rollout statistics reduced over ranks) and checkpoint
        metrics = dict(step=step + 1, **reduced(exp, ddp, world), entropy=ent, clip_frac=clip_frac,
                       grad_norm=gnorm, loss=loss, lr=lr, rollout_s=t_roll,
                       update_s=time.time() - t0 - t_roll, **exp.expert)
        if cfg.temperature_range:
            metrics["temperature"] = T.mean().item()
        if cfg.eval_every and eval_set and (step + 1) % cfg.eval_every == 0 and rank == 0:
            metrics.update(held_out(dllm, policy, eval_set, cfg))
        log.write(metrics)
        if rank == 0 and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps or stop.asked):
            save_checkpoint(cfg.out, policy, opt, cfg, step + 1, metrics, command)
        if stop.asked:
            break
    log.close(stop.asked, step)
    return metrics


def held_out(dllm, policy, eval_set, cfg):
    """Accuracy and mean NFE of the policy (fallback on, at --eval-tau) on held-out problems; a
    conditioned one at both ends of its alpha range (suffixes _lo, _hi: does its speed follow
    alpha?); one trained over block lengths at each of them (_bl<BL>), over temperatures also at HI
    (_hot)."""
    ends = {"": None}
    if cfg.alpha_range:
        ends = dict(zip(("_lo", "_hi"), bounds(cfg.alpha_range, "--alpha-range")))
    T = temperatures(cfg) if cfg.temperature_range else (0.0,)
    at = [(f"_bl{BL}" if cfg.block_lengths else "", BL, T[0]) for BL in block_lengths(cfg)]
    at += [("_hot", cfg.block_length, T[1])] if len(T) > 1 else []
    out = {}
    for suffix, a in ends.items():
        for where, BL, temp in at:
            row, _ = evaluate(dllm, Learned(policy.eval(), Knobs(tau=cfg.eval_tau, alpha=a)),
                              eval_set, cfg.task, cfg.gen_length, BL, cfg.batch_size, temp,
                              progress=False, cache=cfg.cache if BL < cfg.gen_length else "none")
            out[f"eval_accuracy{suffix}{where}"] = row["accuracy"]
            out[f"eval_nfe{suffix}{where}"] = row["mean_nfe"]
    return out


def build_policy(cfg, dev):
    """The policy (fp32, or --init's weights) and its AdamW."""
    lo, hi = bounds(cfg.alpha_range, "--alpha-range") if cfg.alpha_range else (None, None)
    policy = LearnedPolicy(
        PolicyConfig(width=cfg.width, init_bias=cfg.init_bias, alpha_lo=lo, alpha_hi=hi,
                     actions=cfg.actions, features=cfg.features,
                     setting=reads_setting(cfg))).to(dev)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=cfg.weight_decay)
    if cfg.init and not cfg.resume:
        # a per-alpha policy into a conditioned one: its conditioning starts at zero, so the run
        # starts as that policy at every alpha
        load_weights(policy, init_weights(cfg))
    return policy, opt


def main(argv=None):
    return entry(lambda: train(*parse_config(TrainConfig, argv, "GRPO training of the unmasking "
                                             "policy", "python train.py")),
                 "interrupted: every checkpoint written before is intact (saves are atomic); "
                 "--resume continues from the last one")


if __name__ == "__main__":
    main()
