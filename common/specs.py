"""
The grammar of policy specs ('topk:steps=32', 'band:hi=0.9:lo=0.08'): a hand rule declares its
arguments as Args (name, type, range, the values a sweep tries), and parse_args reads a spec's text
against them with one clear error per mistake.
"""
import math
from dataclasses import dataclass


def value_text(v):
    """A number as a spec writes it: 32, 0.9, 1 (not 1.0), 1e-07."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def parse_number(spec, text, name):
    """A finite float from a spec's argument, or one clear error."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{spec!r}: {name} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{spec!r}: {name} must be finite, not {text}")
    return v


# Arg.grid of a fixed-step rule's steps: eval.py sweeps every valid count ...
STEP_COUNTS = "step counts"
# ... or the doublings only (a rule no sweep's front is made of: random)
COARSE_STEP_COUNTS = "coarse step counts"


@dataclass(frozen=True)
class Arg:
    """One argument of a spec: its name, its type and range, and the values a sweep tries."""
    name: str
    metavar: str                 # how the README and the error messages write its value
    kind: type = float           # int or float
    lo: float = -math.inf        # allowed range [lo, hi]; open_lo makes it (lo, hi]
    hi: float = math.inf
    open_lo: bool = False
    # written 'name=V' in a spec (a one-argument rule may leave the name out)
    keyword: bool = True
    # eval.py --sweep: these values (STEP_COUNTS: every valid step count)
    grid: tuple = ()

    def parse(self, spec, text):
        v = parse_number(spec, text, self.name)
        if self.kind is int and (v != int(v) or v < 1):
            raise ValueError(f"{spec!r}: {self.name} must be a positive integer")
        if not ((v > self.lo if self.open_lo else v >= self.lo) and v <= self.hi):
            raise ValueError(f"{spec!r}: {self.name} must be {self.range_text()}")
        return int(v) if self.kind is int else v

    def range_text(self):
        if self.hi == math.inf:
            return f"{'>' if self.open_lo else '>='} {value_text(self.lo)}"
        return f"in {'(' if self.open_lo else '['}{value_text(self.lo)}, {value_text(self.hi)}]"


def parse_args(spec, args, text, optional=False):
    """'steps=32' / '0.9' / 'hi=0.9:lo=0.08' -> {name: (text, value)}, checked against args (a tuple
    of Arg). A value without its name fills the next argument in order; every argument is needed
    unless optional."""
    forms = [f"{a.name}={a.metavar}" if a.keyword else a.metavar for a in args]
    usage = "".join(f"[:{f}]" for f in forms) if optional else ":" + ":".join(forms)
    values = {}
    for i, part in enumerate(p for p in text.split(":") if p):
        key, eq, val = part.rpartition("=")
        name = key if eq else (args[i].name if i < len(args) else None)
        arg = next((a for a in args if a.name == name), None)
        if arg is None or name in values or not val:
            raise ValueError(f"{spec!r}: write it as {spec.split(':')[0]}{usage}")
        values[name] = (val, arg.parse(spec, val))
    if len(values) != len(args) and not optional:
        raise ValueError(f"{spec!r}: write it as {spec.split(':')[0]}{usage}")
    return values
