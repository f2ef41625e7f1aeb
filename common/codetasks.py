"""
Code tasks, the paper's out-of-domain experiment: HumanEval (164 problems) and MBPP (its 500-problem test split),
and the grader that runs generated programs. A file of its own because running untrusted code is its own concept.

The program runs in a bubblewrap sandbox (bwrap_args): its own PID, network, IPC and UTS namespaces, a filesystem of
read-only system and Python directories with a private /tmp and its folder the only writable place, an unprivileged
uid, limits on processes, address space, file size and CPU time, and no terminal (its parent, the runner, starts
without one and every stream is a pipe). A wall-clock limit (default 10 s) kills the runner's process group, and the
sandbox dies with it. The program's top-level functions are called over a pipe by its tests, which run in a separate
process outside the sandbox (RUNNER) and alone print the verdict; values come back through an unpickler that builds
only plain data, so nothing the program prints or does passes it without its tests. Without bubblewrap generated
code does not run unless DLLM_UNMASK_UNSANDBOXED_CODE=1 (resource limits only). Grading a batch uses the cores in
parallel.

Prompts (the paper's protocol): HumanEval zero-shot, "Write a solution to the following problem and make sure
that it passes the tests:" and the prompt in a python fence, the answer prefilled with "Here is the completed
function:" and the prompt (imports, signature, docstring) opening a python fence; MBPP three-shot from its prompt
split (task_ids 2, 3, 4, as the MBPP paper), each shot's code in a python fence, the answer prefilled with the
fence's opening. The code graded is the first python fence of prefill + generation, else the whole text.

    python tasks.py --task humaneval --n 2 --data HumanEval.jsonl       # print prompts and the test programs
    python -m common.codetasks                 # check the grader on this machine: each hazard below, and its throughput
"""
import ast
import functools
import json
import os
import re
import shutil
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
DISK_MB = 64          # each of the sandbox's two writable places (/tmp, /work) is a tmpfs of this size
RUNNER_MB = 2048      # the address space of the tests' process outside the sandbox (it decodes the program's replies)


# ----------------------------------------------------------------------------------------------------
# problems and prompts

def test_list_check(row):
    ok = isinstance(row["test_list"], list) and all(isinstance(t, str) for t in row["test_list"])
    if not ok:
        return "'test_list' must be a list of strings"
    return None if any(t.strip() for t in row["test_list"]) else "its 'test_list' is empty: every program would pass"


def humaneval_check(row):
    for k in ("test", "entry_point", "prompt"):
        if not isinstance(row[k], str) or not row[k].strip():
            return f"its '{k}' is empty or not a string: nothing to grade with"
    return None


def read_code_jsonl(path, task):
    """The official jsonl (HumanEval.jsonl[.gz], mbpp.jsonl) -> rows, each checked (a row without tests is refused:
    it would grade every program the same); one clear error on bad input."""
    return jsonl_rows(path, task, NEED[task], test_list_check if task == "mbpp" else humaneval_check, official=True)


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
# grading: the program in an isolated sandbox, its tests outside it

FENCE = re.compile(r"```[ \t]*(?:python|py)[ \t]*\n(.*?)(?:```|\Z)", re.S)
ANY_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
UNSANDBOXED = "DLLM_UNMASK_UNSANDBOXED_CODE"    # =1: run generated code without isolation (rlimits only; not safe)
NOBODY = 65534                                  # the uid generated code runs as when the grader is root
PROCESSES = 256                                 # at most this many processes of that uid (a fork bomb stops there)
MESSAGE_MB = 64                                 # the largest call result the tests accept from the program


def extract_code(text):
    """The first python fence (closed or running to the end), else the first fence, else the text."""
    m = FENCE.search(text) or ANY_FENCE.search(text)
    return m.group(1) if m else text


# The program's side, inside the sandbox: load the program (after dropping to an unprivileged uid and setting the
# limits), then answer calls to its top-level names over stdin / stdout, values as pickles. Its own output goes nowhere.
SERVER = r"""
import os, pickle, resource, struct, sys
rin, rout = os.dup(0), os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
uid, nproc, mem, out, cpu = map(int, sys.argv[1:6])
if os.getuid() == 0 and uid:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
for lim, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, out), (resource.RLIMIT_CORE, 0),
               (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NPROC, nproc)):
    resource.setrlimit(lim, (v, v))
def send(msg):
    data = pickle.dumps(msg, 4)
    data = struct.pack("<Q", len(data)) + data
    while data:
        data = data[os.write(rout, data):]
def recv():
    head = b""
    while len(head) < 8:
        part = os.read(rin, 8 - len(head))
        if not part:
            os._exit(0)
        head += part
    n, body = struct.unpack("<Q", head)[0], b""
    while len(body) < n:
        body += os.read(rin, n - len(body))
    return pickle.loads(body)
def plain(v):
    return list(v) if hasattr(v, "__next__") and not isinstance(v, (str, bytes)) else v
ns = {"__name__": "__main__"}
try:
    exec(compile(open("solution.py", encoding="utf-8").read(), "solution.py", "exec"), ns)
    send(("ready",))
except BaseException as e:
    send(("error", type(e).__name__, str(e)[:300]))
    os._exit(0)
while True:
    name, args, kwargs = recv()
    try:
        send(("ok", plain(ns[name](*args, **kwargs))))
    except BaseException as e:
        send(("error", type(e).__name__, str(e)[:300]))
"""

# The tests' side, outside the sandbox: start the program's server, run the problem's tests with a proxy for each of
# the program's top-level names, and say PASS on its own stdout, which the program cannot reach. It executes nothing
# the program wrote: the values come back through an unpickler that builds only plain data.
RUNNER = r"""
import builtins, collections, decimal, fractions, io, json, pickle, resource, struct, subprocess, sys
job = json.load(open(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_AS, (job["runner_bytes"], job["runner_bytes"]))   # a reply that asks for more fails
SAFE = {("builtins", n) for n in ("set", "frozenset", "complex", "range", "slice", "bytearray", "list", "dict", "tuple",
                                  "int", "float", "str", "bool", "bytes")}
SAFE |= {("collections", n) for n in ("OrderedDict", "deque", "Counter", "defaultdict")}
SAFE |= {("fractions", "Fraction"), ("decimal", "Decimal")}
class Plain(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in SAFE:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
        return super().find_class(module, name)
proc = subprocess.Popen(job["command"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
def recv():
    head = proc.stdout.read(8)
    if len(head) < 8:
        raise RuntimeError("the program stopped")
    n = struct.unpack("<Q", head)[0]
    if n > job["max_bytes"]:
        raise RuntimeError("a result too large")
    return Plain(io.BytesIO(proc.stdout.read(n))).load()
class Proxy:
    def __init__(self, name):
        self.name = name
    def __call__(self, *args, **kwargs):
        data = pickle.dumps((self.name, args, kwargs), 4)
        proc.stdin.write(struct.pack("<Q", len(data)) + data)
        proc.stdin.flush()
        reply = recv()
        if reply[0] != "ok":
            raise RuntimeError(f"{self.name} raised {reply[1]}: {reply[2]}")
        return reply[1]
if recv()[0] != "ready":
    sys.exit(1)
ns = {"__name__": "__main__", **{n: Proxy(n) for n in job["names"]}}
exec(compile(job["tests"], "tests.py", "exec"), ns)
proc.stdin.close()
sys.stdout.write("PASS")
"""


def top_level_names(code):
    """The names a program defines at its top level (functions, classes, assignments, imports): what its tests may
    call. Parsed, never run; None for a program that does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
    return sorted(set(names))


@functools.lru_cache(maxsize=1)
def isolation():
    """How generated code is isolated here: 'bwrap' (bubblewrap works on this machine), 'none' (the user opted in to
    running it without, with UNSANDBOXED=1), or an error saying how to get isolation."""
    why = "bubblewrap is not installed"
    if shutil.which("bwrap"):   # the probe runs this interpreter on a real program inside the sandbox
        with tempfile.TemporaryDirectory(prefix="dllm-unmask-probe-") as d:
            with open(os.path.join(d, "probe.py"), "w") as f:
                f.write("import json\nprint(json.dumps(6 * 7))\n")
            probe = subprocess.run(bwrap_args(d, root=os.getuid() == 0, files=("probe.py",))
                                   + [sys.executable, "-I", "-B", "probe.py"], capture_output=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == b"42":
            return "bwrap"
        why = (f"the sandbox cannot run {sys.executable} "
               f"({(probe.stderr.decode(errors='replace').strip().splitlines() or ['no output'])[-1][:160]})")
    if os.environ.get(UNSANDBOXED) == "1":
        return "none"
    raise RuntimeError(f"generated code (HumanEval, MBPP) runs only in a sandbox, and {why}: install bubblewrap "
                       "(Debian/Ubuntu: apt install bubblewrap; it needs user namespaces, or root), or set "
                       f"{UNSANDBOXED}=1 to run the programs without isolation (resource limits only: not safe)")


def read_only_paths():
    """What the program may read: the system's binaries and libraries and this Python's installation."""
    py = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    system = [p for p in ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/localtime")
              if os.path.exists(p)]
    return system + sorted(p for p in py if not p.startswith(tuple(s + "/" for s in system)) and p not in system)


@functools.lru_cache(maxsize=1)
def bwrap_can(flag):
    """Whether this bubblewrap knows a flag (--disable-userns came in 0.8)."""
    return flag in subprocess.run(["bwrap", "--help"], capture_output=True, text=True).stdout


def bwrap_args(work, root, files=("solution.py", "server.py")):
    """bubblewrap's command line: new PID, network, IPC and UTS namespaces (and a user namespace unless root, in
    which no further ones can be made), a filesystem of read-only system and Python directories (mounted after /tmp,
    so a Python installed under /tmp stays visible), and two small tmpfs as the only writable places: /tmp and /work,
    the program's folder, into which `files` of `work` are bound read-only. Everything in it dies with the runner. As
    root no user namespace: the server drops to NOBODY."""
    args = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try"]   # no terminal to reach: run_program starts the runner without one, all pipes
    if root:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"] + (["--disable-userns"] if bwrap_can("--disable-userns") else [])
    tmpfs = ["--perms", "01777", "--size", str(DISK_MB * 2 ** 20), "--tmpfs"]
    args += ["--proc", "/proc", "--dev", "/dev"] + tmpfs + ["/tmp"]
    made = {"/tmp"}
    for path in read_only_paths():
        for parent in [p for p in _parents(path) if p not in made]:
            args += ["--perms", "0755", "--dir", parent]
            made.add(parent)
        args += ["--ro-bind", path, path]
    args += tmpfs + ["/work"]
    for name in files:
        args += ["--ro-bind", os.path.join(work, name), f"/work/{name}"]
    return args + ["--chdir", "/work"]


def _parents(path):
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def run_program(code, tests="", timeout=TIMEOUT_S, memory_mb=MEMORY_MB):
    """Run a program (the generated solution) and its tests -> (passed, status), status one of passed, failed (the
    program does not load, a test fails, a limit kills it) or timeout. The program runs isolated (isolation()): no
    network, nothing outside its folder writable, its processes bounded and all ended with it, under limits on time
    (wall clock), memory (address space), file size and processes. Its tests run in another process outside the
    sandbox, which calls the program's functions and alone reports the verdict: nothing the program prints or does
    can make it pass without its tests."""
    names = top_level_names(code)
    if names is None:
        return False, "failed"
    mode, root = isolation(), os.getuid() == 0
    with tempfile.TemporaryDirectory(prefix="dllm-unmask-code-") as d:
        work, job = os.path.join(d, "work"), os.path.join(d, "job.json")
        os.mkdir(work)
        for name, text in (("solution.py", code), ("server.py", SERVER)):
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text)
        if root:
            os.chown(work, NOBODY, NOBODY)
        limits = [str(NOBODY if root else 0), str(PROCESSES + (0 if root else own_processes())),
                  str(memory_mb * 2 ** 20), str(OUTPUT_MB * 2 ** 20), str(int(timeout) + 1)]
        server = [sys.executable, "-I", "-B", "server.py" if mode == "bwrap" else os.path.join(work, "server.py")] + limits
        command = bwrap_args(work, root) + server if mode == "bwrap" else server
        with open(job, "w") as f:
            json.dump(dict(command=command, names=names, tests=tests, max_bytes=MESSAGE_MB * 2 ** 20,
                           runner_bytes=RUNNER_MB * 2 ** 20), f)
        env = dict(PATH=os.defpath, HOME=d, TMPDIR=d, LANG="C.UTF-8", PYTHONHASHSEED="0")
        runner = subprocess.Popen([sys.executable, "-I", "-B", "-c", RUNNER, job], cwd=work if mode == "none" else d,
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            out, status = runner.communicate(timeout=timeout)[0], None
        except subprocess.TimeoutExpired:
            out, status = b"", "timeout"
        finally:
            try:
                os.killpg(runner.pid, 9)   # the runner, and the sandbox that dies with it
            except (ProcessLookupError, PermissionError):
                pass
            runner.wait()
    if status:
        return False, status
    ok = runner.returncode == 0 and out == b"PASS"
    return ok, "passed" if ok else "failed"


def own_processes():
    """How many processes this user runs now (RLIMIT_NPROC counts them all, so the program gets that many more)."""
    uid = os.getuid()
    return sum(1 for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid)


def _uid_of(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def program_of(problem, response):
    """(the program, its tests): the code of prefill + generation, and the problem's test program."""
    return extract_code((problem.prefix or "") + response), problem.gold


def grade_code(problem, response, timeout=TIMEOUT_S):
    return run_program(*program_of(problem, response), timeout=timeout)[0]


def grade_code_many(problems, responses, workers=None, timeout=TIMEOUT_S):
    """[bool] for a batch, the programs run in parallel (one sandbox each, up to the machine's cores)."""
    isolation()    # no isolation and no opt-in: one clear error before anything runs
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pr: grade_code(*pr, timeout=timeout), zip(problems, responses)))


# What the grader must survive, with the status it must give: (what, program, its tests, status). tests/test_code.py
# runs these and the escapes of a hostile program.
HAZARDS = [("a right program", "def f():\n    return 2", "assert f() == 2", "passed"),
           ("a wrong one", "def f():\n    return 3", "assert f() == 2", "failed"),
           ("a syntax error", "def f(:\n    pass", "assert f() == 2", "failed"),
           ("sys.exit(0) before its tests", "import sys\nsys.exit(0)", "assert False", "failed"),
           ("8 GiB allocated", "x = bytearray(8 * 2 ** 30)", "", "failed"),
           ("os.system", "import os\nos.system('echo hi')\ndef f():\n    return os.listdir('/work')", "assert f()", "passed"),
           ("a fork bomb", "import os\nwhile True:\n    os.fork()", "", "failed"),
           ("a socket", "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", "", "failed"),
           ("unbounded output", "while True:\n    print('x' * 10000)", "", "timeout"),
           ("an infinite loop", "while True:\n    pass", "", "timeout")]


def self_check(n=164, timeout=2.0):
    """Run every hazard (with a short time limit), then n right programs in parallel; print what happened."""
    print(f"isolation: {isolation()}")
    ok = True
    for what, code, tests, want in HAZARDS:
        t = time.time()
        got = run_program(code, tests, timeout)[1]
        ok &= got == want
        print(f"{what:30s} {got:8s} (expected {want}) {time.time() - t:5.2f} s")
    t = time.time()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        passed = sum(ok for ok, _ in pool.map(lambda i: run_program(f"def f():\n    return sum(range({i}))",
                                                                    f"assert f() == {i * (i - 1) // 2}"), range(n)))
    print(f"{n} right programs on {os.cpu_count()} cores: {passed} passed in {time.time() - t:.1f} s")
    return ok and passed == n


if __name__ == "__main__":
    try:
        sys.exit(0 if self_check() else 1)
    except RuntimeError as e:   # no sandbox and no opt-in: the one line that says how to get one
        sys.exit(f"error: {e}")
