"""Code tasks (codetasks.py): the official HumanEval / MBPP layouts, prompts, code extraction, and a grader that no
program - wrong, broken, looping, allocating, forking, shelling out, exiting early - can take down."""
import json
import time

import pytest

from common import codetasks
from common.codetasks import extract_code, run_program
from tasks import get_problems, grade, grade_many

ADD = 'def add(a, b):\n    """Return a + b.\n    >>> add(2, 3)\n    5\n    """\n'
HUMANEVAL = [
    dict(task_id="HumanEval/0", prompt=ADD, canonical_solution="    return a + b\n", entry_point="add",
         test="\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"),
    dict(task_id="HumanEval/1", prompt="def double(x):\n    \"\"\"Twice x.\"\"\"\n", canonical_solution="    return 2 * x\n",
         entry_point="double", test="def check(candidate):\n    assert candidate(4) == 8\n"),
]


def mbpp_row(i, text, code, tests, setup=""):
    return dict(task_id=i, text=text, code=code, test_list=tests, test_setup_code=setup, challenge_test_list=[])


MBPP = [mbpp_row(2, "Write a function to find the shared elements of two lists.", "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
                 ["assert set(similar_elements((3, 4), (4, 5))) == {4}"]),
        mbpp_row(3, "Write a function to identify non-prime numbers.", "def is_not_prime(n):\n    return n < 2 or any(n % d == 0 for d in range(2, n))",
                 ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"]),
        mbpp_row(4, "Write a function to find the n largest integers.", "def heap_queue_largest(xs, n):\n    return sorted(xs)[::-1][:n]",
                 ["assert heap_queue_largest([1, 5, 3], 2) == [5, 3]"]),
        mbpp_row(11, "Write a function to square a number.", "def square(x):\n    return x * x",
                 ["assert square(3) == 9", "assert square(-2) == OFFSET + 4"], setup="OFFSET = 0"),
        mbpp_row(12, "Write a function to negate a number.", "def neg(x):\n    return -x", ["assert neg(3) == -3"]),
        mbpp_row(700, "Write a function to add one.", "def inc(x):\n    return x + 1", ["assert inc(1) == 2"])]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def humaneval(tmp_path):
    return get_problems("humaneval", data=write_jsonl(tmp_path / "HumanEval.jsonl", HUMANEVAL))


@pytest.fixture
def mbpp(tmp_path):
    return get_problems("mbpp", data=write_jsonl(tmp_path / "mbpp.jsonl", MBPP))


def test_humaneval_prompt_and_grading(humaneval):
    p = humaneval[0]
    assert p.question.startswith(codetasks.HUMANEVAL_INSTRUCTION + "\n```python\n" + ADD) and p.system == ""
    assert p.prefix == "Here is the completed function:\n```python\n" + ADD and p.gold.endswith("check(add)\n")
    right, wrong = "    return a + b\n```\nDone.", "    return a - b\n```"
    assert grade("humaneval", p, right) and not grade("humaneval", p, wrong)
    assert grade("humaneval", p, "    return a + b\n")                 # a fence never closed runs to the end
    assert not grade("humaneval", p, "    return a +\n```")             # syntax error
    assert grade_many("humaneval", [p, p, humaneval[1]], [right, wrong, "    return 2 * x\n```"]) == [True, False, True]


def test_mbpp_three_shot_prompt_and_splits(mbpp, tmp_path):
    assert [p.reference.split("(")[0] for p in mbpp] == ["def square", "def neg"]      # the test split: ids 11-510
    q = mbpp[0].question
    assert q.count("You are an expert Python programmer") == 4 and q.count("```python\n") == 3   # 3 shots + the task
    assert q.index("similar_elements") < q.index("is_not_prime") < q.index("heap_queue") < q.index("square a number")
    assert mbpp[0].prefix == "```python\n" and mbpp[0].gold.startswith("OFFSET = 0\n")
    assert grade("mbpp", mbpp[0], "def square(x):\n    return x ** 2\n```") and not grade("mbpp", mbpp[0], "def square(x):\n    return x\n```")
    assert [p.reference for p in get_problems("mbpp", split="train", data=str(tmp_path / "mbpp.jsonl"))] == [MBPP[-1]["code"]]
    with pytest.raises(ValueError, match="needs task_ids \\(2, 3, 4\\)"):
        get_problems("mbpp", data=write_jsonl(tmp_path / "no_shots.jsonl", MBPP[3:]))
    with pytest.raises(ValueError, match="HumanEval has only a test split"):
        get_problems("humaneval", split="train", data=str(tmp_path / "no_shots.jsonl"))


def test_bad_code_data_files(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"task_id": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: a humaneval row needs the keys"):
        get_problems("humaneval", data=str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad2.jsonl").write_text(json.dumps(mbpp_row(2, "t", "c", "assert 1")) + "\n")
    with pytest.raises(ValueError, match="'test_list' must be a list of strings"):
        get_problems("mbpp", data=str(tmp_path / "bad2.jsonl"))
    with pytest.raises(FileNotFoundError, match="not found"):
        get_problems("mbpp", data=str(tmp_path / "none.jsonl"))
    for task, row, why in [("mbpp", mbpp_row(11, "t", "c", []), "'test_list' is empty"),          # every program
                           ("mbpp", mbpp_row(11, "t", "c", ["  "]), "'test_list' is empty"),        # would pass
                           ("humaneval", dict(HUMANEVAL[0], test=""), "'test' is empty"),            # every program
                           ("humaneval", dict(HUMANEVAL[0], entry_point=" "), "'entry_point' is empty")]:   # fail
        (tmp_path / "t.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=why):
            codetasks.read_code_jsonl(str(tmp_path / "t.jsonl"), task)


def test_extract_code():
    assert extract_code("Sure:\n```python\nx = 1\n```\nand\n```python\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"
    assert extract_code("w = 4") == "w = 4"


@pytest.mark.parametrize("code,tests,status", [
    ("def f():\n    return 2", "assert f() == 2", "passed"),
    ("def f():\n    return 3", "assert f() == 2", "failed"),
    ("def f(:\n    pass", "assert f() == 2", "failed"),                       # syntax error
    ("import sys\nsys.exit(0)", "assert False", "failed"),                    # exits 0 before its tests: not a pass
    ("import os\nos._exit(0)", "", "failed"),
    ("raise SystemExit(3)", "", "failed"),
    ("def f():\n    raise ValueError('no')", "assert f() == 1", "failed"),
    ("x = bytearray(8 * 2 ** 30)", "", "failed"),                             # 8 GiB: over the memory limit
    ("x = [0] * (2 ** 33)", "", "failed"),
    ("import os\nwhile True:\n    os.fork()", "", "failed"),                  # a fork bomb stops at the process limit
    ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", "", "failed"),   # no network
    ("while True:\n    pass", "", "timeout"),
    ("import time\ntime.sleep(100)", "", "timeout"),
    ("def f():\n    return iter([1, 2])", "assert f() == [1, 2]", "passed"),    # an iterator comes back as a list
    ("def f():\n    return {1: {2, 3}}", "assert f() == {1: {2, 3}}", "passed"),
    ("class A:\n    pass\ndef f():\n    return A()", "assert f() is not None", "failed"),   # only plain data comes back
])
def test_sandbox_cases(code, tests, status):
    t0 = time.time()
    ok, got = run_program(code, tests, timeout=2.0)
    assert got == status and ok == (status == "passed"), (code, got)
    assert time.time() - t0 < 15                                             # within the limits, never hung


needs_isolation = pytest.mark.skipif(not codetasks.shutil.which("bwrap"), reason="needs bubblewrap (.ci/run installs it)")


@needs_isolation
def test_generated_code_cannot_touch_files_outside_its_folder(tmp_path):
    import os
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for code in (f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
                 f"import builtins\nbuiltins.open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
                 f"import posix\nposix.unlink({str(keep)!r})",
                 f"import os\nos.rename({str(keep)!r}, {str(tmp_path / 'moved')!r})",
                 "open('/etc/dllm_unmask_pwned', 'w')",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})"):
        ok, _ = run_program(code + "\ndef f():\n    return 1", "assert f() == 1")
        assert not ok, code
    assert keep.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["keep.txt"]
    assert not os.path.exists("/etc/dllm_unmask_pwned")
    ok, _ = run_program("open('local.txt', 'w').write('y')\ndef f():\n    return open('local.txt').read()", "assert f() == 'y'")
    assert ok                                                       # its own folder is writable
    ok, _ = run_program(f"import os\ndef f():\n    return os.path.exists({str(tmp_path)!r})", "assert not f()")
    assert ok                                                       # and nothing else of the machine's files is there


@needs_isolation
def test_generated_code_has_no_network():
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(6)
    port, seen = server.getsockname()[1], []

    def listen():
        try:
            seen.append(server.accept())
        except OSError:                                             # closed (or timed out) with nothing seen
            pass
    threading.Thread(target=listen, daemon=True).start()
    for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
                 f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))"):
        assert not run_program(code + "\ndef f():\n    return 1", "assert f() == 1")[0]
    time.sleep(0.5)
    assert not seen                                                 # the listener never saw a connection
    server.close()


def processes_with(marker):
    import os
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker in open(f"/proc/{p}/cmdline", "rb").read():
                    found.append(p)
            except OSError:
                pass
    return found


@needs_isolation
def test_generated_code_cannot_leave_processes_behind():
    """A child that calls setsid() and execs a long sleep, by os.fork, posix.fork or ctypes: all gone when the grader
    returns (the sandbox's PID namespace ends with it)."""
    for fork in ("os.fork()", "posix.fork()", "ctypes.CDLL(None).fork()"):
        code = (f"import os, posix, ctypes\nif {fork} == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '987.6'])\n"
                f"def f():\n    return 1")
        run_program(code, "assert f() == 1", timeout=3.0)
        time.sleep(0.3)
        assert not processes_with(b"987.6"), fork


@needs_isolation
@pytest.mark.parametrize("code", [
    "print('PASS')",
    "import os\nos.write(1, b'PASS')\nos._exit(0)",
    "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'PASS')\n    except OSError:\n        pass",
    "import os, sys\nsys.stdout = open('/proc/self/fd/1', 'w')\nprint('PASS', flush=True)\nos._exit(0)",
    "import glob, os\nseen = [open(p).read() for p in glob.glob('/work/*') + glob.glob('/tmp/**', recursive=True)\n"
    "        if os.path.isfile(p)]\nprint(seen)\nraise SystemExit(0)",
])
def test_the_verdict_cannot_be_forged(code):
    """Only the test process outside the sandbox reports a pass; the program's output goes nowhere."""
    assert run_program(code + "\ndef f():\n    return 1", "assert f() == 2")[1] == "failed"


def test_without_isolation_generated_code_runs_only_when_asked(monkeypatch):
    monkeypatch.setattr(codetasks.shutil, "which", lambda name: None)
    monkeypatch.delenv(codetasks.UNSANDBOXED, raising=False)
    codetasks.isolation.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="install bubblewrap .*apt install bubblewrap.* or set DLLM_UNMASK_UNSANDBOXED_CODE=1"):
            run_program("def f():\n    return 1", "assert f() == 1")
        codetasks.isolation.cache_clear()
        monkeypatch.setenv(codetasks.UNSANDBOXED, "1")
        assert run_program("def f():\n    return 1", "assert f() == 1") == (True, "passed")
    finally:
        codetasks.isolation.cache_clear()


def test_parallel_grading_uses_the_cores(humaneval):
    """Four programs that sleep 1.5 s each, graded on 4 workers, take about 1.5 s, not 6 (a behaviour check with a
    generous bound, not a benchmark)."""
    p = humaneval[1]
    slow = "    import time\n    time.sleep(1.5)\n    return 2 * x\n```"
    t0 = time.time()
    assert codetasks.grade_code_many([p] * 4, [slow] * 4, workers=4) == [True] * 4
    assert time.time() - t0 < 5.0


def test_sample_runs_humaneval_end_to_end(llada_dir, tmp_path):
    """python sample.py --model <fixture> --task humaneval --data ...: a random model writes no working code, and the
    command runs, grades and reports."""
    import sample
    data = write_jsonl(tmp_path / "HumanEval.jsonl", HUMANEVAL)
    rows = sample.main(["--model", llada_dir, "--task", "humaneval", "--data", data, "--policies", "threshold:0.9",
                        "--gen-length", "16", "--block-length", "8", "--n", "2"])
    assert rows[0]["n"] == 2 and rows[0]["accuracy"] == 0.0 and rows[0]["mean_nfe"] >= 2


def test_self_check_command(capsys):
    """python codetasks.py: every hazard gets its expected status, and right programs pass in parallel."""
    assert codetasks.self_check(n=8)
    out = capsys.readouterr().out
    assert out.count("(expected") == len(codetasks.HAZARDS) and "8 right programs on" in out and "8 passed" in out
    assert "isolation: bwrap" in out or not codetasks.shutil.which("bwrap")


def test_train_on_mbpp_with_an_expert_and_dpls_on_a_real_layout(llada_dir, tmp_path):
    """The real-model path of the appendices: GRPO on the LLaDA-layout fixture with MBPP's train split (programs graded
    in the sandbox as rewards), with expert steering, and with DPLS actions."""
    import train
    data = write_jsonl(tmp_path / "mbpp.jsonl", MBPP)
    base = dict(model=llada_dir, task="mbpp", data=data, gen_length=8, block_length=4, prompts_per_step=1,
                group_size=2, steps=1, eval_every=0, batch_size=4)
    _, m = train.train(train.TrainConfig(out=str(tmp_path / "es.pt"), expert="threshold:0.9", **base))
    assert m["accuracy"] == 0.0 and "expert_nfe" in m and 1 <= m["nfe"] <= 8      # a random model writes no working code
    _, m = train.train(train.TrainConfig(out=str(tmp_path / "dpls.pt"), actions="dpls", **base))
    assert 1 <= m["nfe"] <= 8



@needs_isolation
def test_the_sandbox_runs_a_python_that_lives_under_the_temp_folder(tmp_path):
    """A venv under the system temp folder (as CI systems make them): its interpreter stays visible in the sandbox
    (the sandbox's own /tmp is mounted first), the probe runs it on a real program, and programs grade right."""
    import subprocess
    import sys
    from conftest import ROOT
    venv = tmp_path / "venv"
    assert str(venv).startswith(__import__("tempfile").gettempdir())
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from common.codetasks import isolation, run_program\n"
            "print(isolation(), run_program('def f():\\n    return 2', 'assert f() == 2')[1],\n"
            "      run_program('def f():\\n    return 3', 'assert f() == 2')[1])") % ROOT
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["bwrap", "passed", "failed"], out.stderr[-2000:]


@needs_isolation
def test_a_reply_cannot_make_the_tests_process_allocate(tmp_path):
    """The program may replace pickle.dumps and send a 20-byte reply that unpickles into bytearray(3 GiB): the tests'
    process outside the sandbox is bounded (RUNNER_MB), so the reply fails instead of growing the host's memory."""
    import resource
    evil = b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\xc0\x00\x85R."   # bytearray(3 * 2 ** 30)
    code = f"import pickle\npickle.dumps = lambda *a, **k: {evil!r}\ndef f():\n    return 1\n"
    t0 = time.time()
    assert run_program(code, "assert f() == 1") == (False, "failed")
    assert time.time() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < codetasks.RUNNER_MB * 1024 + 2 ** 20   # KB


@needs_isolation
def test_the_sandbox_bounds_what_a_program_writes(tmp_path):
    """Its writable places are two tmpfs of DISK_MB each: a program that writes as much as it can, in one file and
    in many, stops there, and nothing lands on the host's disk."""
    code = ("import os\n"
            "def f(where):\n"
            "    n = 0\n"
            "    try:\n"
            "        with open(os.path.join(where, 'big'), 'wb') as fh:\n"
            "            for _ in range(1024):\n"
            "                fh.write(b'x' * 2 ** 20); fh.flush(); n += 2 ** 20\n"
            "    except OSError:\n"
            "        pass\n"
            "    try:\n"
            "        for i in range(200):\n"
            "            with open(os.path.join(where, f'f{i}'), 'wb') as fh:\n"
            "                fh.write(b'y' * 2 ** 20)\n"
            "            n += 2 ** 20\n"
            "    except OSError:\n"
            "        pass\n"
            "    return n\n")
    bound = codetasks.DISK_MB * 2 ** 20
    assert run_program(code, f"assert f('/work') <= {bound}\nassert f('/tmp') <= {bound}")[1] == "passed"
    assert run_program(code, f"assert f('/work') > {bound}")[1] == "failed"


@needs_isolation
@pytest.mark.skipif(__import__("os").getuid() == 0, reason="as root the sandbox makes no user namespace to close")
def test_no_nested_user_namespaces():
    code = ("import ctypes\ndef f():\n    return ctypes.CDLL(None, use_errno=True).unshare(0x10000000)\n")   # CLONE_NEWUSER
    assert run_program(code, "assert f() == -1")[1] == "passed"
