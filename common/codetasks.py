"""
Code tasks, the paper's out-of-domain experiment: HumanEval (164 problems) and MBPP (its 500-problem test split),
and the grader that runs generated programs. A file of its own because running untrusted code is its own concept:
the program is executed with the problem's tests in a separate Python process, with

  a time limit (default 10 s, wall clock; the whole process group is killed), a memory limit (address space,
  default 1 GiB), a bound on what it may write (16 MiB), no core dumps, a fresh temporary working directory,
  an environment of only PATH, HOME, TMPDIR, LANG and PYTHONHASHSEED, `python -I` (no user site, no PYTHON*
  variables), no stdin, and - before the program runs - process creation (os.system, fork, exec, spawn,
  subprocess), sockets and file removal refused, as HumanEval's own reliability guard does.

pass@1 = the tests exit 0 *and* the driver's closing line (a random nonce) is printed, so a program that calls
sys.exit(0) before its tests does not pass. This is a guard against accidents, not a security boundary: run
model-written code for real in a container without network. Grading a batch uses the cores in parallel.

Prompts (the paper's protocol): HumanEval zero-shot, "Write a solution to the following problem and make sure
that it passes the tests:" and the prompt in a python fence, the answer prefilled with "Here is the completed
function:" and the prompt (imports, signature, docstring) opening a python fence; MBPP three-shot from its prompt
split (task_ids 2, 3, 4, as the MBPP paper), each shot's code in a python fence, the answer prefilled with the
fence's opening. The code graded is the first python fence of prefill + generation, else the whole text.

    python tasks.py --task humaneval --n 2 --data HumanEval.jsonl       # print prompts and the test programs
    python -m common.codetasks                 # check the grader on this machine: each hazard below, and its throughput
"""
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from common.data import CACHE, Problem, fetch_once, jsonl_rows

HUMANEVAL_URL = "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz"
MBPP_URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
HUMANEVAL_INSTRUCTION = "Write a solution to the following problem and make sure that it passes the tests:"
HUMANEVAL_PREFILL = "Here is the completed function:\n"
MBPP_SHOTS = (2, 3, 4)                         # the MBPP paper's few-shot examples (the prompt split is ids 1-10)
MBPP_SPLITS = dict(test=range(11, 511), train=range(601, 975), validation=range(511, 601), prompt=range(1, 11))
NEED = dict(humaneval=("task_id", "prompt", "test", "entry_point"), mbpp=("task_id", "text", "code", "test_list"))
TIMEOUT_S, MEMORY_MB, OUTPUT_MB = 10.0, 1024, 16


# ----------------------------------------------------------------------------------------------------
# problems and prompts

def test_list_check(row):
    ok = isinstance(row["test_list"], list) and all(isinstance(t, str) for t in row["test_list"])
    return None if ok else "'test_list' must be a list of strings"


def read_code_jsonl(path, task):
    """The official jsonl (HumanEval.jsonl[.gz], mbpp.jsonl) -> rows, each checked; one clear error on bad input."""
    return jsonl_rows(path, task, NEED[task], test_list_check if task == "mbpp" else None, official=True)


def humaneval_problem(row):
    q = f"{HUMANEVAL_INSTRUCTION}\n```python\n{row['prompt']}\n```"
    gold = f"{row['test']}\n\ncheck({row['entry_point']})\n"
    return Problem(q, gold, row["prompt"] + row.get("canonical_solution", ""), system="",
                prefix=f"{HUMANEVAL_PREFILL}```python\n{row['prompt']}")


def mbpp_question(row):
    tests = "\n".join(row["test_list"])
    return f"You are an expert Python programmer, and here is your task: {row['text']} Your code should pass these tests:\n\n{tests}\n"


def mbpp_problems(rows, split):
    """The split's problems (by task_id, as the official file is one list), each after the three shots."""
    by_id = {int(r["task_id"]): r for r in rows}
    missing = [i for i in MBPP_SHOTS if i not in by_id]
    if missing:
        raise ValueError(f"mbpp: the three-shot prompt needs task_ids {MBPP_SHOTS} (the prompt split) in the data; "
                         f"missing {missing}")
    shots = "\n".join(f"{mbpp_question(by_id[i])}```python\n{by_id[i]['code']}\n```\n" for i in MBPP_SHOTS)
    chosen = [by_id[i] for i in sorted(by_id) if i in MBPP_SPLITS[split]]
    if not chosen:
        raise ValueError(f"mbpp: no rows of the {split} split (task_ids {MBPP_SPLITS[split].start}-"
                         f"{MBPP_SPLITS[split].stop - 1}) in the data")
    return [Problem(f"{shots}\n{mbpp_question(r)}", f"{r.get('test_setup_code', '')}\n" + "\n".join(r["test_list"]) + "\n",
                 r["code"], system="", prefix="```python\n") for r in chosen]


def code_problems(task, split, data):
    """Problems of a code task: the question, the test program as gold, the reference solution, and the prefill."""
    if task == "humaneval" and split != "test":
        raise ValueError("HumanEval has only a test split (the paper evaluates code out of domain)")
    url = HUMANEVAL_URL if task == "humaneval" else MBPP_URL
    rows = read_code_jsonl(data or fetch_once(url, os.path.join(CACHE, os.path.basename(url)), task), task)
    if task == "humaneval":
        return [humaneval_problem(r) for r in rows]
    return mbpp_problems(rows, split)


# ----------------------------------------------------------------------------------------------------
# grading: run the program with its tests

FENCE = re.compile(r"```[ \t]*(?:python|py)[ \t]*\n(.*?)(?:```|\Z)", re.S)
ANY_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text):
    """The first python fence (closed or running to the end), else the first fence, else the text."""
    m = FENCE.search(text) or ANY_FENCE.search(text)
    return m.group(1) if m else text


DRIVER = r'''
import builtins, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
resource.setrlimit(resource.RLIMIT_FSIZE, ({out}, {out}))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))   # no new processes (not enforced for root: the guard below is)
except (ValueError, OSError):
    pass
src = open("program.py", encoding="utf-8").read()


def refused(name):
    def f(*a, **k):
        raise PermissionError(name + " is disabled while grading")
    return f


import shutil, socket, subprocess
for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execvpe", "execl",
             "execle", "execlp", "execlpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
             "spawnvpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
             "replace", "truncate", "putenv", "setuid", "setgid", "chmod", "chown"):
    if hasattr(os, name):
        setattr(os, name, refused("os." + name))
for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, name, refused("subprocess." + name))
for name in ("rmtree", "move", "chown"):
    setattr(shutil, name, refused("shutil." + name))
socket.socket = refused("socket.socket")
socket.create_connection = refused("socket.create_connection")
exec(compile(src, "program.py", "exec"), {{"__name__": "__main__", "__builtins__": builtins}})
sys.stdout.flush()
sys.stdout.write("\n{nonce}\n")
sys.stdout.flush()
'''


def run_program(code, timeout=TIMEOUT_S, memory_mb=MEMORY_MB):
    """Run one program (solution + tests) in a fresh process under the limits above -> (passed, status) with status
    one of passed, failed (non-zero exit, killed by a limit, or exited before the tests finished), timeout."""
    nonce = secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="dllm-unmask-code-") as d:
        with open(os.path.join(d, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with open(os.path.join(d, "driver.py"), "w", encoding="utf-8") as f:
            f.write(DRIVER.format(mem=memory_mb * 2 ** 20, out=OUTPUT_MB * 2 ** 20, cpu=int(timeout) + 1, nonce=nonce))
        env = dict(PATH=os.defpath, HOME=d, TMPDIR=d, LANG="C.UTF-8", PYTHONHASHSEED="0")
        with open(os.path.join(d, "out.txt"), "wb") as out:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "driver.py"], cwd=d, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc, status = proc.wait(timeout=timeout), None
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            finally:
                try:
                    os.killpg(proc.pid, 9)   # the program's whole process group, whatever it left behind
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        if status:
            return False, status
        with open(os.path.join(d, "out.txt"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 64))
            tail = f.read().decode("utf-8", "replace")
    ok = rc == 0 and tail.rstrip().endswith(nonce)
    return ok, "passed" if ok else "failed"


def program_of(problem, response):
    """What runs: the code of prefill + generation, then the problem's tests."""
    return extract_code((problem.prefix or "") + response) + "\n\n" + problem.gold


def grade_code(problem, response, timeout=TIMEOUT_S):
    return run_program(program_of(problem, response), timeout)[0]


def grade_code_many(problems, responses, workers=None, timeout=TIMEOUT_S):
    """[bool] for a batch, the programs run in parallel (one process each, up to the machine's cores)."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pr: grade_code(*pr, timeout=timeout), zip(problems, responses)))


# What the grader must survive, with the status it must give (tests/test_code.py runs these and more).
HAZARDS = [("a right program", "assert 1 + 1 == 2", "passed"),
           ("a wrong one", "assert 1 + 1 == 3", "failed"),
           ("a syntax error", "def f(:\n    pass", "failed"),
           ("sys.exit(0) before its tests", "import sys\nsys.exit(0)\nassert False", "failed"),
           ("8 GiB allocated", "x = bytearray(8 * 2 ** 30)", "failed"),
           ("os.system", "import os\nos.system('echo hi')", "failed"),
           ("a fork bomb", "import os\nwhile True:\n    os.fork()", "failed"),
           ("a socket", "import socket\nsocket.socket()", "failed"),
           ("unbounded output", "while True:\n    print('x' * 10000)", "failed"),
           ("an infinite loop", "while True:\n    pass", "timeout")]


def self_check(n=164, timeout=2.0):
    """Run every hazard (with a short time limit), then n right programs in parallel; print what happened."""
    ok = True
    for what, code, want in HAZARDS:
        t = time.time()
        got = run_program(code, timeout)[1]
        ok &= got == want
        print(f"{what:30s} {got:8s} (expected {want}) {time.time() - t:5.2f} s")
    t = time.time()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        passed = sum(ok for ok, _ in pool.map(lambda i: run_program(f"assert sum(range({i})) == {i * (i - 1) // 2}"), range(n)))
    print(f"{n} right programs on {os.cpu_count()} cores: {passed} passed in {time.time() - t:.1f} s")
    return ok and passed == n


if __name__ == "__main__":
    sys.exit(0 if self_check() else 1)
