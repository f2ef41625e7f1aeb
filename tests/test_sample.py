"""sample.py end to end: the README's commands on tiny budgets, JSON rows, --show, and bad input."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def sample(*args):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_readme_comparison_command(tiny_path, tmp_path):
    out = sample("--model", tiny_path, "--task", "chain", "--policies",
                 "random:steps=32,topk:steps=32,threshold:0.9,factor:1,eb:gamma=0.1", "--gen-length", "32",
                 "--block-length", "32", "--n", "24", "--json", str(tmp_path / "r.json"), "--show", "1")
    assert out.returncode == 0, out.stderr
    rows = json.load(open(tmp_path / "r.json"))
    assert [r["policy"] for r in rows] == ["random:steps=32", "topk:steps=32", "threshold:0.9", "factor:1", "eb:gamma=0.1"]
    for r in rows:
        assert {"policy", "accuracy", "mean_nfe", "tokens_per_nfe", "seconds", "n"} <= set(r) and r["n"] == 24
        assert 0 <= r["accuracy"] <= 100 and 1 <= r["mean_nfe"] <= 32
    assert rows[0]["mean_nfe"] == 32 and rows[1]["tokens_per_nfe"] == 1.0
    assert "mean NFE" in out.stdout and out.stdout.count("  step  ") == 5      # one shown generation each


def test_semi_ar_and_temperature(tiny_path):
    out = sample("--model", tiny_path, "--policies", "topk:steps=8,margin:steps=8,entropy:steps=8",
                 "--block-length", "8", "--n", "8", "--temperature", "0.5")
    assert out.returncode == 0, out.stderr
    assert "BL=8" in out.stdout and out.stdout.count(" 8.00 ") == 3


def test_learned_policy_checkpoint_sets_the_setup(tiny_path, tmp_path):
    import train
    train.train(train.TrainConfig(model=tiny_path, gen_length=16, block_length=8, prompts_per_step=2, group_size=2,
                                  steps=1, eval_every=0, out=str(tmp_path / "p.pt")))
    out = sample("--policy", str(tmp_path / "p.pt"), "--policies", "threshold:0.9", "--n", "8", "--tau", "0.5")
    assert out.returncode == 0, out.stderr
    assert "L=16 BL=8" in out.stdout and "p.pt:tau=0.5" in out.stdout and "threshold:0.9" in out.stdout


def test_real_layout_with_local_gsm8k(llada_dir, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + 3 ?", "answer": f"... #### {i + 3}"}) for i in range(3)))
    out = sample("--model", llada_dir, "--task", "gsm8k", "--data", str(data), "--policies", "topk:steps=8,threshold:0.9",
                 "--gen-length", "16", "--block-length", "8", "--n", "3", "--show", "1")
    assert out.returncode == 0, out.stderr
    assert "topk:steps=8" in out.stdout and " 8.00 " in out.stdout      # random weights: accuracy is noise, NFE is not


@pytest.mark.parametrize("args,msg", [
    (["--model", "gpt-17"], "unknown model"),
    (["--gen-length", "30", "--block-length", "8"], "multiple"),
    (["--policies", "topk:steps=7", "--block-length", "8"], "multiple of the 4 blocks"),
    (["--policies", "best:3"], "unknown policy"),
    (["--policy", "missing.pt"], "not found"),
    (["--task", "gsm9k"], "unknown task"),
    (["--policies", ""], "no policy in ''"),
    (["--gen-length", "100000", "--block-length", "100000"], "exceeds"),          # within a second, not a minute
    (["--gen-length", "1000", "--block-length", "1000", "--batch-size", "50000", "--n", "50000"], "lower --batch-size"),
    (["--policy", "."], "is a directory: pass the checkpoint file"),
])
def test_bad_input_is_one_clear_error(tiny_path, args, msg):
    base = {"--model": tiny_path, "--policies": "topk:steps=32"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    base.setdefault("--n", "4")
    out = sample(*[x for kv in base.items() for x in kv])
    assert out.returncode != 0 and msg in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_bad_policy_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    out = sample("--policy", str(bad))
    assert out.returncode != 0 and "not a policy checkpoint" in out.stderr


def test_pass_at_k_by_hand_and_never_falling():
    """The unbiased estimator 1 - C(n - c, k) / C(n, k), pinned by hand; it never falls as k grows."""
    from decode import pass_at
    assert pass_at(4, 1, 1) == 0.25 and pass_at(4, 1, 2) == 1 - 3 / 6 and pass_at(4, 1, 4) == 1.0
    assert pass_at(5, 2, 2) == 1 - 3 / 10 and pass_at(5, 0, 5) == 0.0 and pass_at(5, 5, 1) == 1.0
    for n in range(1, 12):
        for c in range(n + 1):
            values = [pass_at(n, c, k) for k in range(1, n + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(values, values[1:])) and abs(values[0] - c / n) < 1e-12


def test_rows_with_samples_by_hand():
    """row_of: accuracy is the mean over every completion (pass@1), pass@k the mean over problems, the majority vote
    the final answer given most often (ties to the first given), right when it is the gold one."""
    from decode import Completion, row_of
    from tasks import Problem
    problems = [Problem("q0", "3"), Problem("q1", "5")]
    c = lambda i, s, ok, ans: Completion(i, s, ok, 4, 8, ans)
    comps = [c(0, 0, False, "2"), c(0, 1, True, "3"), c(0, 2, False, "2"), c(0, 3, True, "3"),   # tie 2:2, "2" first
             c(1, 0, False, None), c(1, 1, False, "4"), c(1, 2, True, "5"), c(1, 3, True, "5")]  # "5" twice, "4" once
    row = row_of("p", comps, problems, "chain", 4, 1.0)
    assert row["accuracy"] == 50.0 and row["mean_nfe"] == 4 and row["samples"] == 4
    assert row["pass_at"] == {"1": 50.0, "2": 100 * ((1 - 1 / 6) + (1 - 1 / 6)) / 2, "4": 100.0}
    assert row["majority"] == 50.0                                  # problem 0 votes "2" (wrong), problem 1 "5" (right)
    from decode import majority
    late = [c(0, 0, True, "3"), c(0, 1, False, "2"), c(0, 2, False, "2"), c(0, 3, True, "3")]
    assert majority(late, "chain", problems[0]) and not majority(late[1:3], "chain", problems[0])


def test_sampling_command_prints_pass_at_k_and_the_majority_vote():
    out = subprocess.run([sys.executable, "sample.py", "--policies", "threshold:0.6", "--temperature", "0.8",
                          "--samples", "4", "--n", "32", "--block-length", "8"], cwd=ROOT, capture_output=True,
                         text=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr
    head = next(l for l in out.stdout.splitlines() if l.startswith("policy"))
    assert head.split()[-4:] == ["pass@1", "pass@2", "pass@4", "majority"] and "samples 4" in out.stdout
    row = next(l for l in out.stdout.splitlines() if l.startswith("threshold:0.6")).split()
    p1, p2, p4 = map(float, row[-4:-1])
    assert p1 <= p2 <= p4 and abs(p1 - float(row[1])) < 0.05         # pass@1 is the accuracy over every sample


def test_compile_flag_compiles_the_dllm_it_loads(monkeypatch):
    """sample.py --compile: the dLLM it loads is compiled (that a compiled dLLM gives the eager
    rows, with either cache, is tests/test_eval.py's)."""
    import model
    import sample as s
    seen = []
    monkeypatch.setattr(model.DLLM, "compile", lambda self: seen.append(self) or self)
    rows = s.main(["--policies", "threshold:0.9", "--block-length", "8", "--n", "4", "--compile"])
    assert len(seen) == 1 and rows[0]["n"] == 4


def test_records_of_every_completion_and_the_compare_tool(tmp_path, capsys):
    """--json writes the completions beside the rows (NAME.records.jsonl); support.compare reads two record files
    back and names the problems on which their verdicts differ, and for one the problems its graders disagree on."""
    from common.cli import read_records
    from support.compare import main as compare
    for name, spec in (("a", "threshold:0.9"), ("b", "topk:steps=4")):
        out = sample("--policies", spec, "--n", "12", "--gen-length", "32", "--block-length", "8",
                     "--json", str(tmp_path / f"{name}.json"))
        assert out.returncode == 0, out.stderr[-2000:]
    a, b = (read_records(str(tmp_path / f"{n}.records.jsonl")) for n in "ab")
    assert len(a) == len(b) == 12 and all(r["text"] and r["tokens"] <= 32 for r in a)
    rows = json.load(open(tmp_path / "a.json"))
    assert rows[0]["accuracy"] == 100 * sum(r["correct"] for r in a) / 12
    by_b = {(r["problem"], r["sample"]): r["correct"] for r in b}
    differ = {(r["problem"], r["sample"]) for r in a if r["correct"] != by_b[(r["problem"], r["sample"])]}
    got = compare([str(tmp_path / "a.records.jsonl"), str(tmp_path / "b.records.jsonl")])
    assert set(got) == differ and f"{len(differ)} graded differently" in capsys.readouterr().out
    assert compare([str(tmp_path / "a.records.jsonl")]) == []        # the tiny world has one grader
    with pytest.raises(SystemExit, match="holds no completion records|not a completion record|No such file"):
        compare([str(tmp_path / "missing.jsonl")])
