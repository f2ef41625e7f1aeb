"""
Tasks: problems, prompts and graders. One grader per task serves both the GRPO reward and evaluation.

Real tasks (the paper's protocol): GSM8K (train/test) and MATH-500, zero-shot, with the
"<reasoning>...</reasoning><answer>...</answer>" instruction. Downloaded on first use into a cache
directory, or read from a local jsonl with `--data`. The code tasks (HumanEval, MBPP: the paper's out-of-domain
experiment) and their sandboxed grader live in common/codetasks.py; `grade_many` grades a batch, code in parallel.

Synthetic tasks for the tiny world, generated from a seed:
  chain (in-domain)  prompt "7+2~3+1+3~1:"  ->  "+29k~34b+15p+38a~13f#3" then end-of-text padding.
       A start digit and 5-7 steps applied in the prompt's order, modulo 10: '+d' adds d, '~d' reflects
       (v -> d - v). The answer writes each step as its op and digit (copied from the prompt), its value and one
       free filler letter (a-p, any is right), then '#' and the final value. Two of the ways confidence misleads
       LLaDA are built in, and the tiny dLLM shows both (docs/tiny-world.md):
       (1) the answer cannot be had before its reasoning: the steps do not commute, and the chain is too long for
           the tiny dLLM to compute in one forward (everything in one step: 0%; one token per step: 100%);
       (2) confidence is not importance: the filler letters are the least confident tokens (about 1/16) and
           harmless, like wording in natural reasoning; a value that is not computable yet is more confident than
           they are and is wrong when revealed. So any rule that reveals the fillers in bulk first reveals the
           values before their time, and the rules that wait spend one step per filler.
  sub  (out-of-domain)  prompt "3-213:"  ->  "3-2=1-1=0-3=7#7": subtract the digits in any order.
The grader checks the work like a teacher: every step right and in place, the answer equal to the last value.

    python tasks.py --task chain --n 3       # print a few problems with a reference answer
"""
import argparse
import os
import random
import re

from common import codetasks
from common.data import CACHE, Problem, fetch_once, jsonl_rows  # noqa: F401 (Problem: the record every task yields)


# ----------------------------------------------------------------------------------------------------
# problems (each a common.data.Problem: question, gold, reference, system, prefix)

TINY_TASKS = ("chain", "sub")
CODE_TASKS = ("humaneval", "mbpp")               # their problems and sandboxed grader: common/codetasks.py
REAL_TASKS = ("gsm8k", "math500") + CODE_TASKS
MOD = 10          # the running value is kept modulo MOD
TERMS = (1, 2, 3) # the digits steps are made of: small tables the tiny dLLM learns (100% one step at a time)
STEPS = (5, 7)    # a chain has 5-7 steps: too many for the tiny dLLM to compute in one forward
STEP_CHARS = 4    # a step is written in 4 characters: op, digit, value, filler (the value at offset 2)
FILLER = "abcdefghijklmnop"  # harmless words: a free letter follows each partial value; the grader ignores them


def apply_op(value, op, d):
    """One step of the chain: '+' adds d, '~' reflects (value -> d - value), both modulo 10. They do not
    commute, so there is no counting shortcut to the answer (a small model still does part of it in one shot)."""
    return (value + d if op == "+" else d - value) % MOD


def make_chain(rng):
    """Start digit and 5-7 steps in a fixed order; answer: each step (its op and digit copied from the prompt), its
    value and one free filler letter, then '#' and the final value."""
    start = rng.randint(0, MOD - 1)
    steps = [(rng.choice("+~"), rng.choice(TERMS)) for _ in range(rng.randint(*STEPS))]
    value, ref = start, ""
    for op, d in steps:
        value = apply_op(value, op, d)
        ref += f"{op}{d}{value}{rng.choice(FILLER)}"
    question = str(start) + "".join(f"{op}{d}" for op, d in steps) + ":"
    return Problem(question, str(value), ref + f"#{value}")


def make_sub(rng):
    digits = [rng.choice(TERMS) for _ in range(rng.randint(3, 4))]
    start = rng.randint(0, MOD - 1)
    order = digits[:]
    rng.shuffle(order)
    value, ref = start, str(start)
    for d in order:
        value = (value - d) % MOD
        ref += f"-{d}={value}"
    return Problem(f"{start}-" + "".join(map(str, digits)) + ":", str(value), ref + f"#{value}")


def tiny_problems(task, n, seed, split="test"):
    """n problems of a tiny task (train or test split: disjoint seeds; pretraining draws its own stream)."""
    make = {"chain": make_chain, "sub": make_sub}[task]
    rng = random.Random(f"{task}-{split}-{seed}")
    return [make(rng) for _ in range(n)]


def grade_tiny(task, question, response):
    """True iff `response` is a valid derivation for `question`, checked like a teacher would. chain: the
    prompt's steps in the prompt's order, every value right, filler letters (0-2 after a value) ignored, the
    answer after '#' equal to the last value. sub: the start, then each prompt digit subtracted once in any
    order, every value right, the answer equal to the last value. Exact, no partial credit."""
    if task == "chain":
        m = re.fullmatch(r"((?:[+~]\d\d[%s]{0,2})+)#(\d)" % FILLER, response)
        qm = re.fullmatch(r"(\d)((?:[+~]\d)+):", question)
        if not m or not qm:
            return False
        value, done = int(qm.group(1)), re.findall(r"([+~])(\d)(\d)", m.group(1))
        if [(op, d) for op, d, _ in done] != re.findall(r"([+~])(\d)", qm.group(2)):
            return False
        for op, d, v in done:
            value = apply_op(value, op, int(d))
            if int(v) != value:
                return False
        return int(m.group(2)) == value
    start, rest = question.rstrip(":").split("-")
    m = re.fullmatch(r"(\d)((?:-\d=\d)+)#(\d)", response)
    if not m or int(m.group(1)) != int(start):
        return False
    value, used = int(start), []
    for d, v in re.findall(r"-(\d)=(\d)", m.group(2)):
        value = (value - int(d)) % MOD
        if int(v) != value:
            return False
        used.append(int(d))
    return sorted(used) == sorted(int(c) for c in rest) and int(m.group(3)) == value


# ----------------------------------------------------------------------------------------------------
# real tasks: data

GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
MATH500_REPO = "HuggingFaceH4/MATH-500"


SYSTEM_PROMPT = ("You are a math expert. You will be given a question to solve. Solve it step by step. "
                 "Wrap the final answer in a \\boxed{}. Respond in the following format:\n"
                 "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>")
ANSWER_PREFIX = "<reasoning>\n"  # written as the start of the answer (the paper's eval prompt)


def read_jsonl(path, task):
    """Read a local jsonl. GSM8K rows need 'question' and 'answer' ('... #### 42', or a bare number); MATH rows need
    'problem' and 'answer'. A row whose answer cannot be graded (no number after '####', an empty MATH answer) is
    refused here, not graded wrong later."""
    need = ("question", "answer") if task == "gsm8k" else ("problem", "answer")

    def check(row):
        if not isinstance(row[need[0]], str) or not isinstance(row["answer"], (str, int, float)) \
                or isinstance(row["answer"], bool):
            return f"'{need[0]}' must be a string and 'answer' a string or a number"
        gold = str(row["answer"]).split("####")[-1].strip() if task == "gsm8k" else str(row["answer"]).strip()
        if task == "gsm8k" and _to_number(gold) is None:
            return f"its answer {gold[:40]!r} has no number to grade against (GSM8K answers end in '#### <number>')"
        if not gold:
            return "its 'answer' is empty: nothing to grade against"
        return None
    return jsonl_rows(path, task, need, check)


def _download_real(task, split):
    if task == "gsm8k":
        return fetch_once(GSM8K_URL.format(split=split), os.path.join(CACHE, f"gsm8k_{split}.jsonl"), "GSM8K")
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(MATH500_REPO, "test.jsonl", repo_type="dataset", cache_dir=CACHE)
    except Exception as e:  # offline, gated, or no huggingface_hub
        raise RuntimeError(f"could not download MATH-500 ({type(e).__name__}); pass a local jsonl with --data") from None


def real_problems(task, split="test", data=None, n=None):
    if task in CODE_TASKS:
        return codetasks.code_problems(task, split, data)[:n]
    if task == "math500" and split == "train" and not data:
        raise ValueError("MATH-500 has no train split to download; pass a local jsonl of MATH problems with --data")
    rows = read_jsonl(data or _download_real(task, split), task)[:n]
    if task == "gsm8k":  # the official answer is "reasoning #### 42"; a bare number (42) is accepted too
        return [Problem(r["question"], str(r["answer"]).split("####")[-1].strip()) for r in rows]
    return [Problem(r["problem"], str(r["answer"])) for r in rows]


def check_task(task, data=None):
    """A task the scripts know, and --data only where it is read (the tiny tasks are generated)."""
    if task not in TINY_TASKS + REAL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TINY_TASKS + REAL_TASKS}")
    if data and task in TINY_TASKS:
        raise ValueError(f"--data is for {' / '.join(REAL_TASKS)}; the {task} task is generated, not read")
    if task in CODE_TASKS:
        codetasks.isolation()   # generated code runs only in a sandbox (or with the user's explicit opt-in)


SPLITS = ("train", "validation", "test")


def check_split(task, split):
    """A split the task has: the tiny tasks draw each from its own stream, MBPP has all three, GSM8K train and test,
    MATH-500 and HumanEval test (and a local --data file of any split)."""
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, not {split!r}")
    if split == "validation" and task not in TINY_TASKS + ("mbpp",):
        raise ValueError(f"{task} has no validation split: use train or test")


def get_problems(task, n=None, seed=0, split="test", data=None):
    """The single entry point the scripts use: a list of Problems."""
    check_task(task)
    check_split(task, split)
    if task in TINY_TASKS:
        return tiny_problems(task, n or 500, seed, split)
    return real_problems(task, split, data, n)


# ----------------------------------------------------------------------------------------------------
# real tasks: graders (the paper's protocol)

def _boxed_spans(text):
    """(start, end, content) of every \\boxed{...} in text, with nested braces balanced."""
    out, i = [], 0
    while (i := text.find("\\boxed", i)) != -1:
        j = i + len("\\boxed")
        while j < len(text) and text[j] == " ":
            j += 1
        if j >= len(text) or text[j] != "{":
            i = j
            continue
        depth, k = 0, j
        while k < len(text):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        if depth:  # unbalanced: stop
            break
        out.append((i, k + 1, text[j + 1:k]))
        i = k + 1
    return out


def _boxed_all(text):
    """Contents of every \\boxed{...} in text."""
    return [c for _, _, c in _boxed_spans(text)]


# A number as GSM8K answers write it: optional sign, digits with thousands commas (only in groups of three, so
# "3, 4" is two numbers, not 34), decimals, and scientific notation (1e3 is 1000, not 3).
NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
NUMBER = re.compile(NUM)
UNIT = r"[A-Za-z][A-Za-z .]*"   # words after a number: "10 dollars", "5 cm" (no digits, so never a second number)
WORDS = dict(zero=0, one=1, two=2, three=3, four=4, five=5, six=6, seven=7, eight=8, nine=9, ten=10, eleven=11,
             twelve=12, thirteen=13, fourteen=14, fifteen=15, sixteen=16, seventeen=17, eighteen=18, nineteen=19,
             twenty=20, thirty=30, forty=40, fifty=50, sixty=60, seventy=70, eighty=80, ninety=90)
SCALES = dict(hundred=100, thousand=1000, million=10 ** 6, billion=10 ** 9)


def _clean_money(s):
    """Strip what GSM8K answers wrap numbers in: \\$ and $, \\%, %, \\text{...} (kept as its content), spaces."""
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    return s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\,", "").strip()


MINUS = "\u2212\u2013\u2012\ufe63\uff0d"   # Unicode minus, en dash, figure dash, small and full-width hyphen-minus


def _unwrap(s):
    """What LLaDA puts around a number in a box, taken off: Unicode minus signs (as '-'), \\left / \\right and \\!,
    redundant braces ({{10}} -> 10, \\frac{{20}}{2} -> \\frac{20}{2}) and brackets."""
    s = s.translate({ord(c): "-" for c in MINUS}).replace("\\left", "").replace("\\right", "").replace("\\!", "")
    while (t := re.sub(r"\{\s*\{([^{}]*)\}\s*\}", r"{\1}", s)) != s:
        s = t
    s = s.strip()
    while s[:1] + s[-1:] in ("{}", "()") and _balanced(s[1:-1]):
        s = s[1:-1].strip()
    return s


def _balanced(s):
    depth = 0
    for ch in s:
        depth += {"{": 1, "}": -1, "(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _words_number(s):
    """English number words ('forty-two', 'one hundred and five', 'twelve thousand') -> their value, else None."""
    words = [w for w in re.split(r"[\s-]+", s.lower().strip()) if w and w != "and"]
    if not words or any(w not in WORDS and w not in SCALES for w in words):
        return None
    total, current = 0, 0
    for w in words:
        if w in WORDS:
            current += WORDS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        else:
            total, current = total + max(current, 1) * SCALES[w], 0
    return float(total + current)


def _plain_number(s):
    """One number as an answer writes it, after _unwrap: a plain number (thousands split by commas or spaces), a
    number with a unit or a percent sign, a fraction (\\frac{3}{4}, \\dfrac34, 3/4), a mixed number (3\\frac{1}{2},
    3 1/2) or number words (forty-two) -> its value, else None."""
    s = _unwrap(_clean_money(s)).rstrip(".").strip()
    frac = r"\\[dt]?frac\{\s*(%s)\s*\}\{\s*(%s)\s*\}" % (NUM, NUM)
    m = re.fullmatch(r"([-+]?)(\d+)\s*(?:%s|(\d+)\s*/\s*(\d+))" % frac, s)
    if m:   # a mixed number: a whole part and a proper fraction
        a, b = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
        a, b = float(a.replace(",", "")), float(b.replace(",", ""))
        if 0 < a < b:
            return (-1 if m.group(1) == "-" else 1) * (float(m.group(2)) + a / b)
    m = (re.fullmatch(r"([-+]?)" + frac, s) or re.fullmatch(r"([-+]?)\\[dt]?frac(\d)(\d)", s)
         or re.fullmatch(r"([-+]?)(%s)\s*/\s*(%s)" % (NUM, NUM), s))
    if m:  # a fraction: its value
        a, b = float(m.group(2).replace(",", "")), float(m.group(3).replace(",", ""))
        return None if b == 0 else (-1 if m.group(1) == "-" else 1) * a / b
    if re.fullmatch(r"[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):   # "1 000": thousands split by spaces
        s = s.replace(" ", "")
    m = re.fullmatch(r"(%s)\s*(?:%s)?" % (NUM, UNIT), s)
    if m:
        try:
            return float(m.group(1).replace(",", ""))
        except ValueError:
            return None
    return _words_number(s)


def _to_number(s):
    """The value of a boxed GSM8K answer, or None: _plain_number, or an equation's number ("x = 10" -> 10,
    "15 = 5 \\times 3" -> 15: of its sides that read as numbers, the last). Departs from the paper's parser, which
    strips ',', '$' and spaces and tries float(): there "10 dollars", "10\\%" and a fraction read as nothing, after
    which the fallback read the last number inside <answer> - the fraction's denominator (a false positive)."""
    values = [_plain_number(side) for side in _unwrap(s).split("=")]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


HEDGE = re.compile(r"\s*(?:,|;|/|\\quad|\\text\{\s*(?:or|and)\s*\}|\b(?:or|and)\b|\s)*\s*", re.I)


def _one_value(boxes):
    """The number a set of final boxes gives: one value, or None when none reads as a number or they give different
    ones (a hedge: '\\boxed{15} or \\boxed{12}' answers nothing)."""
    values = {round(v, 9) for v in map(_to_number, boxes) if v is not None}
    return values.pop() if len(values) == 1 else None


def extract_gsm8k(response):
    """The final answer, read as a careful grader reads it: inside the last <answer> tag (to the end when it is not
    closed) its boxes, else the last number there; without a tag, the last box and any boxes joined to it by 'or',
    'and' or a comma. Several final boxes that read as different numbers are a hedge: no answer. Never a number
    taken out of a box that does not read as one ("\\boxed{3x+4}" is not 4)."""
    tag = response.rfind("<answer>")
    if tag != -1:
        region = response[tag + len("<answer>"):].split("</answer>")[0]
        spans = _boxed_spans(region)
        if spans:
            return _one_value([c for _, _, c in spans])
        nums = [_to_number(x) for x in NUMBER.findall(_clean_money(region.translate({ord(c): "-" for c in MINUS})))]
        nums = [x for x in nums if x is not None]
        return nums[-1] if nums else None
    spans = _boxed_spans(response)
    if not spans:
        return None
    final = [spans[-1]]
    while len(final) < len(spans) and HEDGE.fullmatch(response[spans[-len(final) - 1][1]:final[0][0]]):
        final.insert(0, spans[-len(final) - 1])
    return _one_value([c for _, _, c in final])


def grade_gsm8k(response, gold):
    pred, ref = extract_gsm8k(response), _to_number(str(gold))
    return pred is not None and ref is not None and abs(pred - ref) < 1e-6


def _strip_math(s):
    """Hendrycks-style normalisation of a MATH answer string (string equivalence after cleanup). Two additions,
    both marked: thin spaces (\\,) are dropped and bmatrix is written as pmatrix (the same answer)."""
    s = s.strip().replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("\\,", "").replace("bmatrix", "pmatrix")                      # additions
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("$", "")
    if "\\text{ " in s:                                                         # units on the right: "5\text{ cm}"
        s = s.split("\\text{ ")[0]
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:  # "x = 5" -> "5"
        s = s.split("=")[1]
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)           # \frac12 -> \frac{1}{2}
    s = re.sub(r"\\frac\{([^}]*)\}(\d)", r"\\frac{\1}{\2}", s)     # \frac{1}2
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)                     # \sqrt3 -> \sqrt{3}
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)                      # addition: "x \in [2, 5]" -> "[2, 5]"
    s = s.replace(" ", "")
    if s == "0.5":
        s = "\\frac{1}{2}"
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):          # addition: thousands separators
        s = s.replace(",", "")
    return _slash_fraction(s)


def _slash_fraction(s):
    """'a/b' -> '\\frac{a}{b}' when both sides are single terms (a number, a letter, \\pi, \\sqrt{2}, a braced group,
    or a product of them): 1/2, \\sqrt{2}/2 and -\\pi/2 are fractions; 1+\\sqrt{2}/2 is not one."""
    m = re.fullmatch(r"(-?)([^/+\-=,]+)/([^/+\-=,]+)", s)
    if not m or not all(_balanced(x) for x in m.groups()[1:]):
        return s
    strip = lambda x: x[1:-1] if x[:1] + x[-1:] == "{}" and _balanced(x[1:-1]) else x
    return f"{m.group(1)}\\frac{{{strip(m.group(2))}}}{{{strip(m.group(3))}}}"


def _math_value(s):
    """A normalised MATH answer that is a plain number or a numeric fraction -> its value, else None."""
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m:
        return None if float(m.group(3)) == 0 else (-1 if m.group(1) else 1) * float(m.group(2)) / float(m.group(3))
    return float(s) if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s) else None


def _top_level_split(s):
    """Split on commas outside any brackets: "1,2" -> ["1", "2"]; "(1,2)" and "\\frac{1,2}" stay whole."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def math_equal(pred, gold):
    """Hendrycks's string equivalence after _strip_math, with departures, each because the strings differ while the
    answers do not: numbers compare by value (0.25 == \\frac14 == 1/4, 2.0 == 2; Hendrycks maps only 0.5 to
    \\frac{1}{2}), a bare comma-separated list ("2, 3", "all solutions, separated by commas") and a set (\\{2, 1\\})
    compare as multisets, a slash between two terms is a fraction (\\pi/2), thousands separators go (1,000), and
    "x \\in" before an interval goes; a bracketed tuple or interval keeps its order."""
    a, b = _strip_math(pred), _strip_math(gold)
    if a == b:
        return True
    sets = [re.fullmatch(r"\\\{(.*)\\\}", x) for x in (a, b)]
    if all(sets):                                                  # addition: sets, \{2, 1\} = \{1, 2\}
        return _same_multiset(_top_level_split(sets[0].group(1)), _top_level_split(sets[1].group(1)))
    va, vb = _math_value(a), _math_value(b)
    if va is not None and vb is not None:
        return abs(va - vb) <= 1e-9 * max(1.0, abs(vb))
    pa, pb = _top_level_split(a), _top_level_split(b)
    return len(pa) > 1 and _same_multiset(pa, pb)


def _same_multiset(pa, pb):
    """Two lists of answers equal as multisets (math_equal item by item)."""
    if len(pa) != len(pb):
        return False
    rest = list(pb)
    for x in pa:
        hit = next((i for i, y in enumerate(rest) if math_equal(x, y)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


def grade_math(response, gold):
    """The last \\boxed{} of each side (the gold may be bare), compared with math_equal."""
    pred = _boxed_all(response)
    ref = _boxed_all(str(gold)) or [str(gold)]
    return bool(pred) and math_equal(pred[-1], ref[-1])


def prompts_of(dllm, problems):
    """Left-padded prompt ids (B, P) and attention mask: each problem's question through the dLLM's chat template,
    its answer prefill after it."""
    return dllm.encode([dllm.prompt_text(p.question, SYSTEM_PROMPT if p.system is None else p.system,
                                         ANSWER_PREFIX if p.prefix is None else p.prefix) for p in problems])


def final_answer(task, response):
    """The final answer a response gives, comparable across responses (majority vote), or None: the digit after
    '#' (tiny tasks), the number (GSM8K), the last box, normalised (MATH). Code has no single answer: None."""
    if task in TINY_TASKS:
        m = re.search(r"#(\d)$", response)
        return m.group(1) if m else None
    if task == "gsm8k":
        v = extract_gsm8k(response)
        return None if v is None else round(v, 6)
    if task == "math500":
        boxes = _boxed_all(response)
        return _strip_math(boxes[-1]) if boxes else None
    return None


def answer_is_right(task, problem, answer):
    """Whether a final answer (final_answer) is the gold one: the majority vote's grade."""
    if answer is None:
        return False
    if task in TINY_TASKS:
        return answer == problem.gold
    if task == "gsm8k":
        ref = _to_number(str(problem.gold))
        return ref is not None and abs(answer - ref) < 1e-6
    return math_equal(answer, (_boxed_all(str(problem.gold)) or [str(problem.gold)])[-1])


def grade(task, problem, response):
    """The one grader: bool correct for a decoded response (text after the prompt, up to end-of-text)."""
    if task in TINY_TASKS:
        return grade_tiny(task, problem.question, response)
    if task == "gsm8k":
        return grade_gsm8k(response, problem.gold)
    if task == "math500":
        return grade_math(response, problem.gold)
    if task in CODE_TASKS:
        return codetasks.grade_code(problem, response)
    raise ValueError(f"unknown task {task!r}")


def grade_many(task, problems, responses):
    """[bool] for a batch of responses; code tasks run their programs in parallel on the machine's cores."""
    if task in CODE_TASKS:
        return codetasks.grade_code_many(problems, responses)
    return [grade(task, p, r) for p, r in zip(problems, responses)]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="print a few problems of a task")
    p.add_argument("--task", default="chain", help=f"one of {TINY_TASKS + REAL_TASKS}")
    p.add_argument("--n", type=int, default=3, help="how many")
    p.add_argument("--data", default=None, help="local jsonl for gsm8k / math500 / humaneval / mbpp")
    a = p.parse_args()
    try:
        probs = get_problems(a.task, a.n, data=a.data)
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")
    for pr in probs:
        if a.task in CODE_TASKS:
            print(f"--- prompt\n{pr.question}\n--- prefill\n{pr.prefix}\n--- tests\n{pr.gold}")
        else:
            print(f"{pr.question!r} -> gold {pr.gold!r}  reference {pr.reference!r}")
