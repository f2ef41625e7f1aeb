"""Nothing lost, nothing silently wrong: a run's outputs never overwrite its inputs or each other, a log belongs to one
run, a lock says who holds it and a timeout keeps the computed row, a full disk is one line and no temporary file,
diverged weights are never saved or used, ungradable data is refused when it is read, and every count, seed, thread
count, model directory and checkpoint that cannot work is one clear line before any work (the graders' and the
sandbox's families are in test_tasks.py and test_code.py)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import eval as ev
import sample
import train
from conftest import ROOT, save_policy, write_fixture


def fails(fn, argv, match):
    """fn(argv) ends with one line that matches, not a traceback."""
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code not in (0, None) and (isinstance(e.value.code, int) or "\n" not in str(e.value.code))
    if isinstance(e.value.code, str):
        assert match in e.value.code, e.value.code
    return e.value.code


def tiny_train(tiny_path, out, *extra):
    return ["--model", tiny_path, "--gen-length", "16", "--block-length", "8", "--prompts-per-step", "2",
            "--group-size", "2", "--steps", "1", "--eval-every", "0", "--out", str(out), *extra]


# 1-4: the log of a run

def test_the_log_is_never_the_checkpoint_nor_a_directory_nor_an_old_run(tiny_path, tmp_path):
    fails(train.main, tiny_train(tiny_path, tmp_path / "run.jsonl"), "the per-step log is written beside the checkpoint")
    (tmp_path / "d.jsonl").mkdir()
    fails(train.main, tiny_train(tiny_path, tmp_path / "d.pt"), "is a directory")
    (tmp_path / "old.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    fails(train.main, tiny_train(tiny_path, tmp_path / "old.pt"), "is the log of an earlier run")
    assert (tmp_path / "old.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'      # kept, never appended to
    train.main(tiny_train(tiny_path, tmp_path / "new.pt"))
    assert [json.loads(l)["step"] for l in open(tmp_path / "new.jsonl")] == [1]


HOLD = "import sys, time; sys.path.insert(0, {root!r}); from common.cli import Lock; lock = Lock({path!r}).acquire(0); " \
       "print('held', flush=True); time.sleep(60)"


def holder(path):
    """A process that holds path's lock for a minute (until killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(root=ROOT, path=str(path))], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_two_runs_whose_logs_coincide_cannot_both_write(tiny_path, tmp_path):
    """--out a.pt and --out a.ckpt share the log a.jsonl: the second run is refused, naming who writes it."""
    p = holder(tmp_path / "a.jsonl")
    try:
        msg = fails(train.main, tiny_train(tiny_path, tmp_path / "a.ckpt"), "another run is writing --out's log")
        assert f"process {p.pid}" in msg
    finally:
        p.kill()
    assert not (tmp_path / "a.ckpt").exists()


# 5: an output that is an input

def test_no_output_is_an_input(tiny_path, tmp_path):
    ck = save_policy(tmp_path / "p.pt", train.LearnedPolicy().state_dict(), train.PolicyConfig(), model=tiny_path)
    before = open(ck, "rb").read()
    fails(sample.main, ["--policy", ck, "--n", "4", "--json", ck], "is also --policy")
    fails(ev.main, ["--model", tiny_path, "--policies", ck, "--n", "4", "--out", ck], "is also --policies")
    fails(ev.main, ["--model", tiny_path, "--sweep", "threshold", "--n", "4", "--out", str(tmp_path / "r.png"),
                    "--plot"], "")   # the picture would be --out itself (or matplotlib is missing): refused either way
    assert open(ck, "rb").read() == before


# 6: waiting on a lock

def test_a_held_rows_file_is_waited_on_with_its_holder_named_and_the_row_kept(tiny_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(ev, "WAIT_S", 3)
    s = [ev.Setting(tiny_path, "chain", 16, 8, ["threshold:0.9"])]
    p = holder(out)
    try:
        with pytest.raises(RuntimeError, match=f"process {p.pid} .* has held .*rows.json.lock for longer than 3 s: the "
                                               f"row just computed is kept in .*rows.pending.json"):
            ev.run(str(out), s, n=4)
    finally:
        p.kill()
        p.wait()
    assert f"waiting for {out}: process {p.pid}" in capsys.readouterr().out
    assert not out.exists() and len(json.load(open(tmp_path / "rows.pending.json"))) == 1
    calls = []
    monkeypatch.setattr(ev, "decode", lambda *a, **k: calls.append(a))
    rows = ev.run(str(out), s, n=4)                      # the next run takes the kept row in, computes nothing
    assert len(rows) == 1 and not calls and not (tmp_path / "rows.pending.json").exists()


# 7: a full disk

def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tiny_path, tmp_path, monkeypatch):
    import common.cli as cli
    out = tmp_path / "rows.json"
    ev.main(["--model", tiny_path, "--policies", "threshold:0.9", "--n", "4", "--out", str(out)])
    before = out.read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cli.json, "dump", full)
    msg = fails(ev.main, ["--model", tiny_path, "--policies", "threshold:0.5", "--n", "4", "--out", str(out)],
                "the disk is full")
    assert "rows.json is as it was before" in msg and out.read_bytes() == before
    monkeypatch.undo()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")))
    fails(train.main, tiny_train(tiny_path, tmp_path / "p.pt"), "the disk is full")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "p.pt").exists()


def test_a_writer_killed_mid_write_leaves_no_temporary_file_after_the_next_write(tmp_path):
    """kill -9 during a write leaves path.<pid>.tmp; the next write of path removes those of dead writers only."""
    from common.cli import write_json
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = tmp_path / "rows.json"
        for pid in (int(dead.stdout), live.pid):
            (tmp_path / f"rows.json.{pid}.tmp").write_text("half a file")
        (tmp_path / "rows.json.notes.tmp").write_text("not a writer's")
        write_json(str(out), [1])
        assert sorted(p.name for p in tmp_path.glob("*.tmp")) == sorted([f"rows.json.{live.pid}.tmp", "rows.json.notes.tmp"])
        assert json.loads(out.read_text()) == [1]
    finally:
        live.kill()
        live.wait()


# 8: diverged weights

def test_weights_that_are_not_finite_are_never_saved_or_used(tiny_path, tmp_path, monkeypatch):
    real = train.grpo_loss

    def diverge(net, *a, **k):
        out = real(net, *a, **k)
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
        return out
    monkeypatch.setattr(train, "grpo_loss", diverge)
    monkeypatch.setattr(train, "grade_many", lambda task, ps, texts, *_: [len(t) % 2 == 0 for t in texts])
    fails(train.main, tiny_train(tiny_path, tmp_path / "nan.pt", "--reward", "additive"),
          "step 1: the update made the policy's weights non-finite")
    assert not (tmp_path / "nan.pt").exists()
    fails(train.main, tiny_train(tiny_path, tmp_path / "x.pt", "--lr", "1e30"), "beyond any learning rate")
    pol = train.LearnedPolicy()
    state = {k: v.clone() for k, v in pol.state_dict().items()}
    state["head.bias"].fill_(float("inf"))
    ck = save_policy(tmp_path / "inf.pt", state, pol.c, model=tiny_path)
    fails(sample.main, ["--policy", ck, "--n", "4"], "its policy weights are not finite")
    fails(ev.main, ["--model", tiny_path, "--policies", ck, "--n", "4", "--out", str(tmp_path / "r.json")],
          "its policy weights are not finite")


# 9-11: data, model directories, too little data

def gsm8k_file(path, answers):
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers)))
    return str(path)


def test_data_that_cannot_be_graded_or_used_is_refused_when_read(llada_dir, tmp_path):
    bad = gsm8k_file(tmp_path / "bad.jsonl", ["... #### 12", "... #### twelve-ish"])
    fails(sample.main, ["--model", llada_dir, "--task", "gsm8k", "--data", bad, "--policies", "threshold:0.9"],
          "bad.jsonl:2: its answer 'twelve-ish' has no number to grade against")
    fails(sample.main, ["--model", llada_dir, "--task", "gsm8k", "--data", str(tmp_path), "--policies", "threshold:0.9"],
          "is a directory")
    few = gsm8k_file(tmp_path / "few.jsonl", ["#### 1", "#### 2", "#### 3"])
    fails(train.main, ["--model", llada_dir, "--task", "gsm8k", "--data", few, "--gen-length", "16", "--block-length",
                       "8", "--out", str(tmp_path / "p.pt")], "3 training problems in")
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("change,match", [
    (dict(n_heads="four"), "n_heads (its field for it) is 'four'"),
    (dict(n_heads=0), "n_heads (its field for it) is 0"),
    (dict(n_heads=3), "do not divide"),
    (dict(d_model=-5), "d_model is -5"),
    (dict(mask_token_id=10 ** 9), "mask_token_id is 1000000000"),
    ("truncated", "not a readable safetensors file"),
    ("empty", "not a readable safetensors file"),
    ("int8", "stored as torch.int8 (quantized weights?)"),
])
def test_model_directories_that_cannot_load(tmp_path, change, match):
    from safetensors.torch import load_file, save_file
    cfg, _ = write_fixture(str(tmp_path), "llada")
    st = tmp_path / "model.safetensors"
    if change == "truncated":
        st.write_bytes(st.read_bytes()[:300])
    elif change == "empty":
        st.write_bytes(b"")
    elif change == "int8":
        save_file({k: v.to(torch.int8) if "q_proj" in k else v for k, v in load_file(str(st)).items()}, str(st))
    else:
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    fails(sample.main, ["--model", str(tmp_path), "--task", "gsm8k", "--data", gsm8k_file(tmp_path / "g.jsonl", ["#### 1"]),
                        "--policies", "threshold:0.9", "--gen-length", "8", "--block-length", "8"], match)


# 12-14, 16: numbers, seeds, threads, stored arguments

@pytest.mark.parametrize("script,argv,match", [
    ("sample", ["--policies", "threshold:0.9", "--n", "1000000000"], "--num-problems must be an integer in [1, 1,000,000]"),
    ("eval", ["--sweep", "threshold", "--n", "1000000000"], "--num-problems must be an integer"),
    ("train", ["--prompts-per-step", "1000000000"], "--prompts-per-step must be an integer"),
    ("train", ["--eval-n", "100000000"], "--eval-n must be an integer"),
    ("sample", ["--policies", "threshold:0.9", "--samples", "0"], "--samples must be an integer in [1,"),
    ("sample", ["--policies", "threshold:0.9", "--seed", str(2 ** 70)], "--seed must be in [0, 2**63 - 1]"),
    ("train", ["--seed", "-1"], "--seed must be in [0, 2**63 - 1]"),
    ("eval", ["--sweep", "threshold", "--seeds", f"0,{2 ** 64}"], "--seeds must be in [0, 2**63 - 1]"),
    ("sample", ["--policies", "threshold:0.9", "--threads", "100000"], "--threads must be in [0,"),
    ("eval", ["--sweep", "threshold", "--threads", "100000"], "--threads must be in [0,"),
])
def test_numbers_that_cannot_work_are_one_line(tiny_path, tmp_path, script, argv, match):
    mod = dict(sample=sample, eval=ev, train=train)[script]
    extra = ["--out", str(tmp_path / ("o.pt" if script == "train" else "o.json"))] if script != "sample" else []
    t0 = time.time()
    fails(mod.main, ["--model", tiny_path, *argv, *extra], match)
    assert time.time() - t0 < 10


def test_support_tools_refuse_huge_threads_at_once():
    for argv in (["-m", "support.bench", "--threads", "100000"], ["-m", "support.suite", "--threads", "100000"]):
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "--threads must be in [0," in out.stderr and "Traceback" not in out.stderr


def test_a_checkpoint_with_damaged_stored_arguments_is_one_line_everywhere(tiny_path, tmp_path):
    pol = train.LearnedPolicy()
    for bad in (dict(gen_length="32"), dict(model=None), dict(block_length=True)):
        ck = save_policy(tmp_path / "bad.pt", pol.state_dict(), pol.c, **{"model": tiny_path, **bad})
        key = next(iter(bad))
        fails(sample.main, ["--policy", ck, "--n", "4"], f"its stored training argument {key!r}")
        fails(ev.main, ["--model", tiny_path, "--policies", ck, "--n", "4", "--out", str(tmp_path / "r.json")],
              f"its stored training argument {key!r}")


def test_pretrain_refuses_an_unwritable_folder_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    out = subprocess.run([sys.executable, "-m", "support.pretrain", "--out-dir", str(tmp_path / "file" / "sub")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "cannot write there" in out.stderr and "pretraining" not in out.stdout


# 18: Ctrl-C outside the training loop

def interrupt(argv, ready, times=1, timeout=120):
    """Start argv, send SIGINT `times` times once `ready` appears in its output -> (returncode, the rest of its output,
    stderr after stdout)."""
    p = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
    deadline, seen = time.time() + timeout, ""
    while ready not in seen and time.time() < deadline:
        seen += p.stdout.readline()
    for _ in range(times):
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def test_ctrl_c_anywhere_is_one_line(tiny_path, tmp_path):
    """Ctrl-C while sample, eval and a warm start work, and twice during GRPO: exit 130 with one
    line (the four run side by side)."""
    from concurrent.futures import ThreadPoolExecutor
    runs = [(["sample.py", "--model", tiny_path, "--policies", "topk:steps=32", "--n", "2000",
              "--batch-size", "8"], "model ", 1),
            (["eval.py", "--model", tiny_path, "--sweep", "topk", "--n", "2000",
              "--batch-size", "8", "--out", str(tmp_path / "r.json")], "chain L=", 1),
            (["train.py", *tiny_train(tiny_path, tmp_path / "im.pt", "--imitate", "threshold:0.9",
                                      "--imitate-problems", "4000", "--batch-size", "8")],
             "dLLM ", 1),
            # the second Ctrl-C stops at once
            (["train.py", *tiny_train(tiny_path, tmp_path / "two.pt", "--steps", "50",
                                      "--prompts-per-step", "8")], "step 1 ", 2)]
    with ThreadPoolExecutor(len(runs)) as pool:
        (c1, e1), (c2, e2), (c3, e3), (c4, e4) = pool.map(lambda r: interrupt(*r), runs)
    assert c1 == 130 and "interrupted: nothing was written" in e1 and "Traceback" not in e1
    assert c2 == 130 and "keeps every row finished before" in e2 and "Traceback" not in e2
    assert c3 == 130 and "Traceback" not in e3 and not (tmp_path / "im.pt").exists()
    assert c4 == 130 and "Traceback" not in e4
    assert ("every checkpoint written before is intact" in e4
            or "continue with the same flags and --resume" in e4)
