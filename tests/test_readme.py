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
    for name in ("weights/policy.pt", "topk:steps=32", "threshold:0.9", "eb:gamma=0.01", "pc:lam=1:steps=8",
                 "band:hi=0.9:lo=0.08"):
        assert name in text, text
    assert "L=32 BL=32" in text and "warning" not in text
    # any block length and T
    text = run("sample.py", "--n", "40", "--block-length", "4", "--temperature", "0.3")
    assert "L=32 BL=4" in text and "T=0.3" in text and "warning" not in text


def test_the_shipped_policies_know_how_they_were_made():
    for name, bl in (("policy", 32), ("policy_full", 32), ("policy_semi", 8), ("policy_front", 8)):
        ck = torch.load(os.path.join(ROOT, "weights", f"{name}.pt"), weights_only=True)
        assert ck["command"].startswith("python train.py ") and ck["command"].endswith(f"--out weights/{name}.pt")
        assert ck["args"]["block_length"] == bl and ck["args"]["features"] == ("block" if name == "policy" else "log")
    assert torch.load(os.path.join(ROOT, "weights", "policy_semi.pt"), weights_only=True)["command"] == \
        "python train.py --out weights/policy_semi.pt"                  # the default recipe


def test_a_checkpoint_in_an_earlier_layout_gives_the_rows_of_the_current_one(tmp_path):
    """The shipped policy written as an earlier train.py wrote it (its evaluation tau stored as 'tau', settings that
    did not exist yet left out) decodes exactly as the current file: one upgrade path
    (common/checkpoints.upgrade_checkpoint)
    serves every reader."""
    import sample
    ck = torch.load(os.path.join(ROOT, "weights", "policy_semi.pt"), weights_only=True)
    args = {("tau" if k == "eval_tau" else k): v for k, v in ck["args"].items() if k not in ("eval_every", "imitate")}
    old = dict(ck, args=args)
    torch.save(old, tmp_path / "old.pt")
    rows = [sample.main(["--policy", p, "--n", "64"]) for p in (os.path.join(ROOT, "weights", "policy_semi.pt"),
                                                                  str(tmp_path / "old.pt"))]
    assert [(r["accuracy"], r["mean_nfe"]) for r in rows[0]] == [(r["accuracy"], r["mean_nfe"]) for r in rows[1]]
    assert rows[1][0]["policy"].endswith("old.pt")


def test_chain_rules_and_seeds_commands(tmp_path):
    text = run("-m", "support.chain_rules", "--n", "20")
    assert "band+answer:hi=0.9:lo=0.08" in text and "answer slot at the step that reveals the last value" in text
    text = run("-m", "support.seeds", "--block-length", "8", "--policies", "weights/policy_semi.pt", "--n", "20",
               "--out", str(tmp_path / "s.json"))
    assert "mean over 1 seeds" in text and "best band rule at matched NFE" in text


def test_bench_runs_on_the_tiny_shape():
    text = run("-m", "support.bench", "--shape", "tiny", "--n", "16", "--batch-size", "16", "--caches", "none")
    assert "threshold:0.9" in text


def test_bench_small_shape_and_grpo_round_the_dry_run_of_the_gpu_checks():
    """support/gpu_checks.sh --quick's shapes: every policy one forward a step with the dual cache; a GRPO round."""
    text = run("-m", "support.bench", "--shape", "small", "--caches", "dual", "--policies", "topk:steps=16")
    rows = [l.split() for l in text.splitlines() if l.startswith("small ")]
    assert len(rows) == 2 and "learned" in rows[1][1] and all(r[-7] == "1.00" for r in rows), rows   # fwd/step
    text = run("-m", "support.bench", "--shape", "grpo", "--grpo-model", "small", "--caches", "dual")
    assert "4 prompts x (4 + 1 expert)" in text and "grpo   cache dual" in text and "peak memory" in text


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


def test_gpu_checks_dry_run_prints_every_mode_and_fails_loudly(tmp_path):
    """support/gpu_checks.sh --quick --part modes on the CPU: each decoding mode's line, the cache's bytes held ==
    needed, the policy at 16 and 128 rows, a compiled dual step; exit 0. Without CUDA the full run, an OUT that is a
    file and an unknown part each exit non-zero with one line, having run nothing."""
    sh = lambda *a, out=tmp_path / "g": subprocess.run(["bash", "support/gpu_checks.sh", *a], cwd=ROOT, text=True,
                                                        capture_output=True, env=dict(os.environ, OUT=str(out)))
    done = sh("--quick", "--part", "modes", "--commit", "abc123")
    assert done.returncode == 0, done.stderr[-2000:]
    for what in ("uncached ", "uncached, padding mask", "block-first", "prefix step", "dual step ", "token_stats, T 0.8",
                 "policy act (float32)         batch 128", "dual step, compiled"):
        assert what in done.stdout, what
    assert "(1.000x)" in done.stdout and "commit abc123" in open(tmp_path / "g" / "summary.txt").read()
    (tmp_path / "file").write_text("x")
    for args, out in [((), tmp_path / "h"), (("--quick",), tmp_path / "file"), (("--part", "nope"), tmp_path / "i")]:
        if args == () and torch.cuda.is_available():
            continue
        bad = sh(*args, out=out)
        assert bad.returncode != 0 and "== " not in bad.stdout, (args, bad.stdout, bad.stderr)


def test_seeds_over_settings_gives_a_verdict_per_block_length_and_temperature(tmp_path):
    """support.seeds --block-lengths --temperatures --home: the rules are tuned at T = 0 on the validation split, and
    every (BL, T) gets a line; the per-setting policy is read at its own block length only."""
    text = run("-m", "support.seeds", "--policies", "weights/policy_full.pt", "--block-lengths", "8,32",
               "--temperatures", "0,0.8", "--home", "weights/policy_semi.pt", "--n", "6", "--hot-problems", "4",
               "--out", str(tmp_path / "s.json"))
    lines = [l for l in text.splitlines() if l.startswith("BL ") and ": " in l.split("NFE")[0]]
    learned = [l.split(":")[0] for l in lines if "learned" in l]
    assert learned == ["BL  8 T 0", "BL  8 T 0.8", "BL 32 T 0", "BL 32 T 0.8"]
    assert sum("per-setting" in l for l in lines) == 2 and "verdicts held over 1 seeds" in text
