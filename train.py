"""
Train the unmasking policy with GRPO against the frozen dLLM (paper section 5).

Per step: take P prompts, roll out a group of G episodes each through env.generate (the dLLM at temperature
0, so the spread comes from the policy's Bernoulli draws), grade them, reward
R = correct * ((L - NFE + 1) / L) ** alpha, advantage A = R - mean over the group. Then take K optimizer
steps on the stored rollouts with the clipped objective, per rollout the mean over its steps of
-min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(logp - logp_old); the batch loss is the mean over rollouts.
How this departs from textbook GRPO (as the paper ran it): no KL term, no reference model; advantages are
not divided by the group std (--std-adv turns that on); a batch whose advantages are all zero is skipped.
--alpha-range LO,HI trains one policy for the whole front instead: each prompt's group draws its own alpha
(draw_alphas), its rewards use it, and the policy sees it through its conditioning (policy.py); --init CKPT starts
it from a per-alpha policy, --alpha-norm puts every alpha's advantages on one scale (speed_scale).
--actions dpls draws actions by dynamic Plackett-Luce instead of per-position Bernoullis (actions.py, paper App. E).
--expert SPEC is expert steering (paper App. F): each group gets E = 1 extra rollout by a heuristic on the same
prompt; advantages are over all G + E rollouts, and the expert's steps enter the clipped loss with the mixture
likelihood log pi_ES(a) = logaddexp(log(G / (G + E)) + log pi(a), log(1 / (G + E))), over every masked position.

    python train.py --expert threshold:0.9 --alpha 1 --steps 60 --tau 0.5 --out out/full.pt   # weights/policy_full.pt
    python train.py --block-length 8 --init-bias 0 --alpha 1 --steps 60 --tau 0.5 --out out/semi.pt   # policy_semi.pt
    python train.py --imitate band:hi=0.9:lo=0.08 --out out/bc.pt   # warm start: clone a heuristic, then GRPO
    python train.py --alpha-range 0,10 --out out/cond.pt     # one policy for every alpha in [0, 10]
    python train.py --actions dpls --out out/dpls.pt         # Plackett-Luce actions
    python train.py --model llada --block-length 32 --out out/llada_bl32.pt   # the paper's run (one GPU, ~24 GB+)
    torchrun --nproc_per_node=8 train.py --model llada --out out/llada_dp.pt   # data parallel: each rank rolls out its prompts
"""
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from support.cli import check_args, check_out_file, exclusive, parse_dataclass
from env import check_decoding, fmix32, generate, row_keys
from model import TINY, check_model_name, load_dllm, resolve_device
from actions import check_actions
from grpo import advantages, collate, grpo_loss, join, old_expert_log_probs, rewards, step_log_prob  # noqa: F401 (tests use them via train)
from policy import FEATURES, LearnedPolicy, PolicyConfig, load_weights, parse_policy, read_checkpoint
from sample import evaluate, prompts_of
from tasks import REAL_TASKS, TINY_TASKS, check_task, get_problems, grade_many

# Defaults that depend on the world: the paper's for real models, tuned ones for the tiny world.
REAL = dict(task="gsm8k", gen_length=256, block_length=32, prompts_per_step=16, steps=0, lr=3e-5, warmup=100,
            batch_size=16, eval_every=100, eval_n=200)
# Tiny world: lr 1e-3 with a short cosine. In full diffusion plain GRPO gets no signal at the start (nearly every
# rollout is wrong, so nearly every group has zero advantage): the shipped full-diffusion policy is trained with
# expert steering (--expert threshold:0.9), and long schedules can collapse through the policy's entropy
# (docs/learning.md has the measurements).
TINY_DEFAULTS = dict(task="chain", gen_length=32, block_length=32, prompts_per_step=16, steps=30, lr=1e-3,
                     warmup=10, batch_size=128, eval_every=100, eval_n=256)
SETUP = dict(model=None, task=None, gen_length=None, block_length=None, alpha=None, reward=None, group_size=None,
             width=128, cache="none", alpha_range=None, actions="bernoulli", expert=None, expert_block_length=None,
             features="raw", imitate=None, init=None, alpha_norm=False)  # must match on resume (the value a checkpoint from before the field implies)


@dataclass
class TrainConfig:
    model: str = "tiny"               # dLLM (frozen): tiny, tiny-b, llada, llada-1.5, dream, or a local dir
    revision: str = None              # hub revision of the dLLM, to pin it
    task: str = None                  # training task (tiny: chain; real: gsm8k train split)
    data: str = None                  # local jsonl instead of downloading the task
    gen_length: int = None            # L (tiny 32, real 256)
    block_length: int = None          # BL; BL == L is full diffusion (tiny 32, real 32)
    alpha: float = 3.0                # reward exponent; 0 = pure correctness
    alpha_range: str = None           # "LO,HI": one alpha-conditioned policy for the whole front (--alpha is then unused)
    reward: str = "mult"              # mult: correct*((L-NFE+1)/L)**alpha; additive: correct - alpha*NFE/L (ablation)
    actions: str = "bernoulli"        # action distribution: bernoulli (paper) or dpls (dynamic Plackett-Luce, App. E)
    expert: str = None                # expert steering (App. F): a heuristic spec, e.g. threshold:0.9, one extra rollout per group
    expert_block_length: int = None   # the expert's BL (default --block-length; the paper: 32 at L 256)
    group_size: int = 8               # G rollouts per prompt
    prompts_per_step: int = None      # prompts per optimizer batch, over all ranks (tiny 16, real 16)
    steps: int = None                 # GRPO steps (tiny 30; real 0 = one epoch over the data)
    updates_per_batch: int = 2        # optimizer steps on each rollout batch
    clip_eps: float = 0.5             # PPO clip range
    std_adv: bool = False             # divide advantages by the group std
    lr: float = None                  # AdamW peak lr (tiny 1e-3, real 3e-5)
    weight_decay: float = 0.1
    grad_clip: float = 0.2
    warmup: int = None                # linear warm-up steps, then cosine to 0 (tiny 10, real 100)
    temperature: float = 0.0          # dLLM sampling temperature during rollouts
    cache: str = "none"               # KV cache for rollouts: none, prefix, dual (semi-AR only; approximate, see env.py)
    width: int = 128                  # policy width (331K parameters at 128)
    init_bias: float = -2.0           # output bias at init: unmask p = sigmoid(b), 0.12 at -2 (paper); small blocks need more
    features: str = "log"             # policy input per position: raw (conf, the paper) or log (conf, log conf, log(1-conf))
    imitate: str = None               # warm start: behaviour-clone this heuristic before GRPO (e.g. band:hi=0.9:lo=0.08)
    imitate_steps: int = 150          # minibatches (512 recorded steps each) of the warm start
    imitate_problems: int = 2048      # training prompts the heuristic decodes for the warm start
    imitate_lr: float = 2e-3          # the warm start's peak lr (cosine to zero)
    init: str = None                  # start from this checkpoint's weights (e.g. a per-alpha policy under --alpha-range)
    alpha_norm: bool = False          # divide each group's advantages by its mean ((L-NFE+1)/L)**alpha: one scale for every alpha
    batch_size: int = None            # rows per loss chunk and per eval batch (memory knob)
    eval_every: int = None            # evaluate on held-out problems every N steps (tiny tasks; 0: never)
    eval_n: int = None                # held-out problems per evaluation
    tau: float = 1.0                  # the policy temperature sample.py / eval.py read this checkpoint at by default
                                      # (rollouts always sample at 1; paper: 0.5 for BL 32, 1 for BL = L)
    seed: int = 0
    out: str = "out/ckpt.pt"          # checkpoint path (a .jsonl log is written beside it)
    save_every: int = 50              # checkpoint every N steps (and at the end)
    resume: bool = False              # continue from --out
    wandb: bool = False               # also log to Weights & Biases (imported only then)
    device: str = None                # cuda, mps, cpu (default: autodetect; rank's GPU under torchrun)
    compile: bool = False             # torch.compile the policy


def resolve(cfg):
    """Fill the None defaults from the tiny or the real table, then check every value - all before a model loads."""
    table = TINY_DEFAULTS if (cfg.model in TINY or cfg.model.endswith(".pt")) else REAL
    for k, v in table.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    if cfg.reward not in ("mult", "additive"):
        raise ValueError(f"--reward must be mult or additive, not {cfg.reward!r}")
    check_args(gen_length=(cfg.gen_length, "> 0"), block_length=(cfg.block_length, "> 0"), alpha=(cfg.alpha, ">= 0"),
               group_size=(cfg.group_size, ">= 2"), prompts_per_step=(cfg.prompts_per_step, ">= 1"),
               steps=(cfg.steps, ">= 0"), updates_per_batch=(cfg.updates_per_batch, ">= 1"),
               clip_eps=(cfg.clip_eps, "> 0"), lr=(cfg.lr, "> 0"), weight_decay=(cfg.weight_decay, ">= 0"),
               grad_clip=(cfg.grad_clip, "> 0"), warmup=(cfg.warmup, ">= 0"), temperature=(cfg.temperature, ">= 0"),
               width=(cfg.width, "> 0"),
               batch_size=(cfg.batch_size, ">= 1"), eval_every=(cfg.eval_every, ">= 0"), eval_n=(cfg.eval_n, ">= 1"),
               save_every=(cfg.save_every, ">= 1"), tau=(cfg.tau, "> 0"))
    if not math.isfinite(cfg.init_bias):
        raise ValueError(f"--init-bias must be finite, not {cfg.init_bias}")
    if cfg.alpha_range is not None:
        alpha_bounds(cfg.alpha_range)
    if cfg.width % PolicyConfig.heads:
        raise ValueError(f"--width {cfg.width} must be a multiple of the policy's {PolicyConfig.heads} attention heads")
    check_decoding(cfg.gen_length, cfg.block_length, cfg.cache)
    check_actions(cfg.actions)
    if cfg.features not in FEATURES:
        raise ValueError(f"--features must be one of {sorted(FEATURES)}, not {cfg.features!r}")
    if cfg.imitate is not None:
        check_imitate(cfg)
    if cfg.init is not None:
        init_weights(cfg)
    if cfg.alpha_norm and cfg.reward != "mult":
        raise ValueError("--alpha-norm rescales the multiplicative reward's advantages: drop it or use --reward mult")
    if cfg.expert is not None:
        expert_of(cfg)
    elif cfg.expert_block_length is not None:
        raise ValueError("--expert-block-length is the expert's block length: pass --expert too")
    check_task(cfg.task, cfg.data)
    if os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out} is a directory: pass a checkpoint file path")
    if cfg.resume:  # before loading a 16 GB model, not after
        if not os.path.isfile(cfg.out):
            raise FileNotFoundError(f"--resume: no checkpoint at {cfg.out}")
        check_resume(read_checkpoint(cfg.out), cfg)
    elif os.path.exists(cfg.out):  # never overwrite a finished or interrupted run
        raise FileExistsError(f"{cfg.out} exists: pass --resume to continue it, or another --out")
    check_out_file(cfg.out, "--out")
    resolve_device(cfg.device)
    check_model_name(cfg.model)
    return cfg


def expert_of(cfg):
    """The expert heuristic of --expert, checked against L and its block length (filled in from --block-length).
    Its rollouts use the KV cache only where they are semi-autoregressive."""
    if cfg.actions == "dpls":
        raise ValueError("--expert needs --actions bernoulli: an expert's step is a set with no order, and a DPLS "
                         "likelihood is of a set and its order")
    if cfg.expert_block_length is None:
        cfg.expert_block_length = cfg.block_length
    check_args(expert_block_length=(cfg.expert_block_length, "> 0"))
    check_decoding(cfg.gen_length, cfg.expert_block_length)
    if cfg.expert.split(":")[0].endswith(".pt"):
        raise ValueError(f"--expert {cfg.expert}: the expert is a heuristic spec (e.g. threshold:0.9), not a checkpoint")
    expert = parse_policy(cfg.expert)
    expert.check(cfg.gen_length, cfg.expert_block_length)
    return expert


def init_weights(cfg):
    """--init CKPT: its weights, checked against this run's policy (width, features, actions) -> a state dict."""
    if cfg.imitate is not None:
        raise ValueError("--init and --imitate are two warm starts: pick one")
    ck = read_checkpoint(cfg.init)
    mine = dict(width=cfg.width, features=cfg.features, actions=cfg.actions)
    theirs = {k: {"features": "raw", "actions": "bernoulli", **ck["policy_config"]}[k] for k in mine}
    if theirs != mine:
        raise ValueError(f"--init {cfg.init}: its policy ({theirs}) is not this run's ({mine})")
    return ck["policy"]


def check_imitate(cfg):
    """--imitate: a heuristic spec that decodes this L / BL, with a Bernoulli, unconditioned policy to clone into."""
    check_args(imitate_steps=(cfg.imitate_steps, ">= 1"), imitate_problems=(cfg.imitate_problems, ">= 1"),
               imitate_lr=(cfg.imitate_lr, "> 0"))
    if cfg.imitate.split(":")[0].endswith(".pt"):
        raise ValueError(f"--imitate {cfg.imitate}: the warm start clones a heuristic spec (e.g. band:hi=0.9:lo=0.08)")
    if cfg.actions != "bernoulli" or cfg.alpha_range is not None:
        raise ValueError("--imitate clones into a Bernoulli policy for one alpha: drop --actions dpls / --alpha-range")
    parse_policy(cfg.imitate).check(cfg.gen_length, cfg.block_length)


ALPHA0_SHARE = 0.2   # --alpha-range: share of groups at alpha = LO when LO = 0 (pure correctness)


def alpha_bounds(text):
    """'0,10' -> (0.0, 10.0), checked: 0 <= LO < HI, both finite."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--alpha-range {text!r}: write it as LO,HI, e.g. 0,10") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"--alpha-range {text!r}: need 0 <= LO < HI")
    return lo, hi


def draw_alphas(prompt_index, lo, hi, seed):
    """One alpha per prompt (P,) from its index (counter-based, so resume and ranks agree). Log-uniform on
    [max(LO, 0.1), HI] - the reward ((L - NFE + 1) / L) ** alpha changes by the same factor per doubling of alpha, so
    each octave gets the same share - plus ALPHA0_SHARE of the groups at alpha = 0 when LO = 0, which a log scale
    cannot reach and which is the front's accurate end."""
    h = fmix32(fmix32(prompt_index ^ 0xA1FA) ^ seed)
    u1, u2 = (h >> 8).float() / 2 ** 24, (fmix32(h + 1) >> 8).float() / 2 ** 24
    base = lo if lo > 0 else min(0.1, hi)
    a = base * (hi / base) ** u2
    return torch.where((u1 < ALPHA0_SHARE) & (lo == 0), torch.zeros_like(a), a)


def lr_at(step, cfg):
    """Linear warm-up, then cosine to zero over cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def save_checkpoint(path, policy, opt, cfg, step, metrics):
    """Self-describing, atomic: a crash mid-write leaves the previous checkpoint intact."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ck = dict(policy=policy.state_dict(), optimizer=opt.state_dict(), policy_config=asdict(policy.c),
              args=asdict(cfg), step=step, metrics=metrics, torch_rng=torch.get_rng_state(), command=command_of(cfg))
    torch.save(ck, path + ".tmp")
    os.replace(path + ".tmp", path)


def command_of(cfg):
    """The train.py command that trains this checkpoint (the flags that differ from their defaults; --resume,
    --device and the logging knobs do not change the weights and are left out)."""
    skip = {"resume", "device", "wandb", "eval_every", "eval_n", "save_every"}
    flags = [f"--{f.name.replace('_', '-')}" + ("" if f.type in (bool, "bool") else f" {getattr(cfg, f.name)}")
             for f in fields(TrainConfig) if f.name not in skip and getattr(cfg, f.name) != f.default
             and not (f.name in TINY_DEFAULTS and getattr(cfg, f.name) == TINY_DEFAULTS[f.name] and f.default is None)]
    return "python train.py " + " ".join(flags)


def check_resume(ck, cfg):
    """A checkpoint can be resumed only into the same setup (SETUP): anything else is one clear error."""
    diff = {k: (ck["args"].get(k, d), getattr(cfg, k)) for k, d in SETUP.items() if ck["args"].get(k, d) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"checkpoint {cfg.out} is from another setup ({', '.join(f'{k}: {a!r} there, {b!r} here' for k, (a, b) in diff.items())}); "
                         f"pass the same flags or a new --out")


def truncate_log(path, step):
    """On resume: keep the per-step log's lines up to the checkpoint's step, so a killed run's extra lines (steps
    after its last checkpoint) are not repeated (the log then reads 1, 2, 3, 4, ..., never 1, 2, 3, 1, 2, ...)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                pass   # a line cut by the kill
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def setup_distributed(cfg):
    """(rank, world, ddp): torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; plain `python train.py` is rank 0 of 1."""
    ddp = "RANK" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    if ddp and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if ddp and torch.cuda.is_available():
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if cfg.prompts_per_step % world:
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} must be divisible by the {world} ranks")
    return rank, world, ddp


def build_policy(cfg, dev, logpath, rank):
    """The policy (fp32), its AdamW, and where to start: step 0, or the checkpoint's step with --resume."""
    lo, hi = alpha_bounds(cfg.alpha_range) if cfg.alpha_range else (None, None)
    policy = LearnedPolicy(PolicyConfig(width=cfg.width, init_bias=cfg.init_bias, alpha_lo=lo, alpha_hi=hi,
                                        actions=cfg.actions, features=cfg.features)).to(dev)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    if not cfg.resume:
        if cfg.init:   # a per-alpha policy into a conditioned one: its conditioning starts at zero, so at alpha's every value
            load_weights(policy, init_weights(cfg))    # the run starts as that policy
        return policy, opt, 0, {}
    ck = read_checkpoint(cfg.out)
    check_resume(ck, cfg)
    try:
        policy.load_state_dict(ck["policy"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"--resume: {cfg.out} does not fit this policy (--width {cfg.width}?): "
                         f"{str(e).splitlines()[0][:200]}") from None
    torch.set_rng_state(ck["torch_rng"])
    if rank == 0:
        truncate_log(logpath, ck["step"])
    return policy, opt, ck["step"], ck["metrics"]


def imitate(policy, dllm, cfg, train_set):
    """Warm start (--imitate SPEC): behaviour cloning of a heuristic before GRPO. The heuristic decodes
    --imitate-problems training prompts (taken from the end of the shuffled set, which GRPO reaches last); the policy
    then fits its decisions, a binary cross-entropy per candidate position with targets smoothed to 0.02 / 0.98 (so
    the rollouts keep exploring), --imitate-steps minibatches of 512 recorded steps. GRPO then starts from a policy
    that already decodes like the heuristic and has a signal in every group. Returns the final loss."""
    expert = parse_policy(cfg.imitate)
    problems = train_set[-cfg.imitate_problems:]
    steps = []
    for i in range(0, len(problems), cfg.batch_size):
        ids, am = prompts_of(dllm, problems[i:i + cfg.batch_size])
        keys = row_keys(cfg.seed ^ 0xB0C, torch.arange(i, i + len(ids)))
        steps += generate(dllm, expert, ids, am, cfg.gen_length, cfg.block_length, cfg.temperature, record=True,
                          keys=keys).steps
    data = collate(steps)                                                # S recorded steps, each (L,)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.imitate_lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    policy.train()
    for k in range(cfg.imitate_steps):
        for g in opt.param_groups:   # cosine to zero
            g["lr"] = cfg.imitate_lr * 0.5 * (1 + math.cos(math.pi * k / cfg.imitate_steps))
        idx = torch.randint(0, len(data["t"]), (512,), generator=gen).to(data["t"].device)
        logits = policy(data["conf"][idx], data["masked"][idx], data["t"][idx])                    # (512, L)
        cand, target = data["cand"][idx], data["action"][idx].float() * 0.96 + 0.02
        loss = F.binary_cross_entropy_with_logits(logits[cand].float(), target[cand])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def rollouts(dllm, policy, expert, cfg, problems, first, alpha):
    """One step's experience: G rollouts per prompt by the policy (sampling, no fallback) [+ E by the expert] ->
    (recorded steps as one batch, advantages (B,), rewards, correct, NFE, zero-advantage share, expert stats)."""
    G, E, L = cfg.group_size, 1 if expert else 0, cfg.gen_length
    conditioned = cfg.alpha_range is not None
    group_alpha = alpha.view(-1, G)[:, :1] if conditioned else alpha    # a number, or (P, 1)
    ids, am = prompts_of(dllm, problems)
    ids, am = ids.repeat_interleave(G, 0), am.repeat_interleave(G, 0)
    keys = row_keys(cfg.seed, torch.tensor([(first + j) * G + g for j in range(len(problems)) for g in range(G)]))
    policy.eval().fallback, policy.tau = False, 1.0
    r = generate(dllm, policy, ids, am, L, cfg.block_length, cfg.temperature, record=True, keys=keys, cache=cfg.cache,
                 alpha=alpha if conditioned else None)
    correct = grade_rows(dllm, cfg.task, problems, r.tokens, G)
    R = rewards(correct, r.nfe, L, alpha, cfg.reward)
    batch, extra = collate(r.steps), {}
    if not expert:
        A = advantages(R, G, cfg.std_adv).view(-1, G) / speed_scale(r.nfe.view(-1, G), L, group_alpha, cfg.alpha_norm)
        A = A.reshape(-1)
        return batch, A, R, correct, r.nfe, (A.view(-1, G).abs().max(1).values == 0).float().mean(), extra
    # expert steering: E more rollouts per prompt by the heuristic, recorded the same way
    eids, eam = ids[::G].repeat_interleave(E, 0), am[::G].repeat_interleave(E, 0)
    ekeys = row_keys(cfg.seed ^ 0xE5E5, torch.tensor([(first + j) * E + e for j in range(len(problems)) for e in range(E)]))
    ealpha = alpha[::G].repeat_interleave(E) if conditioned else alpha
    re = generate(dllm, expert, eids, eam, L, cfg.expert_block_length, cfg.temperature, record=True, keys=ekeys,
                  cache=cfg.cache if cfg.expert_block_length < L else "none", alpha=ealpha if conditioned else None)
    ecorrect = grade_rows(dllm, cfg.task, problems, re.tokens, E)
    eR = rewards(ecorrect, re.nfe, L, ealpha, cfg.reward)
    Ag = advantages(torch.cat([R.view(-1, G), eR.view(-1, E)], 1).reshape(-1), G + E, cfg.std_adv).view(-1, G + E)
    Ag = Ag / speed_scale(torch.cat([r.nfe.view(-1, G), re.nfe.view(-1, E)], 1), L, group_alpha, cfg.alpha_norm)
    A = torch.cat([Ag[:, :G].reshape(-1), Ag[:, G:].reshape(-1)])       # policy rollouts, then the expert's
    eb = collate(re.steps, expert=True)
    old_expert_log_probs(policy, eb, (G, E), cfg.batch_size * L)
    extra = dict(expert_accuracy=100 * ecorrect.float().mean().item(), expert_nfe=re.nfe.float().mean().item())
    return join(batch, eb, len(R)), A, R, correct, r.nfe, (Ag.abs().max(1).values == 0).float().mean(), extra


def speed_scale(nfe, L, alpha, on):
    """--alpha-norm: (P, 1) divisors of a group's advantages, nfe (P, G) of its rollouts, alpha a number or (P, 1):
    the group's mean speed factor ((L - NFE + 1) / L) ** alpha. Rewards are correctness times that factor, so at
    alpha 10 they are ~0.1 of alpha 0's and the low alphas would drive the update of a conditioned policy; divided,
    every group's advantages are on the correctness scale. 1 when off (and at alpha 0)."""
    if not on:
        return torch.ones(nfe.shape[0], 1, device=nfe.device)
    return (((L - nfe.float() + 1) / L) ** alpha).mean(1, keepdim=True)


def grade_rows(dllm, task, problems, tokens, G):
    """(B,) bool: rollout row i answers problems[i // G]."""
    texts = [dllm.decode(row.tolist()) for row in tokens.cpu()]
    return torch.tensor(grade_many(task, [problems[i // G] for i in range(len(texts))], texts), device=tokens.device)


def update(net, policy, opt, batch, A, cfg, GE):
    """K optimizer steps of the clipped GRPO loss on one batch; none when every advantage is zero (on every rank).
    Returns (loss, clip fraction, entropy, gradient norm) of the last one."""
    nonzero = torch.tensor(float(A.abs().max() > 0), device=A.device)
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        dist.all_reduce(nonzero)
    out = (0.0, 0.0, 0.0, 0.0)
    policy.train()
    if nonzero.item() == 0:
        return out
    for k in range(cfg.updates_per_batch):
        opt.zero_grad(set_to_none=True)
        loss, clip_frac, ent = grpo_loss(net, batch, A, len(A), cfg.clip_eps, chunk=cfg.batch_size * cfg.gen_length,
                                         actions=cfg.actions, GE=GE, metrics=k == cfg.updates_per_batch - 1)
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip).item()
        opt.step()
        out = (loss, clip_frac, ent, norm)
    return out


class StopRequested:
    """SIGINT / SIGTERM during training: finish the current step, save a checkpoint of it, exit with one line.
    A second Ctrl-C stops at once (the last checkpoint written stays intact: saves are atomic)."""

    def __init__(self):
        self.asked = False
        self.old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.old:
                signal.signal(s, self.handle)
        return self

    def handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def __exit__(self, *exc):
        if threading.current_thread() is threading.main_thread():
            for s, h in self.old.items():
                signal.signal(s, h)


def train(cfg: TrainConfig):
    cfg = resolve(cfg)
    if "RANK" in os.environ and os.environ["RANK"] != "0":   # under torchrun rank 0 alone writes --out
        return run(cfg)
    with exclusive(cfg.out, "--out"):
        if not cfg.resume and os.path.exists(cfg.out):        # written by a run that ended after our first check
            raise FileExistsError(f"{cfg.out} exists: pass --resume to continue it, or another --out")
        return run(cfg)


def run(cfg):
    """The GRPO loop of train() (which holds the lock on --out)."""
    rank, world, ddp = setup_distributed(cfg)
    log = print if rank == 0 else (lambda *a, **k: None)

    # --- seeds: policy init and everything random below derive from cfg.seed (rollout noise: env.row_keys)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    train_set = get_problems(cfg.task, None if cfg.task in REAL_TASKS else 100_000, cfg.seed, "train", cfg.data)
    random.Random(cfg.seed).shuffle(train_set)     # the data before the model: a bad --data fails in a second
    if cfg.steps == 0:  # one epoch
        cfg.steps = len(train_set) // cfg.prompts_per_step
    eval_set = get_problems(cfg.task, cfg.eval_n, cfg.seed, "test", None) if cfg.eval_every and cfg.task in TINY_TASKS else []
    dllm = load_dllm(cfg.model, device=cfg.device, revision=cfg.revision)
    dev, G = dllm.device, cfg.group_size
    logpath = os.path.splitext(cfg.out)[0] + ".jsonl"
    policy, opt, start, metrics = build_policy(cfg, dev, logpath, rank)
    log(f"resumed from {cfg.out} at step {start}" if start else f"config {asdict(cfg)}")
    log(f"dLLM {dllm.name} on {dev} ({dllm.net.tok_emb.weight.dtype}); policy {sum(p.numel() for p in policy.parameters()):,} "
        f"params fp32{' + bf16 autocast' if dev.type == 'cuda' else ''}; world {world}; {len(train_set)} train problems")
    if cfg.imitate and start == 0:
        t0 = time.time()
        loss = imitate(policy, dllm, cfg, train_set)
        log(f"imitated {cfg.imitate} on {cfg.imitate_problems} problems: {cfg.imitate_steps} steps, loss {loss:.4f}, "
            f"{time.time() - t0:.0f} s")
    expert = expert_of(cfg) if cfg.expert else None
    GE = (G, 1) if expert else None
    net = torch.compile(policy) if cfg.compile else policy
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(net)
    wb = wandb_run(cfg) if rank == 0 else None
    logfile = None   # opened at the first step's line: a run that fails before it leaves no empty log

    per_rank = cfg.prompts_per_step // world
    bar = tqdm(range(start, cfg.steps), desc="GRPO", initial=start, total=cfg.steps, disable=None if rank == 0 else True)
    t_start, step = time.time(), start
    with StopRequested() as stop:
        for step in bar:
            t0 = time.time()
            # --- rollouts, rewards, advantages: this rank's share of the step's prompts
            first = step * cfg.prompts_per_step + rank * per_rank
            problems = [train_set[(first + j) % len(train_set)] for j in range(per_rank)]
            alpha = cfg.alpha if cfg.alpha_range is None else draw_alphas(
                torch.arange(first, first + per_rank), *alpha_bounds(cfg.alpha_range), cfg.seed).repeat_interleave(G).to(dev)
            batch, A, R, correct, nfe, zero_adv, extra = rollouts(dllm, policy, expert, cfg, problems, first, alpha)
            t_roll = time.time() - t0
            # --- the clipped policy-gradient update
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, clip_frac, ent, gnorm = update(net, policy, opt, batch, A, cfg, GE)
            # --- log (rank 0; the rollout statistics reduced over ranks) and checkpoint
            stats = torch.stack([R.mean(), correct.float().mean(), nfe.float().mean(), zero_adv])
            if ddp:
                dist.all_reduce(stats)
                stats /= world
            metrics = dict(step=step + 1, reward=stats[0].item(), accuracy=100 * stats[1].item(), nfe=stats[2].item(),
                           zero_adv=stats[3].item(), entropy=ent, clip_frac=clip_frac, grad_norm=gnorm, loss=loss, lr=lr,
                           rollout_s=t_roll, update_s=time.time() - t0 - t_roll, **extra)
            if cfg.eval_every and eval_set and (step + 1) % cfg.eval_every == 0 and rank == 0:
                metrics.update(held_out(dllm, policy, eval_set, cfg))
            if rank == 0:
                logfile = logfile or open(logpath, "a")
                write_log(bar, log, logfile, wb, metrics, (time.time() - t_start) / (step + 1 - start) * (cfg.steps - step - 1))
                if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps or stop.asked:
                    save_checkpoint(cfg.out, policy, opt, cfg, step + 1, metrics)
            if stop.asked:
                break
    if rank == 0:
        if logfile:
            logfile.close()
        if stop.asked:
            log(f"interrupted: saved {cfg.out} at step {step + 1} of {cfg.steps}; continue with the same flags and --resume")
        else:
            log(f"{cfg.out} already at step {start} of {cfg.steps}: nothing to do" if start >= cfg.steps else f"saved {cfg.out}")
    if ddp:
        dist.destroy_process_group()
    if stop.asked:
        raise SystemExit(130)
    return policy, metrics


def held_out(dllm, policy, eval_set, cfg):
    """Accuracy and mean NFE of the policy (fallback on, at --tau) on held-out problems; a conditioned one at both
    ends of its alpha range (does its speed follow alpha?)."""
    policy.eval().fallback, policy.tau = True, cfg.tau
    ends = dict(zip(("lo", "hi"), alpha_bounds(cfg.alpha_range))) if cfg.alpha_range else {"": None}
    out = {}
    for name, a in ends.items():
        policy.alpha = a
        row, _ = evaluate(dllm, policy, eval_set, cfg.task, cfg.gen_length, cfg.block_length, cfg.batch_size,
                          progress=False, cache=cfg.cache)
        sfx = f"_{name}" if name else ""
        out.update({f"eval_accuracy{sfx}": row["accuracy"], f"eval_nfe{sfx}": row["mean_nfe"]})
    policy.alpha = None
    return out


def wandb_run(cfg):
    """A Weights & Biases run with --wandb (imported only then), else None."""
    if not cfg.wandb:
        return None
    import wandb
    return wandb.init(project="dllm-unmask", config=asdict(cfg))


def write_log(bar, log, logfile, wb, metrics, eta_s):
    """One line per step: on the console (under the progress bar when there is one), in the .jsonl log, in wandb."""
    line = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    (bar.write if bar.disable is False else log)(line + f" | eta {eta_s / 60:.1f} min")
    logfile.write(json.dumps(metrics) + "\n")
    logfile.flush()
    if wb:
        wb.log(metrics)


def main(argv=None):
    try:
        return train(parse_dataclass(TrainConfig, argv, description="GRPO training of the unmasking policy"))
    except (ValueError, RuntimeError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
