"""tasks.py: graders on hand-written cases, data files, and the synthetic tasks' properties."""
import json
from itertools import permutations

import pytest

from tasks import (Problem, _chain, extract_gsm8k, get_problems, grade, grade_gsm8k, grade_math, grade_tiny, read_jsonl,
                   tiny_problems)

GSM8K_CASES = [  # (response, gold, correct)
    ("<reasoning>2+2</reasoning><answer>\\boxed{4}</answer>", "4", True),
    ("\\boxed{1,234}", "1234", True),                                   # comma
    ("\\boxed{$18}", "18", True),                                       # dollar
    ("\\boxed{ 18 }", "18", True),                                      # spaces
    ("\\boxed{3.50}", "3.5", True),                                     # decimal
    ("\\boxed{-7}", "-7", True),                                        # negative
    ("\\boxed{7}", "-7", False),
    ("\\boxed{18.}", "18", True),                                       # trailing period
    ("\\boxed{x} then \\boxed{5}", "5", True),                          # first box that parses
    ("\\boxed{5} and later \\boxed{6}", "6", False),                    # first parsable box wins
    ("no answer at all", "3", False),                                   # nothing
    ("<answer>The total is 12 apples</answer>", "12", True),            # last number inside the tags
    ("<answer>3 boxes of 4 is 12</answer>", "12", True),
    ("<answer>3 boxes of 4 is 12</answer>", "4", False),
    ("The answer is 12.", "12", False),                                 # outside the tags, no box
    ("<answer>$1,000</answer>", "1000", True),
    ("<answer>0.25", "0.25", True),                                     # unclosed tag (truncated generation)
    ("\\boxed{\\frac{1}{2}}", "0.5", False),                            # GSM8K boxes must parse as numbers
    ("\\boxed{100}", "100.0000001", True),                              # |pred - gold| < 1e-6
    ("\\boxed{100}", "100.00001", False),
]

MATH_CASES = [
    ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", True),                  # dfrac
    ("\\boxed{\\frac12}", "\\frac{1}{2}", True),                       # shorthand frac
    ("\\boxed{1/2}", "\\frac{1}{2}", True),                            # slash fraction
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{1} then \\boxed{2}", "2", True),                         # last box
    ("\\boxed{2} then \\boxed{1}", "2", False),
    ("\\boxed{x = 5}", "5", True),                                     # "x = " stripped
    ("\\boxed{\\text{(B)}}", "(B)", True),                             # \text{}
    ("\\boxed{90^\\circ}", "90", True),                                # degrees
    ("\\boxed{\\left( 3, 4 \\right)}", "(3,4)", True),                 # \left \right and spaces
    ("\\boxed{\\sqrt3}", "\\sqrt{3}", True),
    ("\\boxed{50\\%}", "50", True),                                    # percent
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False),
    ("no box here: 5", "5", False),
    ("\\boxed{{1}{2}}", "{1}{2}", True),                               # nested braces balanced
]

TINY_CASES = [  # (task, question, response, correct); values modulo 10
    ("sum", "352?0:", "3+5=8+2=0#0", True),
    ("sum", "352?0:", "2+3=5+5=0#0", True),          # another order is just as valid
    ("sum", "352?0:", "5+2=7+3=0#0", True),
    ("sum", "352?0:", "3+5=8+2=0#1", False),         # wrong final answer
    ("sum", "352?1:", "3+5=8+2=1#1", False),         # following a wrong hint
    ("sum", "352?0:", "3+5=8+3=1#1", False),         # a digit used twice
    ("sum", "352?0:", "3+5=7+2=9#9", False),         # a wrong partial sum
    ("sum", "352?0:", "3+2=8+5=0#0", False),         # mixes two orders
    ("sum", "352?0:", "3+5=8#8", False),             # a digit missing
    ("sum", "352?0:", "3+5=8+2=_#0", False),         # still masked
    ("sum", "352?0:", "3+5=8+2=0#0+", False),        # trailing junk
    ("sub", "4-352:", "4-3=1-5=6-2=4#4", True),
    ("sub", "4-352:", "4-5=9-2=7-3=4#4", True),
    ("sub", "4-352:", "5-3=2-5=7-2=5#5", False),     # wrong start
    ("sub", "4-352:", "4-3=1-5=6-2=4#3", False),
]


@pytest.mark.parametrize("response,gold,ok", GSM8K_CASES)
def test_gsm8k_grader(response, gold, ok):
    assert grade_gsm8k(response, gold) == ok


@pytest.mark.parametrize("response,gold,ok", MATH_CASES)
def test_math_grader(response, gold, ok):
    assert grade_math(response, gold) == ok


@pytest.mark.parametrize("task,question,response,ok", TINY_CASES)
def test_tiny_grader(task, question, response, ok):
    assert grade_tiny(task, question, response) == ok


def test_one_grader_for_all_tasks():
    assert grade("gsm8k", Problem("q", "42"), "\\boxed{42}")
    assert grade("math500", Problem("q", "\\frac{1}{2}"), "\\boxed{\\frac12}")
    assert grade("sum", Problem("352?0:", "0"), "2+3=5+5=0#0")
    assert extract_gsm8k("<answer>-3.5</answer>") == -3.5
    with pytest.raises(ValueError, match="unknown task"):
        get_problems("nope")


@pytest.mark.parametrize("task", ["sum", "sub"])
def test_synthetic_properties(task):
    probs = tiny_problems(task, 2000, seed=0)
    assert all(grade(task, p, p.reference) for p in probs)                          # references are valid
    lengths = {len(p.reference) for p in probs}
    assert len(lengths) >= 2 and max(lengths) <= 32                                 # varying length, fits L = 32
    assert tiny_problems(task, 5, 0) == tiny_problems(task, 5, 0)                   # seeded
    assert tiny_problems(task, 50, 0, "train") != tiny_problems(task, 50, 0, "test")  # disjoint streams



def test_every_order_is_a_valid_derivation():
    # more than one valid way to write the reasoning: all 24 orders of 4 terms, 24 different texts
    p = Problem("3527?7:", "7")
    refs = {_chain(o[0], o[1:], "+")[0] for o in permutations([3, 5, 2, 7])}
    assert len(refs) == 24 and all(grade("sum", p, r) for r in refs)
    q = Problem("4-352:", "4")
    refs = {_chain(4, o, "-")[0] for o in permutations([3, 5, 2])}
    assert len(refs) == 6 and all(grade("sub", q, r) for r in refs)


def test_sum_hint_is_a_tempting_shortcut():
    probs = tiny_problems("sum", 4000, seed=1)
    right = sum(p.question.split("?")[1].rstrip(":") == p.gold for p in probs) / len(probs)
    assert 0.66 < right < 0.74   # 70% by construction; 4000 draws: 4.4 std devs of slack


def test_jsonl_loading_and_errors(tmp_path):
    good = tmp_path / "g.jsonl"
    good.write_text(json.dumps({"question": "1+1?", "answer": "so #### 2"}) + "\n\n")
    probs = get_problems("gsm8k", data=str(good))
    assert probs[0].gold == "2" and probs[0].question == "1+1?"
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"problem": "x?", "answer": "\\frac{1}{2}"}) + "\n")
    assert get_problems("math500", data=str(m))[0].gold == "\\frac{1}{2}"
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"b.jsonl:2: not valid JSON"):
        read_jsonl(str(bad), "gsm8k")
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="needs the keys"):
        read_jsonl(str(bad), "gsm8k")


def test_offline_without_data_is_one_clear_error(monkeypatch, tmp_path):
    import urllib.request

    import tasks

    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(tasks, "CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="could not download GSM8K.*--data"):
        get_problems("gsm8k", split="train")
    with pytest.raises(ValueError, match="no train split"):
        get_problems("math500", split="train")


def test_tasks_cli():
    import subprocess
    import sys

    from conftest import ROOT
    out = subprocess.run([sys.executable, "tasks.py", "--task", "sum", "--n", "2"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count("gold") == 2
    out = subprocess.run([sys.executable, "tasks.py", "--task", "gsm9k"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown task" in out.stderr and "Traceback" not in out.stderr
