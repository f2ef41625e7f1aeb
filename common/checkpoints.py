"""
Policy checkpoints as train.py writes them: reading one of any version (the one place that upgrades
the files of earlier versions), and one clear error for a missing, foreign, damaged or diverged
file.
"""
import math
import os

import torch


# what every train.py checkpoint holds
CHECKPOINT_KEYS = ("policy", "policy_config", "args", "step")
# What a checkpoint of an earlier version lacks, and the value that version used.
EARLIER = dict(
    policy_config=dict(features="raw", alpha_features="timestep", actions="bernoulli"),
    args=dict(features="raw", actions="bernoulli", width=128, cache="none", alpha_range=None,
              expert=None, expert_block_length=None, imitate=None, init=None, alpha_norm=False,
              eval_tau=1.0, temperature=0.0, temperature_range=None, reward="mult", grader="paper",
              block_lengths=None))
RENAMED = dict(tau="eval_tau")   # args saved under an earlier name
# checked on read
SETUP_ARGS = dict(model=str, task=str, gen_length=int, block_length=int, alpha=(int, float))


def upgrade_checkpoint(ck, path="checkpoint"):
    """A checkpoint dict of any version -> the current layout (what earlier files lack filled in),
    checked."""
    if not isinstance(ck, dict) or any(k not in ck for k in CHECKPOINT_KEYS):
        have = list(ck) if isinstance(ck, dict) else []
        raise ValueError(f"{path} is not a policy checkpoint written by train.py (it lacks "
                         f"{[k for k in CHECKPOINT_KEYS if k not in have]})")
    if not isinstance(ck["args"], dict) or not isinstance(
            ck["policy_config"], dict) or not isinstance(ck["policy"], dict):
        raise ValueError(
            f"{path}: its args, policy_config and policy must be dicts (not a train.py checkpoint)")
    args = {RENAMED.get(k, k): v for k, v in ck["args"].items()}
    ck = dict(ck, args={**EARLIER["args"], **args},
              policy_config={**EARLIER["policy_config"], **ck["policy_config"]})
    for k, kind in SETUP_ARGS.items():
        if not isinstance(ck["args"].get(k), kind) or isinstance(ck["args"].get(k), bool):
            raise ValueError(
                f"{path}: its stored training argument {k!r} is {ck['args'].get(k)!r}; the file is "
                "damaged or not from train.py (train the policy again)")
    a = ck["args"]
    for k, ok, need in (("gen_length", a["gen_length"] >= 1, "a positive integer"),
                        ("block_length", a["block_length"]
                         >= 1, "a positive integer"), ("alpha", math.isfinite(a["alpha"]) and
                                                       a["alpha"] >= 0, "a number >= 0"),
                        ("eval_tau", isinstance(a["eval_tau"], (int, float)) and
                         not isinstance(a["eval_tau"], bool) and math.isfinite(a["eval_tau"]) and
                         a["eval_tau"] > 0, "a number > 0"),
                        ("step", isinstance(ck["step"], int) and
                         not isinstance(ck["step"], bool) and ck["step"] >= 0, "an integer >= 0")):
        if not ok:
            value = ck["step"] if k == "step" else a[k]
            what = "step" if k == "step" else f"training argument {k!r}"
            raise ValueError(
                f"{path}: its stored {what} is {value!r}, not {need}; the file is damaged or not "
                "from train.py (train the policy again)")
    return ck


def read_checkpoint(path):
    """A train.py checkpoint as a dict in the current layout: a missing, empty, truncated, foreign
    or damaged file is one clear ValueError / FileNotFoundError, never an EOFError or KeyError from
    deep inside."""
    if os.path.isdir(path):
        raise ValueError(
            f"policy checkpoint {path} is a directory: pass the checkpoint file (e.g. "
            f"{path}/ckpt.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"policy checkpoint {path} not found (train one with python train.py)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, not a torch file, or foreign pickled objects
        raise ValueError(
            f"{path} is not a policy checkpoint written by train.py ({type(e).__name__}): the file "
            "is empty, "
            f"cut off or of another kind; pass a checkpoint that train.py wrote") from None
    return upgrade_checkpoint(ck, path)


def check_finite_state(state, what):
    """One clear error when a state dict (or an optimizer's, nested) holds a NaN or an infinity."""
    bad, todo = [], list(state.items())
    while todo:
        k, v = todo.pop()
        if isinstance(v, dict):
            todo += [(f"{k}.{k2}", v2) for k2, v2 in v.items()]
        elif torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            bad.append(str(k))
    if bad:
        raise ValueError(
            f"{what} are not finite ({', '.join(sorted(bad)[:3])}): the training diverged; "
            f"train it again with a lower --lr")
