"""Bad input and crashes, as a user meets them: every CLI answers each bad argument with one line starting
'error:' and a non-zero exit, before any model is loaded, and never leaves a half-written or temporary file.
kill -9 of train.py and eval.py never loses or corrupts what was written, and a rerun finishes the work."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import eval as ev
from policy import RULES
from common import runs
from support import pretrain
from support import suite as su
import sample
import train
from conftest import ROOT

SCRIPTS = {"sample": sample, "train": train, "eval": ev, "pretrain": pretrain, "suite": su}


@pytest.fixture
def files(tmp_path):
    """The bad files a user passes: a directory, an empty / foreign / truncated checkpoint, broken data files."""
    f = {"dir": tmp_path / "adir", "empty": tmp_path / "empty.pt", "foreign": tmp_path / "foreign.pt",
         "noargs": tmp_path / "noargs.pt", "binary": tmp_path / "bin.jsonl", "broken": tmp_path / "broken.jsonl",
         "nokeys": tmp_path / "nokeys.jsonl", "results": tmp_path / "notrows.json", "file": tmp_path / "afile",
         "truncated": tmp_path / "truncated.pt"}
    f["dir"].mkdir()
    f["empty"].write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, f["foreign"])
    torch.save({"policy": {}, "policy_config": {}}, f["noargs"])
    f["binary"].write_bytes(bytes(range(256)) * 4)
    f["broken"].write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    f["nokeys"].write_text('{"q": 1}\n')
    f["results"].write_text('{"not": "a list of rows"}')
    f["file"].write_text("x")
    torch.save({"policy": {"w": torch.zeros(1000)}, "policy_config": {}, "args": {}, "step": 1}, f["truncated"])
    f["truncated"].write_bytes(f["truncated"].read_bytes()[:2000])       # a checkpoint cut off mid-write
    return {k: str(v) for k, v in f.items()}


# (script, argv, what the one line must say). {name} is a path from the fixture above.
BAD = [
    # policy specs (all CLIs share the parser)
    ("sample", ["--policies", "threshold:abc"], "'abc' is not a number"),
    ("sample", ["--policies", "threshold:1.5"], "must be in (0, 1]"),
    ("sample", ["--policies", "threshold:nan"], "must be finite"),
    ("sample", ["--policies", "topk:steps=inf"], "must be finite"),
    ("sample", ["--policies", "topk:steps=2.5"], "positive integer"),
    ("sample", ["--policies", "topk:steps=0"], "positive integer"),
    ("sample", ["--policies", "eb:gamma=-1"], "gamma must be >= 0"),
    ("sample", ["--policies", "factor:-1"], "f must be >= 0"),
    ("sample", ["--policies", ",,"], "no policy in"),
    ("sample", ["--policies", "best:3"], "unknown policy"),
    ("sample", ["--policies", "topk:steps=3", "--block-length", "8"], "multiple of the 4 blocks"),
    ("sample", ["--policies", "x.pt:tau=abc"], "tau 'abc' is not a number"),
    ("sample", ["--policies", "x.pt:tau=-1"], "tau must be > 0"),
    ("sample", ["--policies", "x.pt:gamma=2"], "write it as x.pt[:tau=T][:beta=B][:alpha=A]"),
    ("sample", ["--policies", "x.pt:beta=0"], "beta must be > 0"),
    ("sample", ["--policies", "x.pt:beta=nan"], "beta must be finite"),
    ("sample", ["--policies", "{empty}"], "not a policy checkpoint written by train.py (EOFError)"),
    ("sample", ["--policies", "{foreign}"], "not a policy checkpoint written by train.py (it lacks"),
    ("sample", ["--policies", "missing.pt"], "not found"),
    ("sample", ["--policy", "{noargs}"], "it lacks ['args', 'step']"),
    # numbers
    ("sample", ["--policies", "threshold:0.9", "--n", "0"], "--num-problems must be an integer in [1, 1,000,000], not 0"),
    ("sample", ["--policies", "threshold:0.9", "--n", "-5"], "--num-problems must be an integer in [1,"),
    ("sample", ["--policies", "threshold:0.9", "--batch-size", "-1"], "--batch-size must be an integer in [1,"),
    ("sample", ["--policies", "threshold:0.9", "--batch-size", "0"], "--batch-size must be an integer in [1,"),
    ("sample", ["--policies", "threshold:0.9", "--temperature", "-1"], "--temperature must be >= 0"),
    ("sample", ["--policies", "threshold:0.9", "--temperature", "nan"], "--temperature must be >= 0, not nan"),
    ("sample", ["--policies", "threshold:0.9", "--tau", "-1"], "--tau must be > 0"),
    ("sample", ["--policies", "threshold:0.9", "--gen-length", "0"], "--gen-length must be an integer in [1,"),
    ("sample", ["--policies", "threshold:0.9", "--gen-length", "30", "--block-length", "8"], "must be a multiple"),
    ("sample", ["--policies", "threshold:0.9", "--show", "-1"], "--show must be an integer in [0,"),
    # flags that would be silently ignored
    ("sample", ["--policies", "threshold:0.9", "--tau", "0.5"], "no checkpoint is among the policies"),
    ("sample", ["--policies", "threshold:0.9", "--data", "x.jsonl"], "generated, not read"),
    # tasks, data files, output paths, devices
    ("sample", ["--policies", "threshold:0.9", "--task", "gsm9k"], "unknown task"),
    ("sample", ["--policies", "threshold:0.9", "--task", "gsm8k", "--data", "missing.jsonl"], "missing.jsonl not found"),
    ("sample", ["--policies", "threshold:0.9", "--task", "gsm8k", "--data", "{binary}"], "bin.jsonl: not a text file"),
    ("sample", ["--policies", "threshold:0.9", "--task", "gsm8k", "--data", "{broken}"], "broken.jsonl:2: not valid JSON"),
    ("sample", ["--policies", "threshold:0.9", "--task", "math500", "--data", "{nokeys}"], "nokeys.jsonl:1: a math500 row needs"),
    ("sample", ["--policies", "threshold:0.9", "--json", "{dir}"], "is a directory"),
    ("sample", ["--policies", "threshold:0.9", "--json", "{file}/r.json"], "cannot write there"),
    ("sample", ["--policies", "threshold:0.9", "--device", "tpu9"], "is not a device"),
    ("train", ["--group-size", "1"], "--group-size must be >= 2"),
    ("train", ["--group-size", "0"], "--group-size must be >= 2"),
    ("train", ["--steps", "-5"], "--steps must be >= 0"),
    ("train", ["--alpha", "-1"], "--alpha must be >= 0"),
    ("train", ["--prompts-per-step", "0"], "--prompts-per-step must be >= 1"),
    ("train", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("train", ["--batch-size", "-3"], "--batch-size must be >= 1"),
    ("train", ["--lr", "0"], "--lr must be > 0"),
    ("train", ["--clip-eps", "-0.5"], "--clip-eps must be > 0"),
    ("train", ["--temperature", "-1"], "--temperature must be >= 0"),
    ("train", ["--gen-length", "0"], "--gen-length must be > 0"),
    ("train", ["--width", "127"], "multiple of the policy's 2 attention heads"),
    ("train", ["--eval-n", "0"], "--eval-n must be >= 1"),
    ("train", ["--save-every", "0"], "--save-every must be >= 1"),
    ("train", ["--reward", "chain"], "--reward must be one of mult, additive"),
    ("train", ["--data", "x.jsonl"], "generated, not read"),
    ("train", ["--task", "gsm9k"], "unknown task"),
    ("train", ["--resume", "--out", "missing.pt"], "no checkpoint at missing.pt"),
    ("train", ["--resume", "--out", "{empty}"], "(EOFError)"),
    ("train", ["--resume", "--out", "{foreign}"], "not a policy checkpoint written by train.py"),
    ("train", ["--resume", "--out", "{noargs}"], "it lacks ['args', 'step']"),
    ("train", ["--resume", "--out", "{truncated}"], "is not a policy checkpoint written by train.py"),
    ("eval", ["--policies", "{truncated}"], "is not a policy checkpoint written by train.py"),
    ("train", ["--out", "{file}"], "exists: pass --resume"),
    ("train", ["--out", "{dir}"], "is a directory"),
    ("train", ["--out", "{file}/ckpt.pt"], "cannot write there"),
    ("eval", ["--sweep", "threshold", "--batch-size", "-1"], "--batch-size must be an integer in [1,"),
    ("eval", ["--sweep", "threshold", "--n", "0"], "--num-problems must be an integer in [1,"),
    ("eval", ["--sweep", "threshold", "--temperature", "-1"], "--temperature must be >= 0"),
    ("eval", ["--sweep", "threshold", "--gen-length", "0"], "--gen-length must be an integer in [1,"),
    ("eval", ["--sweep", "threshold", "--block-lengths", "0"], "--block-lengths must be an integer in [1,"),
    ("eval", ["--sweep", "threshold", "--block-lengths", "5"], "must be a multiple"),
    ("eval", ["--sweep", "threshold", "--taus", "0.5"], "no checkpoint is in --policies"),
    ("eval", ["--policies", "x.pt", "--taus", "0"], "--taus must be > 0"),
    ("eval", ["--policies", ",,"], "nothing to evaluate"),
    ("eval", ["--sweep", "best"], "unknown sweep"),
    ("eval", ["--policies", "threshold:2"], "must be in (0, 1]"),
    ("eval", ["--policies", "{noargs}"], "it lacks ['args', 'step']"),
    ("eval", ["--sweep", "threshold", "--out", "{dir}"], "is a directory"),
    ("eval", ["--sweep", "threshold", "--out", "{results}"], "is not a results file written by eval.py"),
    ("eval", ["--sweep", "threshold", "--data", "x.jsonl"], "generated, not read"),
    ("eval", ["--sweep", "threshold", "--task", "gsm8k", "--data", "missing.jsonl"], "missing.jsonl not found"),
    ("suite", ["--steps", "0"], "--steps must be >= 1"),
    ("suite", ["--threads", "-1"], "--threads must be in [0,"),
    ("suite", ["--part", "half"], "unknown suite part 'half'"),
    ("suite", ["--jobs", "0"], "--jobs 0: a positive count"),
    ("sample", ["--model", "gpt-17", "--policies", "threshold:0.9"], "unknown model 'gpt-17'"),
    ("sample", ["--model", "missing.pt", "--policies", "threshold:0.9"], "missing.pt not found"),
    ("train", ["--model", "gpt-17"], "unknown model 'gpt-17'"),
    ("eval", ["--model", "gpt-17", "--sweep", "eb"], "unknown model 'gpt-17'"),
    # the appendices' variants and the code tasks
    ("train", ["--actions", "gumbel"], "unknown action type 'gumbel'"),
    ("train", ["--expert", "best:1"], "unknown policy 'best:1'"),
    ("train", ["--expert", "threshold:0.9", "--expert-block-length", "5"], "must be a multiple of --block-length 5"),
    ("train", ["--expert", "threshold:0.9", "--expert-block-length", "0"], "--expert-block-length must be > 0"),
    ("train", ["--expert", "topk:steps=2", "--expert-block-length", "8"], "multiple of the 4 blocks"),
    ("train", ["--expert", "x.pt"], "the expert is a heuristic spec"),
    # a warm start over block lengths is checked at each of them, before the model loads
    ("train", ["--block-lengths", "4,8", "--imitate", "topk:steps=4"],
     "a multiple of the 8 blocks"),
    ("train", ["--expert-block-length", "8"], "pass --expert too"),
    ("train", ["--expert", "threshold:0.9", "--actions", "dpls"], "--expert needs --actions bernoulli"),
    ("train", ["--task", "humaneval", "--data", "missing.jsonl"], "HumanEval has only a test split"),
    ("sample", ["--policies", "threshold:0.9", "--task", "mbpp", "--data", "{nokeys}"], "nokeys.jsonl:1: a mbpp row needs the keys"),
    ("sample", ["--policies", "threshold:0.9", "--task", "humaneval", "--data", "{binary}"], "bin.jsonl: not a text jsonl"),
    ("sample", ["--policies", "threshold:0.9", "--task", "humaneval", "--data", "missing.jsonl"], "missing.jsonl not found"),
    ("eval", ["--sweep", "eb", "--betas", "0.5"], "no checkpoint is in --policies"),
    ("eval", ["--policies", "x.pt", "--betas", "-1"], "--betas must be > 0"),
    ("pretrain", ["--eps", "2", "--out-dir", "{dir}"], "--eps must be in (0, 1)"),
    ("pretrain", ["--steps", "0", "--out-dir", "{dir}"], "--steps must be an integer in [1,"),
    ("pretrain", ["--batch-size", "-1", "--out-dir", "{dir}"], "--batch-size must be an integer in [1,"),
    ("pretrain", ["--gen-length", "10", "--out-dir", "{dir}"], "shorter than the longest answer"),
    ("pretrain", ["--long-frac", "2", "--out-dir", "{dir}"], "--long-frac must be in [0, 1]"),
    ("pretrain", ["--lr", "0", "--out-dir", "{dir}"], "--lr must be > 0"),
    ("pretrain", ["--name", "huge", "--out-dir", "{dir}"], "unknown tiny model"),
    ("pretrain", ["--check", "tiny", "--num-problems", "-5"], "--num-problems must be an integer in [1,"),
]
if not torch.cuda.is_available():
    BAD.append(("sample", ["--policies", "threshold:0.9", "--device", "cuda"], "this machine has no CUDA device"))


def no_model(*a, **k):
    raise AssertionError("a model was loaded before the bad argument was reported")


@pytest.mark.parametrize("script,argv,msg", BAD, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD])
def test_bad_input_is_one_clear_line(script, argv, msg, files, monkeypatch, tmp_path):
    import model
    for mod in (sample, train, ev, model, su):
        monkeypatch.setattr(mod, "load_dllm", no_model)
    monkeypatch.chdir(tmp_path)                             # relative paths (missing.pt, x.jsonl) land here
    before = {p: open(p, "rb").read() for p in files.values() if os.path.isfile(p)}
    argv = [a.format(**files) for a in argv]
    with pytest.raises(SystemExit) as e:
        SCRIPTS[script].main(argv)
    text = str(e.value.code)
    assert text.startswith("error: ") and "\n" not in text and msg in text, text
    assert {p: open(p, "rb").read() for p in before} == before                         # nothing overwritten
    left = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith((".tmp", ".probe", ".jsonl")) and "broken" not in f
            and "nokeys" not in f and "bin." not in f]
    assert not left and not os.listdir(files["dir"])                                      # nothing left behind


def test_the_real_exit_code_and_no_traceback(tmp_path):
    """The same path as a user's shell: exit status 1, the line on stderr, no traceback (three scripts)."""
    for script, argv in [("sample.py", ["--policies", "threshold:abc"]), ("train.py", ["--group-size", "1"]),
                         ("eval.py", ["--sweep", "threshold", "--n", "0"])]:
        out = subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "sample.py", "--n", "abc"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "invalid int value" in out.stderr                     # argparse's own usage error


def test_models_that_cannot_be_loaded(tmp_path, tiny_path):
    from model import load_dllm
    with pytest.raises(ValueError, match="unknown model"):
        load_dllm("gpt-17", device="cpu")
    ck = torch.load(tiny_path, weights_only=True)
    ck["config"]["vocab_size"] += 5                          # a tiny model of another vocabulary
    ck["state_dict"] = {k: (torch.zeros(v.shape[0] + 5, *v.shape[1:]) if v.shape[0] == ck["config"]["vocab_size"] - 5 else v)
                        for k, v in ck["state_dict"].items()}
    torch.save(ck, tmp_path / "other_vocab.pt")
    with pytest.raises(ValueError, match="vocabulary of 41 tokens, but the tiny world's has 36"):
        load_dllm(str(tmp_path / "other_vocab.pt"), device="cpu")
    out = subprocess.run([sys.executable, "sample.py", "--model", str(tmp_path / "other_vocab.pt"), "--policies",
                          "threshold:0.9"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "vocabulary" in out.stderr and "Traceback" not in out.stderr


def test_policy_of_another_width_and_setup(tiny_path, tmp_path):
    out = str(tmp_path / "p.pt")
    cfg = dict(model=tiny_path, gen_length=16, block_length=8, prompts_per_step=2, group_size=2, steps=1,
               eval_every=0, out=out)
    train.train(train.TrainConfig(**cfg))
    for change, msg in [(dict(width=64), "width: 128 there, 64 here"), (dict(alpha=3.0), "alpha: 1.0 there, 3.0 here")]:
        with pytest.raises(SystemExit, match=msg):
            train.main([f"--{k}" for k in ("resume",)] + sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in
                                                                {**cfg, **change}.items()), []))
    ck = torch.load(out, weights_only=True)
    ck["policy_config"]["width"] = 64                       # weights of width 128 under a config that says 64
    torch.save(ck, tmp_path / "bad.pt")
    from decode import load_policy
    with pytest.raises(ValueError, match="do not match its policy config") as e:
        load_policy(str(tmp_path / "bad.pt"))
    assert "\n" not in str(e.value)


def test_a_failed_run_leaves_no_log_and_resume_trims_the_log(tmp_path):
    out = tmp_path / "run" / "ckpt.pt"
    (tmp_path / "garbage.pt").write_bytes(b"not a model")                # fails at load, after every check passed
    with pytest.raises(SystemExit, match="is not a tiny dLLM checkpoint"):
        train.main(["--model", str(tmp_path / "garbage.pt"), "--out", str(out)])
    assert not (tmp_path / "run" / "ckpt.jsonl").exists()
    log = tmp_path / "l.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4, 5)) + '{"step": 6, "rew')
    runs.truncate_log(str(log), 3)
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == [1, 2, 3]


def kill_when(proc, ready, timeout=120):
    """kill -9 `proc` as soon as ready() holds (or it ends); True if it was killed mid-run."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    return False


@pytest.mark.parametrize("kill_after", [1, 3])
def test_kill_9_train_then_resume(tiny_path, tmp_path, kill_after):
    """kill -9 right after the kill_after-th checkpoint: the checkpoint is whole, resume finishes, and the log
    reads each step once."""
    from common.checkpoints import read_checkpoint
    out = str(tmp_path / "k.pt")
    argv = [sys.executable, "train.py", "--model", tiny_path, "--gen-length", "16", "--block-length", "8",
            "--prompts-per-step", "2", "--group-size", "2", "--steps", "6", "--save-every", "1", "--eval-every", "0",
            "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    saved = lambda: os.path.exists(out) and read_step(out) >= kill_after
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, saved)
    ck = read_checkpoint(out)                                # whole, whatever the moment of the kill
    assert kill_after <= ck["step"] <= 6
    done = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(out)["step"] == 6 and not list(tmp_path.glob("*.tmp"))     # a killed save's file too
    steps = [json.loads(l)["step"] for l in open(tmp_path / "k.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6], steps


def read_step(path):
    try:
        return torch.load(path, weights_only=True)["step"]
    except Exception:
        return -1


@pytest.mark.parametrize("rows_before_kill", [1, 4])
def test_kill_9_eval_then_rerun(tiny_path, tmp_path, rows_before_kill):
    out = tmp_path / "rows.json"
    argv = [sys.executable, "eval.py", "--model", tiny_path, "--gen-length", "16", "--block-lengths", "8,16",
            "--sweep", "threshold", "--n", "8", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def rows():
        try:
            return len(json.loads(out.read_text()))
        except (OSError, ValueError):
            return 0
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: rows() >= rows_before_kill)
    kept = json.loads(out.read_text())                       # always valid JSON: the old list or the new one
    assert len(kept) >= rows_before_kill
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = json.loads(out.read_text())
    keys = [ev.row_key(r) for r in final]
    assert len(final) == 2 * len(RULES["threshold"].args[0].grid) == len(set(keys))    # every row once
    assert all(r in final for r in kept) and not list(tmp_path.glob("*.tmp"))


def test_missing_output_folder_is_created(tiny_path, tmp_path):
    rows = sample.main(["--model", tiny_path, "--policies", "threshold:0.9", "--n", "4",
                        "--json", str(tmp_path / "new" / "dir" / "r.json")])
    assert json.load(open(tmp_path / "new" / "dir" / "r.json")) == rows


def train_argv(tiny_path, out, steps):
    return [sys.executable, "train.py", "--model", tiny_path, "--gen-length", "16", "--block-length", "8",
            "--prompts-per-step", "2", "--group-size", "2", "--steps", str(steps), "--save-every", "50",
            "--eval-every", "0", "--out", out]


def test_ctrl_c_saves_the_current_step_and_resumes(tiny_path, tmp_path):
    """SIGINT during training: one line, no traceback, exit 130, a checkpoint of the step it was in (save-every is
    50, so only the interrupt wrote it), and --resume finishes the run with a log of each step once."""
    import signal
    from common.checkpoints import read_checkpoint
    out, log = str(tmp_path / "c.pt"), tmp_path / "c.jsonl"
    argv = train_argv(tiny_path, out, 40)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) >= 2) and time.time() - t0 < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted: saved" in stdout and "--resume" in stdout, stdout
    step = read_checkpoint(out)["step"]
    assert 2 <= step < 40 and not os.path.exists(out + ".tmp")
    done = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(out)["step"] == 40
    assert [json.loads(l)["step"] for l in open(log)] == list(range(1, 41))


def test_two_trainings_into_one_checkpoint_cannot_both_run(tiny_path, tmp_path):
    """Two real train.py processes started at once with the same --out: one trains, the other is refused in one
    line (non-zero exit); the checkpoint and its log hold the one run, each step once."""
    from common.checkpoints import read_checkpoint
    out = str(tmp_path / "x.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(train_argv(tiny_path, out, 6) + ["--seed", str(s)], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in (1, 2)]
    res = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in res)
    assert codes[0] == 0 and codes[1] != 0, res
    loser = next(r for r in res if r[0] != 0)
    assert ("another run is writing --out" in loser[2] or "exists: pass --resume" in loser[2]) \
        and "Traceback" not in loser[2], loser[2]
    winner_seed = read_checkpoint(out)["args"]["seed"]
    assert [json.loads(l)["step"] for l in open(tmp_path / "x.jsonl")] == [1, 2, 3, 4, 5, 6]
    from test_eval import free
    assert winner_seed in (1, 2) and free(out + ".lock")


def test_two_evals_into_one_results_file_keep_every_row(tiny_path, tmp_path):
    """Two real eval.py processes at once, same --out, different seeds: every row of both ends up in the file."""
    out = tmp_path / "res.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, "eval.py", "--model", tiny_path, "--gen-length", "16", "--block-lengths", "8",
            "--sweep", "threshold", "--n", "8", "--out", str(out)]
    procs = [subprocess.Popen(argv + ["--seeds", str(s)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    rows = json.loads(out.read_text())
    assert sorted({r["seed"] for r in rows}) == [0, 1]
    assert len(rows) == 2 * len(RULES["threshold"].args[0].grid) == len({ev.row_key(r) for r in rows})
