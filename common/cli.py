"""
What the command-line scripts share: one settings style (a dataclass whose fields carry their help,
read by argparse), the argument checks that run before any model is loaded (a real one is 16 GB),
each failing in one line that names the flag, the locks that keep two runs from writing one file,
and atomic writes.
"""
import argparse
import errno
import glob
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import MISSING, field, fields

from filelock import FileLock, Timeout


def option(default, help, positional=False):
    """A settings field: its default and its --help text (positional: given without a flag, as the
    first argument)."""
    return field(default=default, metadata=dict(help=help, positional=positional))


TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def parse_config(cls, argv=None, description=None, command="python script.py"):
    """argparse for a settings dataclass: one --flag per field (its help from option()) ->
    (settings, the command as typed: `command` followed by the arguments). A flag may be shortened
    to any unique prefix (--n: --num-problems)."""
    p = argparse.ArgumentParser(description=description)
    for f in fields(cls):
        typ = f.type if isinstance(f.type, type) else TYPES[f.type]
        meta = f.metadata or {}
        default = f.default if f.default is not MISSING else None
        if meta.get("positional"):   # positional="optional": it may be left out
            p.add_argument(f.name, type=typ, help=meta["help"],
                           nargs="?" if meta["positional"] == "optional" else None)
        elif typ is bool:
            p.add_argument(f"--{f.name.replace('_', '-')}", action="store_true",
                           help=meta.get("help", f.name))
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=default,
                           metavar=f.name.upper(), help=with_default(meta.get("help", f.name),
                                                                     default))
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return cls(
        **vars(p.parse_args(negatives_joined(argv)))), " ".join([command] +
                                                                [shlex.quote(a) for a in argv])


def with_default(text, default):
    """A flag's help with its default said once: appended unless the text already says it (or there
    is none)."""
    return text if default is None or "default" in text else f"{text} (default: {default})"


def negatives_joined(argv):
    """'--flag -1,1' as '--flag=-1,1': argparse takes a value that starts with '-' (other than a
    plain negative number) for a flag of its own and says 'expected one argument'."""
    out, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv) and re.match(
                r"-\.?\d", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


CHECKS = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 2": lambda v: v >= 2,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1)": lambda v: 0 < v < 1}
# problems, prompts, steps and the like: more than any run needs, few enough to be refused fast
MAX_COUNT = 10 ** 6
MAX_SEED = 2 ** 63 - 1    # seeds are 64-bit signed integers in torch


def check_args(**checks):
    """check_args(n=(a.n, "> 0"), tau=(a.tau, "> 0"), ...): each value must be a finite number
    meeting its rule ('> 0', '>= 0', '>= 1', '>= 2', 'in (0, 1]', 'in [0, 1]', 'in (0, 1)'); None
    (not given) passes. Raises ValueError naming the flag."""
    for name, (value, rule) in checks.items():
        if value is None:
            continue
        if not math.isfinite(value) or not CHECKS[rule](value):
            raise ValueError(f"--{name.replace('_', '-')} must be {rule}, not {value}")


def check_counts(**counts):
    """Integer counts (problems, steps, sizes): each in [low, MAX_COUNT]; (value, low). A count
    beyond any real run is refused in one line instead of hanging in an allocation."""
    for name, (value, low) in counts.items():
        if value is not None and not low <= value <= MAX_COUNT:
            raise ValueError(
                f"--{name.replace('_', '-')} must be an integer in [{low}, {MAX_COUNT:,}], not "
                f"{value}")


def check_seed(seed, flag="--seed"):
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} must be in [0, 2**63 - 1], not {seed}")


def check_threads(threads, flag="--threads"):
    """A torch thread count: 0 (torch's default) up to 4x the machine's cores (more only slows it
    down)."""
    most = 4 * (os.cpu_count() or 1)
    if not 0 <= threads <= most:
        raise ValueError(
            f"{flag} must be in [0, {most}] (0: torch's default; this machine has {os.cpu_count()} "
            f"cores), not {threads}")


def check_out_file(path, flag, inputs=()):
    """An output file we will write at the end: refuse a directory, an input of the run (inputs:
    (flag, path) pairs), create the missing folder, and make sure we can write there now - not after
    the work is done. Leaves nothing behind."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a directory: pass a file path")
    for other_flag, other in inputs:
        if other and os.path.abspath(other) == os.path.abspath(path):
            raise ValueError(
                f"{flag} {path} is also {other_flag}: the run would overwrite its own input; pass "
                f"another {flag}")
    folder = os.path.dirname(path) or "."
    probe = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.probe")
    try:
        os.makedirs(folder, exist_ok=True)
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def check_distinct(*outputs):
    """Outputs of one run ((flag, path) pairs) must be different files."""
    seen = {}
    for flag, path in outputs:
        if path is None:
            continue
        key = os.path.abspath(path)
        if key in seen:
            raise ValueError(
                f"{flag} {path} is also {seen[key]}: a run's outputs must be different files")
        seen[key] = flag


def write_atomic(path, write):
    """write(tmp_path) to a temporary file beside path, then rename it over path: path is always the
    old file or the new one, never half of one. A full disk (or any write error) leaves no temporary
    file and is one clear error."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
        remove_stale_temporaries(path)
    except (OSError, RuntimeError) as e:
        full = getattr(
            e, "errno",
            None) == errno.ENOSPC or "No space left" in str(e) or "enforce fail" in str(e)
        why = "the disk is full" if full else (getattr(e, "strerror", None) or
                                               str(e).splitlines()[0][:200])
        raise OSError(f"could not write {path}: {why}; {path} is as it was before") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(path):
    """The temporary files beside path of writers that died mid-write (kill -9 leaves no chance to
    clean up): each name holds its writer's pid, and one whose process is gone is removed (POSIX
    only: elsewhere they stay)."""
    if os.name != "posix":
        return
    for tmp in glob.glob(glob.escape(path) + ".*.tmp"):
        pid = tmp[len(path) + 1:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)               # signal 0: is it alive? (sends nothing)
        except ProcessLookupError:
            try:
                os.remove(tmp)
            except OSError:
                pass
        except OSError:                        # alive, another user's: not ours to touch
            pass


def write_json(path, obj):
    """obj as indented JSON at path, atomically (write_atomic)."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    write_atomic(path, write)


def append_records(path, records):
    """Append JSON lines (one per completion) to path, flushed to disk. Records are written before
    their row, so a run killed between the two has its row redone, and read_records keeps the later
    of two records of one completion; a line cut short by a kill is the last one and is skipped when
    read."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(f"could not write {path}: {e.strerror or e}") from None


def read_records(path):
    """The records of a file written by append_records: the last one of each (setting, problem,
    sample)."""
    out = {}
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
            out[(r["setting"], r["problem"], r["sample"])] = r
        except (ValueError, KeyError, TypeError):
            if i < len(lines) or line.endswith("\n"):      # only a cut last line is expected
                raise ValueError(f"{path} line {i} is not a completion record") from None
    return list(out.values())


def failed(e):
    """The SystemExit of a script that failed with e: its one line, printed by one process only
    (under torchrun by rank 0; the other ranks exit quietly with the same status)."""
    rank = os.environ.get("RANK")
    return SystemExit(f"error: {e}") if rank in (None, "0") else SystemExit(1)


def interrupted(message):
    """Ctrl-C (or SIGTERM): the one line on stderr, and the exit status of an interrupted program
    (130); a Ctrl-C that follows while it exits is ignored."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    return SystemExit(130)


def entry(body, on_interrupt):
    """An entry point's body() with Ctrl-C handled from here on: a Ctrl-C is the one line
    on_interrupt, a ValueError / RuntimeError / OSError one clear error."""
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return body()
    except KeyboardInterrupt:
        raise interrupted(on_interrupt) from None
    except (ValueError, RuntimeError, OSError) as e:
        raise failed(e)


class Lock:
    """path + '.lock' (filelock: an OS lock that the kernel releases however its holder exits), with
    a note beside it (path + '.lock.owner') of who holds it and since when, for a process that has
    to wait."""

    def __init__(self, path):
        self.lock, self.owner = FileLock(path + ".lock"), path + ".lock.owner"

    def acquire(self, timeout):
        self.lock.acquire(timeout=timeout)
        try:
            with open(self.owner, "w") as f:
                json.dump(
                    dict(pid=os.getpid(), command=" ".join(sys.argv)[:200], since=time.time()), f)
        except OSError:
            pass
        return self

    def release(self):
        try:
            os.remove(self.owner)
        except OSError:
            pass
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def holder(self):
        """'process 1234 (python eval.py ...) for 12 s', from the note of whoever holds the lock."""
        try:
            with open(self.owner) as f:
                o = json.load(f)
            return f"process {o['pid']} ({o['command']}) for {time.time() - o['since']:.0f} s"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"


def exclusive(path, flag):
    """Hold path's Lock while this run writes path; another run that asks for it meanwhile is
    refused in one line, so two runs never write one file. Use it as a context manager."""
    lock = Lock(path)
    try:
        return lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(
            f"another run is writing {flag} {path} right now ({lock.holder()}): wait for it to "
            f"finish, or pass another {flag}") from None


class Waited(Exception):
    """A lock another process held longer than we were willing to wait."""


def waiting_lock(path, timeout=600.0, say=print):
    """path's Lock for a read-modify-write of a shared results file (eval.py's rows): a second
    writer waits its turn instead of overwriting the first one's rows, saying who holds it once it
    has waited 2 s. Raises Waited after timeout s."""
    lock = Lock(path)
    try:
        return lock.acquire(timeout=min(2.0, timeout))
    except Timeout:
        pass
    say(f"waiting for {path}: {lock.holder()} is writing it (up to {timeout:.0f} s)")
    try:
        return lock.acquire(timeout=max(0.0, timeout - 2.0))
    except Timeout:
        raise Waited(
            f"{lock.holder()} has held {path}.lock for longer than {timeout:.0f} s") from None
