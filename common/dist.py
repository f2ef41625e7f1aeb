"""
Ranks under torchrun, for train.py (data-parallel GRPO) and for eval.py / sample.py (each rank
decodes its share of the problems, rank 0 gathers and writes). torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE; a plain `python script.py` is rank 0 of 1 and needs none of this.

    torchrun --nproc_per_node=8 eval.py --policies threshold:0.9 --num-problems 1319 ...   # one GPU per rank
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 train.py ...   # 2 nodes
"""
import datetime
import os

import torch
import torch.distributed as dist

# a collective that waits longer than this (a rank hung, not merely slow) fails instead of hanging
TIMEOUT_S = 1800


def under_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_ranks(device=None):
    """-> (rank, world, local rank, device). Under torchrun each rank takes cuda:LOCAL_RANK and
    NCCL; with --device cpu (or no CUDA) every rank runs on the CPU with gloo. More ranks on a node
    than it has GPUs is one clear error (two ranks on one GPU would deadlock NCCL)."""
    if not under_torchrun():
        return 0, 1, 0, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    # the default device's override (common/hub.default_device)
    device = device or os.environ.get("DLLM_UNMASK_DEVICE")
    on_cpu = device is not None and str(device).split(":")[0] in ("cpu", "mps")
    if torch.cuda.is_available() and not on_cpu:
        n = torch.cuda.device_count()
        if local_world > n:
            raise ValueError(
                f"torchrun started {local_world} processes on this node, which has {n} GPU(s): "
                f"pass --nproc_per_node={n} (one rank per GPU), or --device cpu to run every rank "
                "on the CPU")
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return rank, world, local, device


def gather(obj, rank, world):
    """Every rank's obj -> the list of them, in rank order, on rank 0 (None elsewhere)."""
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj, rank, world):
    """Rank 0's obj on every rank."""
    if world == 1:
        return obj
    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(world):
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def on_sigterm():
    """SIGTERM raises KeyboardInterrupt: a scheduler's kill, or torchrun stopping every rank when
    one has failed, ends a script with its one line (and its finished work kept), not a traceback.
    """
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def stopped(kept):
    """The one line of a stopped run; kept: what it keeps."""
    if under_torchrun():
        return (
            f"stopped on rank {os.environ['RANK']}: torchrun stops every rank when one fails (its "
            f"report below names the rank and the cause); {kept}")
    return f"interrupted: {kept}"
