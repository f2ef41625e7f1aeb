"""
What the command-line scripts share: a dataclass config as argparse (one --flag per field, its help the comment
beside the field), and the argument checks that run before any model is loaded - a real one is 16 GB - each
failing in one line that names the flag. Its own file because it is about the scripts, not about the model.
"""
import argparse
import math
import os
from dataclasses import fields

from filelock import FileLock, Timeout


def parse_dataclass(cls, argv=None, description=None):
    """argparse for a config dataclass: one --flag per field, its help the comment beside the field."""
    import inspect
    src = inspect.getsource(cls).splitlines()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(cls):
        line = next(l for l in src if l.strip().startswith(f"{f.name}:"))
        help_ = line.split("#", 1)[1].strip() if "#" in line else f.name
        typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
        flag = f"--{f.name.replace('_', '-')}"
        if typ is bool:
            p.add_argument(flag, action="store_true", help=help_)
        else:
            p.add_argument(flag, type=typ, default=f.default, help=help_)
    return cls(**vars(p.parse_args(argv)))


def check_args(**checks):
    """check_args(n=(a.n, "> 0"), tau=(a.tau, "> 0"), ...): each value must be a finite number meeting its rule
    ('> 0', '>= 0', '>= 2', 'in (0, 1]', 'in [0, 1]'); None (not given) passes. Raises ValueError naming the flag."""
    rules = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2,
             "in (0, 1]": lambda v: 0 < v <= 1, "in [0, 1]": lambda v: 0 <= v <= 1, "in (0, 1)": lambda v: 0 < v < 1}
    for name, (value, rule) in checks.items():
        if value is None:
            continue
        if not math.isfinite(value) or not rules[rule](value):
            raise ValueError(f"--{name.replace('_', '-')} must be {rule}, not {value}")


def check_out_file(path, flag):
    """An output file we will write at the end: refuse a directory, create the missing folder, and make sure we
    can write there now - not after the work is done. Leaves nothing behind."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a directory: pass a file path")
    folder = os.path.dirname(path) or "."
    probe = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.probe")
    try:
        os.makedirs(folder, exist_ok=True)
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def exclusive(path, flag):
    """Hold path + '.lock' (filelock: an OS lock, released however the holder exits) while this run writes path;
    another run that asks for it meanwhile is refused in one line, so two runs never write one file. Use it as a
    context manager."""
    lock = FileLock(path + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"another run is writing {flag} {path} right now: wait for it to finish, or pass another "
                         f"{flag}") from None
    return lock


def merged(path, timeout=600):
    """A lock for a read-modify-write of a shared results file (eval.py's rows): a second writer waits its turn
    instead of overwriting the first one's rows."""
    return FileLock(path + ".lock", timeout=timeout)
