"""
Problem files: the Problem record every task yields, and reading and downloading the real tasks' files (GSM8K,
MATH-500 in tasks.py; HumanEval, MBPP in codetasks.py). Checked line by line: a malformed file is one clear error.
"""
import gzip
import json
import os
import urllib.request
from dataclasses import dataclass

CACHE = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "dllm-unmask")


@dataclass
class Problem:
    question: str       # what the user asks (tiny: the whole prompt string)
    gold: str           # what the grader compares against
    reference: str = "" # one valid answer (tiny tasks: used as pretraining target)
    system: str = None  # system prompt (None: the math one, SYSTEM_PROMPT; "": none)
    prefix: str = None  # the answer's prefilled start (None: ANSWER_PREFIX); code tasks grade prefill + generation


def jsonl_rows(path, task, need, check=None, official=False):
    """The rows of a local jsonl (plain or .gz), each a dict holding the keys `need`; check(row) may return what else
    is wrong with a row. Anything malformed is one ValueError with the line number; a missing file is
    FileNotFoundError. official: the message asks for the task's official file."""
    hint = f"the official {task} file" if official else f"a {task} jsonl"
    if os.path.isdir(path):
        raise ValueError(f"--data {path} is a directory: pass {hint} (one JSON object per line)")
    if os.path.exists(path) and not os.path.isfile(path):   # a FIFO, a device (/dev/null), a socket
        raise ValueError(f"--data {path} is not a regular file: pass {hint} (one JSON object per line)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} not found (pass {hint} with --data)")
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
    except (UnicodeDecodeError, OSError, EOFError):
        raise ValueError(f"{path}: not a text {'jsonl' if official else 'file'} (pass {hint}: one JSON object per line)") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or any(k not in row for k in need):
            raise ValueError(f"{path}:{i}: a {task} row needs the keys {need}")
        wrong = check(row) if check else None
        if wrong:
            raise ValueError(f"{path}:{i}: {wrong}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def fetch_once(url, path, what):
    """A file downloaded once to path (an atomic write: an interrupted download leaves nothing)."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                data = r.read()
        except OSError as e:
            raise RuntimeError(f"could not download {what} ({e}); pass a local jsonl with --data") from None
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return path
