"""The README's first commands and the support scripts, run as typed (with fewer problems where a flag allows)."""
import os
import subprocess
import sys

import torch

from conftest import ROOT


def run(*argv):
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return out.stdout


def test_sample_with_no_policy_flag_compares_the_shipped_policy_with_the_heuristics():
    text = run("sample.py", "--n", "40")                              # the first command, on 40 problems
    for name in ("weights/policy_full.pt", "topk:steps=32", "threshold:0.9", "eb:gamma=0.01", "pc:lam=1:steps=8",
                 "band:hi=0.9:lo=0.08"):
        assert name in text, text
    assert "L=32 BL=32" in text


def test_the_shipped_policies_know_how_they_were_made():
    for name, bl in (("policy_full", 32), ("policy_semi", 8)):
        ck = torch.load(os.path.join(ROOT, "weights", f"{name}.pt"), weights_only=True)
        assert ck["command"].startswith("python train.py ") and f"--out weights/{name}.pt" in ck["command"]
        assert ck["args"]["block_length"] == bl and ck["args"]["features"] == "log" and ck["args"]["tau"] == 0.5


def test_chain_rules_and_seeds_commands(tmp_path):
    text = run("-m", "support.chain_rules", "--n", "20")
    assert "band+answer:hi=0.9:lo=0.08" in text and "answer slot at the step that reveals the last value" in text
    text = run("-m", "support.seeds", "--block-length", "8", "--policies", "weights/policy_semi.pt", "--n", "20",
               "--out", str(tmp_path / "s.json"))
    assert "mean over 1 seeds" in text and "best band rule at matched NFE" in text


def test_bench_runs_on_the_tiny_shape():
    text = run("-m", "support.bench", "--shape", "tiny", "--n", "16", "--batch-size", "16", "--caches", "none")
    assert "threshold:0.9" in text


def test_support_scripts_refuse_bad_numbers(tmp_path):
    for argv, msg in [(["-m", "support.chain_rules", "--n", "0"], "--num-problems must be an integer in [1, "),
                      (["-m", "support.chain_rules", "--hi", "0.1", "--lo", "0.5"], "need 0 <= lo < hi <= 1"),
                      (["-m", "support.seeds", "--policies", "weights/policy_full.pt", "--n", "-1"],
                       "--num-problems must be an integer in [1, "),
                      (["-m", "support.seeds", "--policies", "weights/policy_full.pt", "--block-length", "0"],
                       "--block-length must be an integer in [1, "),
                      (["-m", "support.seeds", "--policies", str(tmp_path / "missing.pt")], "not found")]:
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode != 0 and msg in out.stderr and "Traceback" not in out.stderr, out.stderr
