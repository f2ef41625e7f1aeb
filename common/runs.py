"""
What a training run needs besides the algorithm (train.py): the checks of its numbers and files, the
per-step log, atomic checkpoints and resume, stop requests (Ctrl-C) and ranks (torchrun).
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
from tqdm import tqdm

from common import memory
from common.checkpoints import check_finite_state, read_checkpoint
from common.cli import (check_args, check_counts, check_distinct, check_out_file, check_seed,
                        exclusive, write_atomic)


def check_numbers(cfg):
    """Every number of train.py's settings, one clear line each."""
    check_args(gen_length=(cfg.gen_length, "> 0"), block_length=(cfg.block_length, "> 0"),
               alpha=(cfg.alpha, ">= 0"), group_size=(cfg.group_size, ">= 2"),
               prompts_per_step=(cfg.prompts_per_step, ">= 1"), steps=(cfg.steps, ">= 0"),
               updates_per_batch=(cfg.updates_per_batch, ">= 1"), clip_eps=(cfg.clip_eps, "> 0"),
               lr=(cfg.lr, "> 0"), weight_decay=(cfg.weight_decay, ">= 0"),
               grad_clip=(cfg.grad_clip, "> 0"), warmup=(cfg.warmup, ">= 0"),
               temperature=(cfg.temperature, ">= 0"), width=(cfg.width, "> 0"),
               batch_size=(cfg.batch_size, ">= 1"), eval_every=(cfg.eval_every, ">= 0"),
               eval_n=(cfg.eval_n, ">= 1"), save_every=(cfg.save_every,
                                                        ">= 1"), eval_tau=(cfg.eval_tau, "> 0"),
               imitate_lr=(cfg.imitate_lr, "> 0"),
               expert_block_length=(cfg.expert_block_length, "> 0"))
    check_counts(gen_length=(cfg.gen_length, 1), group_size=(cfg.group_size, 2),
                 steps=(cfg.steps, 0), prompts_per_step=(cfg.prompts_per_step, 1),
                 updates_per_batch=(cfg.updates_per_batch, 1), batch_size=(cfg.batch_size, 1),
                 eval_n=(cfg.eval_n, 1), width=(cfg.width, 1), imitate_steps=(cfg.imitate_steps, 1),
                 imitate_problems=(cfg.imitate_problems, 1))
    if cfg.lr > 1.0:
        raise ValueError(
            f"--lr {cfg.lr} is beyond any learning rate that trains (the tiny world uses 1e-3, "
            f"the paper 3e-5)")
    check_seed(cfg.seed)
    if not cfg.weight_decay <= 10:   # AdamW shrinks the weights by lr * weight_decay a step
        raise ValueError(f"--weight-decay must be in [0, 10], not {cfg.weight_decay}")
    if not math.isfinite(cfg.init_bias):
        raise ValueError(f"--init-bias must be finite, not {cfg.init_bias}")
    if cfg.alpha_range is not None:
        bounds(cfg.alpha_range, "--alpha-range")
    if cfg.temperature_range is not None:
        bounds(cfg.temperature_range, "--temperature-range")
    if cfg.alpha_norm and cfg.reward != "mult":
        raise ValueError(
            "--alpha-norm rescales the multiplicative reward's advantages: drop it or use --reward "
            "mult")
    if cfg.expert is None and cfg.expert_block_length is not None:
        raise ValueError("--expert-block-length is the expert's block length: pass --expert too")


def check_files(cfg, setup):
    """--out, its log and --init: distinct, writable, and a fresh run never on top of an old one;
    with --resume the checkpoint is read and checked against the settings named in setup (before a
    16 GB model loads, not after)."""
    log = log_path(cfg.out)
    if log == os.path.abspath(cfg.out):
        raise ValueError(
            f"--out {cfg.out}: the per-step log is written beside the checkpoint as <name>.jsonl; "
            f"pass a checkpoint path that does not end in .jsonl (e.g. out/ckpt.pt)")
    if os.path.isdir(cfg.out) or os.path.isdir(log):
        raise ValueError(
            f"--out {cfg.out}: {cfg.out if os.path.isdir(cfg.out) else log} is a directory; pass a "
            f"checkpoint file path")
    check_distinct(("--out", cfg.out), ("--init", cfg.init), ("--data", cfg.data),
                   ("--out's log", log))
    if cfg.init is not None and log_path(cfg.init) == log:
        raise ValueError(
            f"--out {cfg.out} would write its log to {log}, which is --init {cfg.init}'s log: pass "
            "an --out of another name")
    if os.path.islink(log) and not os.path.exists(log):
        raise ValueError(
            f"--out {cfg.out}: its log path {log} is a link to nothing ({os.readlink(log)}): "
            "remove it or pass another --out")
    if cfg.resume:
        if not os.path.isfile(cfg.out):
            raise FileNotFoundError(f"--resume: no checkpoint at {cfg.out}")
        check_checkpoint(cfg, setup)
    elif os.path.exists(cfg.out):  # never overwrite a finished or interrupted run
        raise FileExistsError(f"{cfg.out} exists: pass --resume to continue it, or another --out")
    elif os.path.exists(log):
        raise FileExistsError(
            f"{log} is the log of an earlier run whose checkpoint {cfg.out} is gone: move it "
            f"away (a fresh run starts a fresh log) or pass another --out")
    check_out_file(cfg.out, "--out")


def check_checkpoint(cfg, setup):
    """--resume: the checkpoint in --out is of this setup, with finite weights and moments -> it."""
    ck = read_checkpoint(cfg.out)
    check_resume(ck, cfg, setup)
    check_finite_state(ck["policy"], f"--resume {cfg.out}: its policy weights")
    check_finite_state(
        ck.get("optimizer", {}).get("state", {}), f"--resume {cfg.out}: its optimizer's moments")
    return ck


def check_round(dllm, cfg, world, P, T):
    """One GRPO round of this rank (its prompts x (G + an expert's 1) rollouts of prompt P + L, then
    the update's loss chunks) against the device's free memory, at dLLM temperature T (the
    hottest)."""
    cache = cfg.cache if cfg.block_length < cfg.gen_length else "none"
    memory.check_round(dllm, cfg.prompts_per_step // world, cfg.group_size, int(bool(cfg.expert)),
                       P, cfg.gen_length, cache, T, cfg.batch_size * cfg.gen_length)


def locked(cfg, run):
    """run() holding the locks on --out and its log (under torchrun, rank 0 alone writes them)."""
    if os.environ.get("RANK", "0") != "0":
        return run()
    with exclusive(cfg.out, "--out"), exclusive(log_path(cfg.out), "--out's log"):
        # written by a run that ended after our first check
        if not cfg.resume and os.path.exists(cfg.out):
            raise FileExistsError(
                f"{cfg.out} exists: pass --resume to continue it, or another --out")
        return run()


def resume(cfg, policy, opt, rank, setup):
    """--resume: the policy's weights, its optimizer's moments and the RNG from --out (checked
    before any work by check_files) -> (its step, its last metrics); a fresh run: (0, {})."""
    if not cfg.resume:
        return 0, {}
    ck = read_checkpoint(cfg.out)
    check_resume(ck, cfg, setup)
    try:
        policy.load_state_dict(ck["policy"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"--resume: {cfg.out} does not fit this policy (--width {cfg.width}?): "
                         f"{str(e).splitlines()[0][:200]}") from None
    torch.set_rng_state(ck["torch_rng"])
    if rank == 0:
        truncate_log(log_path(cfg.out), ck["step"])
    return ck["step"], ck["metrics"]


def log_path(out):
    """The per-step log beside a checkpoint: out/p.pt -> out/p.jsonl (absolute)."""
    return os.path.abspath(os.path.splitext(out)[0] + ".jsonl")


def bounds(text, flag):
    """'0,10' -> (0.0, 10.0), checked: 0 <= LO < HI, both finite."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: write it as LO,HI, e.g. 0,10") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"{flag} {text!r}: need 0 <= LO < HI")
    return lo, hi


class StopRequested:
    """SIGINT / SIGTERM during training: finish the current step, save a checkpoint of it, exit with
    one line. A second Ctrl-C stops at once (the last checkpoint written stays intact: saves are
    atomic)."""

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

    def exit_if_asked(self, during):
        """A stop during a phase that saves nothing: one line (rank 0) and exit code 130."""
        if self.asked:
            if os.environ.get("RANK", "0") == "0":
                print(f"interrupted {during}: nothing saved; run the same command again")
            raise SystemExit(130)

    def __exit__(self, *exc):
        if threading.current_thread() is threading.main_thread():
            # after a stop the run exits: a Ctrl-C then changes nothing
            for s, h in self.old.items():
                signal.signal(s, signal.SIG_IGN if self.asked else h)


def check_finite(policy, step, loss, gnorm):
    """Stop (saving nothing) when an update made a weight NaN or infinite: a checkpoint of it would
    decode as nonsense."""
    bad = [k for k, v in policy.state_dict().items() if not torch.isfinite(v).all()]
    if bad:
        raise RuntimeError(
            f"step {step + 1}: the update made the policy's weights non-finite "
            f"({', '.join(bad[:3])}; loss {loss:.4g}, gradient norm {gnorm:.4g}); nothing was "
            "saved for this step: lower --lr and train again")


def reduced(exp, ddp, world):
    """Mean reward, accuracy, NFE and zero-advantage share of the step's rollouts, over every rank.
    """
    stats = torch.stack([exp.reward.mean(), exp.correct.float().mean(), exp.nfe.float().mean(),
                         torch.tensor(exp.zero_adv, device=exp.reward.device)])
    if ddp:
        dist.all_reduce(stats)
        stats /= world
    return dict(reward=stats[0].item(), accuracy=100 * stats[1].item(), nfe=stats[2].item(),
                zero_adv=stats[3].item())


class RunLog:
    """The per-step log: a line per step on the console (under the progress bar), in <out>.jsonl
    and, with --wandb, in Weights & Biases; rank 0 only. The log file is opened at the first line,
    so a run that fails before it leaves none behind."""

    def __init__(self, cfg, rank, start):
        self.cfg, self.rank, self.start, self.file, self.t0 = cfg, rank, start, None, time.time()
        self.bar = tqdm(range(start, cfg.steps), desc="GRPO", initial=start, total=cfg.steps,
                        disable=None if rank == 0 else True)
        self.wb = wandb_run(cfg) if rank == 0 else None

    def __enter__(self):
        return self

    def say(self, line):
        """A line on the console (rank 0), above the progress bar."""
        if self.rank == 0:
            (self.bar.write if self.bar.disable is False else print)(line)

    def header(self, dllm, policy, world, problems):
        """The run's first lines: its settings (or where it resumes), the dLLM, the policy."""
        self.say(f"resumed from {self.cfg.out} at step {self.start}" if self.start else
                 f"config {asdict(self.cfg)}")
        self.say(f"dLLM {dllm.name} on {dllm.device} ({dllm.net.tok_emb.weight.dtype}); policy "
                 f"{sum(p.numel() for p in policy.parameters()):,} params, float32 (no autocast); "
                 f"world {world}; {problems} train problems")

    def __exit__(self, failure, *_):
        """After a failure, the log this run started goes if the run never wrote its checkpoint (so
        it blocks no rerun)."""
        if failure and self.file and self.start == 0 and not os.path.exists(self.cfg.out):
            self.file.close()
            os.remove(log_path(self.cfg.out))

    def steps(self):
        return self.bar

    def write(self, metrics):
        if self.rank:
            return
        step = metrics["step"]
        eta = (time.time() - self.t0) / (step - self.start) * (self.cfg.steps - step)
        line = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in metrics.items())
        self.say(line + f" | eta {eta / 60:.1f} min")
        self.file = self.file or open(log_path(self.cfg.out), "a")
        self.file.write(json.dumps(metrics) + "\n")
        self.file.flush()
        if self.wb:
            self.wb.log(metrics)

    def close(self, stopped, step):
        if self.rank:
            return
        if self.file:
            self.file.close()
        out, total = self.cfg.out, self.cfg.steps
        if stopped:
            print(
                f"interrupted: saved {out} at step {step + 1} of {total}; continue with the same "
                "flags and --resume")
        else:
            print(f"{out} already at step {self.start} of {total}: nothing to do" if self.start >=
                  total else f"saved {out}")


def wandb_run(cfg):
    """A Weights & Biases run with --wandb (imported only then), else None."""
    if not cfg.wandb:
        return None
    import wandb
    return wandb.init(project="dllm-unmask", config=asdict(cfg))


def save_checkpoint(path, policy, opt, cfg, step, metrics, command):
    """Self-describing and atomic: a crash (or a full disk) mid-write leaves the previous checkpoint
    intact."""
    ck = dict(policy=policy.state_dict(), optimizer=opt.state_dict(),
              policy_config=asdict(policy.c), args=asdict(cfg), step=step, metrics=metrics,
              torch_rng=torch.get_rng_state(), command=command)
    write_atomic(path, lambda tmp: torch.save(ck, tmp))


def command_of(cfg):
    """The train.py command of settings made in code (the suite's): the flags that differ from their
    defaults."""
    flags = [
        f"--{f.name.replace('_', '-')}" +
        ("" if f.type in (bool, "bool") else f" {getattr(cfg, f.name)}")
        for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default]
    return "python train.py " + " ".join(flags)


def check_resume(ck, cfg, setup):
    """A checkpoint can be resumed only into the same setup (the settings named in setup): else one
    clear error."""
    diff = {
        k: (ck["args"].get(k), getattr(cfg, k))
        for k in setup if ck["args"].get(k) != getattr(cfg, k)}
    if diff:
        said = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diff.items())
        raise ValueError(
            f"checkpoint {cfg.out} is from another setup ({said}); pass the same flags or a new "
            "--out")


def truncate_log(path, step):
    """On resume: keep the per-step log's lines up to the checkpoint's step, so a killed run's extra
    lines (steps after its last checkpoint) are not repeated (the log then reads 1, 2, 3, 4, ...,
    never 1, 2, 3, 1, 2, ...)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                pass   # a line cut by the kill
    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(keep)
    write_atomic(path, write)


def setup_distributed(cfg):
    """(rank, world, ddp): torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; plain `python train.py` is
    rank 0 of 1. Each rank takes its own GPU (cuda:LOCAL_RANK) with NCCL; with --device cpu, or
    without CUDA, the ranks run on the CPU with gloo. More ranks on a node than it has GPUs is one
    clear error."""
    from common.dist import init_ranks
    rank, world, local, device = init_ranks(cfg.device)
    cfg.device = device
    if cfg.prompts_per_step % world:
        raise ValueError(
            f"--prompts-per-step {cfg.prompts_per_step} must be divisible by the {world} ranks")
    return rank, world, world > 1 or "RANK" in os.environ
