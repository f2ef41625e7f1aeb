"""Beyond one process: eval.py and sample.py under torchrun write the rows of one process (gloo on the CPU here, one
GPU per rank elsewhere), every flag passes through torchrun as written, a rank that dies leaves a clear error and a
rows file of finished rows, more ranks than GPUs is one clear line, and two 'nodes' (torchrun's static rendezvous on
one machine) give the same rows."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
SAME = ("policy", "accuracy", "mean_nfe", "tokens_per_nfe", "n", "samples")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def rows_of(path):
    return sorted(tuple(r[k] for k in SAME) for r in json.load(open(path)))


def test_no_flag_is_a_prefix_of_a_torchrun_option():
    """torchrun's parser takes any unique prefix of its own options, even after the script's name: `--n` would be read
    as one of --nnodes / --nproc-per-node. No flag of the scripts may be a prefix of (or equal to) one of them."""
    from dataclasses import fields
    from torch.distributed.run import get_args_parser
    import eval as ev
    import sample
    import train
    theirs = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    for cfg in (sample.SampleConfig, ev.EvalConfig, train.TrainConfig):
        for f in fields(cfg):
            flag = "--" + f.name.replace("_", "-")
            clash = [o for o in theirs if o.startswith(flag) or o.replace("_", "-").startswith(flag)]
            assert not clash, f"{cfg.__name__}: {flag} is a prefix of torchrun's {clash}"


def test_more_ranks_than_gpus_is_one_clear_line(monkeypatch):
    from common import dist
    monkeypatch.delenv("DLLM_UNMASK_DEVICE", raising=False)
    for k, v in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"torchrun started 2 processes on this node, which has 1 GPU\(s\): pass "
                                         r"--nproc_per_node=1 .* or --device cpu"):
        dist.init_ranks(None)


EVAL = ["eval.py", "--policies", "threshold:0.9,weights/policy_semi.pt", "--block-lengths", "8", "--num-problems", "64",
        "--threads", "1", "--batch-size", "16"]


def test_torchrun_eval_writes_the_rows_of_one_process(tmp_path):
    one = subprocess.run([sys.executable, *EVAL, "--out", str(tmp_path / "one.json")], cwd=ROOT, env=env(),
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", *EVAL, "--out",
                          str(tmp_path / "two.json")], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert rows_of(tmp_path / "one.json") == rows_of(tmp_path / "two.json") and len(rows_of(tmp_path / "two.json")) == 2
    assert two.stdout.count("| threshold:0.9 |") == 1                              # rank 0 alone reports
    again = subprocess.run([*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", *EVAL, "--out",
                            str(tmp_path / "two.json")], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert again.returncode == 0 and "% @" not in again.stdout                   # resumed: nothing computed again


def test_torchrun_sample_with_samples_gives_the_table_of_one_process(tmp_path):
    args = ["sample.py", "--policies", "threshold:0.6", "--temperature", "0.8", "--samples", "4", "--num-problems", "24",
            "--block-length", "8", "--batch-size", "20"]
    one = subprocess.run([sys.executable, *args, "--json", str(tmp_path / "one.json")], cwd=ROOT, env=env(),
                         capture_output=True, text=True)
    two = subprocess.run([*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", *args, "--json",
                          str(tmp_path / "two.json")], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = json.load(open(tmp_path / "one.json")), json.load(open(tmp_path / "two.json"))
    assert [(r["accuracy"], r["mean_nfe"], r["pass_at"], r["majority"]) for r in a] == \
           [(r["accuracy"], r["mean_nfe"], r["pass_at"], r["majority"]) for r in b]
    assert "2 ranks" in two.stdout and two.stdout.count("threshold:0.6 ") == 1


def children(pid):
    """The processes torchrun started (its workers), from /proc."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/stat").read().split(")")[1].split()[1] == str(pid):
                    out.append(int(p))
            except OSError:
                pass
    return out


def rank_of(pid):
    env_vars = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return next((int(v.split(b"=")[1]) for v in env_vars if v.startswith(b"RANK=")), None)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers in /proc")
def test_a_rank_killed_mid_run_is_a_clear_error_and_the_rows_file_keeps_its_finished_rows(tmp_path):
    out = tmp_path / "rows.json"
    argv = [*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", "eval.py", "--sweep", "threshold",
            "--block-lengths", "8,32", "--num-problems", "500", "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and len(json.loads(out.read_text() or "[]")) >= 2):
        time.sleep(0.2)
    workers = [p for p in children(proc.pid) if rank_of(p) == 1]
    assert workers, "no rank 1 found"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "stopped on rank 0: torchrun stops every rank when one fails" in err and "keeps every row finished" in err
    rows = json.loads(out.read_text())                              # valid JSON: whole rows only
    assert 2 <= len(rows) < 16 and all({"policy", "accuracy", "mean_nfe", "n"} <= set(r) for r in rows)
    assert not list(tmp_path.glob("*.tmp"))


def test_two_nodes_by_static_rendezvous_give_the_rows_of_one_process(tmp_path):
    """Multi-node as torchrun does it (--nnodes, --node-rank, a master address): here two 'nodes' on one machine."""
    one = subprocess.run([sys.executable, *EVAL, "--out", str(tmp_path / "one.json")], cwd=ROOT, env=env(),
                         capture_output=True, text=True)
    port = free_port()
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", f"--node_rank={i}", "--nproc_per_node=1",
                               "--master_addr=127.0.0.1", f"--master_port={port}", *EVAL, "--out",
                               str(tmp_path / "two.json")], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert one.returncode == 0 and all(n.returncode == 0 for n in nodes), outs[0][1][-2000:] + outs[1][1][-2000:]
    assert rows_of(tmp_path / "one.json") == rows_of(tmp_path / "two.json")
