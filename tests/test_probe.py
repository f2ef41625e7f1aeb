"""Bad inputs and faults a probe found (fifth pass): each one clear line naming the input and where it came from
(flag, file, field), before any work; a learned policy outside its training setting says so; rows of two runs into
one file are both kept; products of counts are bounded."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, write_fixture
from model import load_dllm


def damaged(tmp_path, how):
    d = str(tmp_path / "m")
    write_fixture(d, "llada")
    cfg = json.load(open(os.path.join(d, "config.json")))
    if how in ("abc", "-5", "0.5"):
        cfg["max_sequence_length"] = {"abc": "abc", "-5": -5, "0.5": 0.5}[how]
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    elif how == "template":
        tpl = os.path.join(d, "chat_template.jinja")
        if os.path.exists(tpl):
            open(tpl, "w").write("{% for m in messages %}{{ m['content'] }")
        else:
            tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
            tc["chat_template"] = "{% for m in messages %}{{ m['content'] }"
            json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"))
    elif how == "float8":
        from safetensors.torch import load_file, save_file
        sd = load_file(os.path.join(d, "model.safetensors"))
        k = next(iter(sd))
        sd[k] = sd[k].to(torch.float8_e4m3fn)
        save_file(sd, os.path.join(d, "model.safetensors"))
    elif how == "fifo":
        os.remove(os.path.join(d, "model.safetensors"))
        os.mkfifo(os.path.join(d, "model.safetensors"))
    elif how == "empty tokenizer":
        open(os.path.join(d, "tokenizer.json"), "w").close()
    elif how == "dangling":
        os.remove(os.path.join(d, "tokenizer.json"))
        os.symlink(os.path.join(d, "gone.json"), os.path.join(d, "tokenizer.json"))
    return d


@pytest.mark.parametrize("how,msg", [("abc", "max_sequence_length / max_position_embeddings must be a positive integer"),
                                     ("-5", "must be a positive integer, not -5"),
                                     ("0.5", "must be a positive integer, not 0.5"),
                                     ("template", "tokenizer or chat template does not load"),
                                     ("float8", "float8_e4m3fn (quantized weights?); this loader takes bf16, fp16 or fp32"),
                                     ("fifo", "model.safetensors is not a regular file"),
                                     ("empty tokenizer", "tokenizer.json is empty"),
                                     ("dangling", "tokenizer.json is not a regular file")])
def test_a_damaged_model_directory_is_one_line(tmp_path, how, msg):
    d = damaged(tmp_path, how)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_dllm(d, device="cpu")
    assert msg in str(e.value) and d in str(e.value) and "\n" not in str(e.value), str(e.value)


def stored(tmp_path, **changes):
    ck = torch.load(os.path.join(ROOT, "weights", "policy_semi.pt"), weights_only=False)
    for k, v in changes.items():
        if k == "step":
            ck["step"] = v
        else:
            ck["args"][k] = v
    path = str(tmp_path / "p.pt")
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("change,msg", [(dict(eval_tau=float("nan")), "stored training argument 'eval_tau' is nan"),
                                        (dict(eval_tau="abc"), "stored training argument 'eval_tau' is 'abc'"),
                                        (dict(eval_tau=0.0), "'eval_tau' is 0.0, not a number > 0"),
                                        (dict(step=-5), "stored step is -5, not an integer >= 0"),
                                        (dict(gen_length=-32), "stored training argument 'gen_length' is -32"),
                                        (dict(alpha=float("inf")), "'alpha' is inf")])
def test_a_damaged_stored_value_names_the_file_and_field(tmp_path, change, msg):
    from common.checkpoints import read_checkpoint
    path = stored(tmp_path, **change)
    with pytest.raises(ValueError) as e:
        read_checkpoint(path)
    assert msg in str(e.value) and path in str(e.value)
    out = subprocess.run([sys.executable, "sample.py", "--policy", path, "--n", "4"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode != 0 and msg in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_policy_outside_its_training_setting_says_so(tmp_path):
    """policy_semi.pt (trained at BL 8) at sample's default L = BL = 32: a warning once, the row and the table say so;
    at its own BL nothing is said. A variant: at another L."""
    run = lambda *a: subprocess.run([sys.executable, "sample.py", "--n", "8", *a], cwd=ROOT, capture_output=True,
                                    text=True)
    out = run("--policies", "weights/policy_semi.pt,threshold:0.9", "--json", str(tmp_path / "a.json"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("warning: weights/policy_semi.pt was trained at L 32, BL 8") == 1
    assert "*weights/policy_semi.pt" in out.stdout and "* outside its training setting (L 32, BL 8)" in out.stdout
    rows = {r["policy"]: r for r in json.load(open(tmp_path / "a.json"))}
    assert rows["weights/policy_semi.pt"]["outside_training"] == "L 32, BL 8" and "outside_training" not in rows["threshold:0.9"]
    home = run("--policies", "weights/policy_semi.pt", "--block-length", "8")
    assert home.returncode == 0 and "warning" not in home.stdout and "outside" not in home.stdout
    other = run("--policies", "weights/policy_semi.pt", "--gen-length", "64", "--block-length", "8")
    assert "runs here at L 64, BL 8" in other.stdout


def test_two_runs_into_one_json_keep_both(tmp_path):
    """Two sample.py --json runs into one file, at the same time: both runs' rows are kept (the file is locked and
    merged); a rerun of the same setting replaces its row; a file of another kind is refused before any work."""
    path = str(tmp_path / "rows.json")
    cmd = lambda spec: [sys.executable, "sample.py", "--policies", spec, "--n", "8", "--json", path]
    a, b = subprocess.Popen(cmd("threshold:0.9"), cwd=ROOT), subprocess.Popen(cmd("topk:steps=8"), cwd=ROOT)
    assert a.wait() == 0 and b.wait() == 0
    assert sorted(r["policy"] for r in json.load(open(path))) == ["threshold:0.9", "topk:steps=8"]
    assert subprocess.run(cmd("threshold:0.9"), cwd=ROOT, capture_output=True).returncode == 0
    assert sorted(r["policy"] for r in json.load(open(path))) == ["threshold:0.9", "topk:steps=8"]
    other = str(tmp_path / "other.json")
    json.dump({"not": "rows"}, open(other, "w"))
    out = subprocess.run(cmd("threshold:0.9")[:-1] + [other], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "is not a rows file of sample.py" in out.stderr and json.load(open(other)) == {"not": "rows"}


@pytest.mark.parametrize("argv,msg", [
    (["sample.py", "--n", "1000000", "--samples", "1000000"], "completions: at most 1,000,000"),
    (["sample.py", "--n", "100000", "--samples", "100", "--policies", "threshold:0.9"], "completions: at most"),
    (["eval.py", "--policies", "weights/policy_semi.pt", "--taus", ",".join(str(1 + i / 1e3) for i in range(1000)),
      "--betas", ",".join(str(1 + i / 1e3) for i in range(1001)), "--block-lengths", "8"], "rows of 500 problems"),
    (["eval.py", "--sweep", "topk", "--n", "1000000", "--samples", "1000000"], "completions"),
])
def test_products_of_counts_are_bounded(argv, msg):
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and msg in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-500:]


def test_ctrl_c_at_any_moment_is_one_line(tmp_path):
    """SIGINT while the imports load (0.3 s) and while it works (4 s): a short message, never a
    traceback, and a non-zero exit (tests/test_reliability.py interrupts the scripts at other
    moments). The four scripts run side by side."""
    import signal
    import time
    scripts = [["sample.py", "--n", "500"], ["-m", "support.chain_rules", "--n", "200"],
               ["-m", "support.alpha_probe", "weights/policy_front.pt"],
               ["eval.py", "--sweep", "topk", "--out", str(tmp_path / "e.json")]]
    for delay in (0.3, 4.0):
        procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for argv in scripts]
        time.sleep(delay)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for argv, p in zip(scripts, procs):
            out, err = p.communicate(timeout=60)
            lines = err.strip().splitlines()
            assert p.returncode != 0 and "Traceback" not in err and len(lines) <= 1, (
                argv, delay, err[-1500:])
        (tmp_path / "e.json").unlink(missing_ok=True)


def one_line(argv, cwd=ROOT, env=None):
    out = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-1500:]
    return lines[0]


def one_lines(cases):
    """one_line over [(argv, the texts its line must hold)], the processes side by side."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        lines = list(pool.map(lambda c: one_line(c[0]), cases))
    for (argv, wants), line in zip(cases, lines):
        assert all(w in line for w in wants), (argv, line)


def test_misleading_messages_now_name_the_input(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    nan = stored(tmp_path)
    ck = torch.load(nan, weights_only=False)
    ck["policy"]["head.bias"] = torch.full_like(ck["policy"]["head.bias"], float("nan"))
    torch.save(ck, tmp_path / "nan.pt")
    ck = torch.load(os.path.join(ROOT, "weights", "policy_semi.pt"), weights_only=False)
    ck["args"]["model"] = "nonexistent_model_dir"
    torch.save(ck, tmp_path / "m.pt")
    one_lines([
        # it exists: it is not a regular file
        *[(["sample.py", "--task", "gsm8k", "--data", data, "--policies", "threshold:0.9"],
           [f"--data {data} is not a regular file"])
          for data in ("/dev/null", str(tmp_path / "fifo"))],
        # as typed
        *[(["train.py", *form, "--out", str(tmp_path / "t.pt")], ["need 0 <= LO < HI"])
          for form in (["--temperature-range", "-1,1"], ["--temperature-range=-1,1"],
                       ["--temperature-range", "-.5,1"])],
        (["train.py", "--init", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "i.pt")],
         ["--init", "weights are not finite"]),
        (["train.py", "--weight-decay", "1e30", "--out", str(tmp_path / "w.pt")],
         ["--weight-decay must be in [0, 10], not 1e+30"]),
        (["sample.py", "--policy", str(tmp_path / "m.pt")], ["the model stored in --policy"])])


def test_the_log_path_is_checked_with_the_other_files(tmp_path):
    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    shutil.copy(os.path.join(ROOT, "weights", "policy_semi.pt"), tmp_path / "a.pt")
    (tmp_path / "a.jsonl").write_text("")                              # a.pt's live log
    assert "is also --data" in one_line([os.path.join(ROOT, "train.py"), "--task", "gsm8k", "--data", "gsm.jsonl", "--out", "gsm.pt",
                                         "--model", "tiny"], cwd=tmp_path)
    assert "which is --init a.pt's log" in one_line([os.path.join(ROOT, "train.py"), "--init", "a.pt", "--out", "a.ckpt"],
                                                    cwd=tmp_path)
    os.symlink(tmp_path / "nowhere" / "x.jsonl", tmp_path / "d.jsonl")
    assert "is a link to nothing" in one_line([os.path.join(ROOT, "train.py"), "--out", "d.pt"], cwd=tmp_path)


def test_a_run_that_fails_before_its_first_checkpoint_can_be_run_again(tmp_path, monkeypatch):
    """A full disk at the first checkpoint: the run fails in one line, leaves no log, and the same command then runs."""
    import train
    args = ["--prompts-per-step", "2", "--group-size", "2", "--eval-every", "0", "--steps", "2",
            "--out", str(tmp_path / "p.pt")]
    real = train.save_checkpoint

    def full(*a, **k):
        raise OSError(f"could not write {tmp_path / 'p.pt'}: the disk is full")
    monkeypatch.setattr(train, "save_checkpoint", full)
    with pytest.raises(SystemExit, match="the disk is full"):
        train.main(args)
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "p.pt").exists()
    monkeypatch.setattr(train, "save_checkpoint", real)
    train.main(args)
    assert (tmp_path / "p.pt").exists() and len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_the_code_self_check_without_a_sandbox_is_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))      # no bwrap on the PATH
    env.pop("DLLM_UNMASK_UNSANDBOXED_CODE", None)
    assert "apt install bubblewrap" in one_line(["-m", "common.codetasks"], env=env)


def test_a_bad_flag_under_torchrun_is_said_once():
    """Each rank checks the flags; rank 0 alone says what is wrong (torchrun then reports the failed ranks itself)."""
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
                          "sample.py", "--num-problems", "0", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert out.returncode != 0 and out.stderr.count("error: --num-problems must be an integer") == 1, out.stderr[-2000:]


def test_the_heuristics_part_says_it_has_nothing_to_do(tmp_path, monkeypatch, capsys):
    from support import suite
    monkeypatch.setattr(suite, "first_rows", lambda path, compile: {})
    monkeypatch.setattr(suite, "write_settings", lambda results_dir: "")
    suite.suite(results_dir=str(tmp_path), out_dir=str(tmp_path / "out"), part="heuristics")
    assert "the heuristic rows are all in" in capsys.readouterr().out


def test_resume_of_a_checkpoint_with_a_nan_optimizer_state_names_it(tmp_path):
    import train
    out = str(tmp_path / "r.pt")
    train.main(["--prompts-per-step", "2", "--group-size", "2", "--eval-every", "0", "--steps", "1", "--out", out])
    ck = torch.load(out, weights_only=False)
    state = next(iter(ck["optimizer"]["state"].values()))
    state["exp_avg"].fill_(float("nan"))
    torch.save(ck, out)
    with pytest.raises(SystemExit, match=r"--resume .*r.pt: its optimizer's moments are not finite"):
        train.main(["--prompts-per-step", "2", "--group-size", "2", "--eval-every", "0", "--steps", "2", "--out", out,
                    "--resume"])
