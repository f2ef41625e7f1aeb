"""
Tasks: problems, prompts and graders. One grader per task serves both the GRPO reward and
evaluation.

Real tasks (the paper's protocol): GSM8K (train/test) and MATH-500, zero-shot, with the
"<reasoning>...</reasoning><answer>...</answer>" instruction. Downloaded on first use into a cache
directory, or read from a local jsonl with `--data`. The code tasks (HumanEval, MBPP: the paper's
out-of-domain experiment) and their sandboxed grader live in common/codetasks.py; `grade_many`
grades a batch, code in parallel.

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
import math
import os
import random
import re
import threading

from common import codetasks
# noqa: F401 (Problem: the record every task yields)
from common.data import CACHE, Problem, fetch_once, jsonl_rows


# --------------------------------------------------------------------------------------------------
# problems (each a common.data.Problem: question, gold, reference, system, prefix)

TINY_TASKS = ("chain", "sub")
# their problems and sandboxed grader: common/codetasks.py
CODE_TASKS = ("humaneval", "mbpp")
REAL_TASKS = ("gsm8k", "math500") + CODE_TASKS
MOD = 10          # the running value is kept modulo MOD
# the digits steps are made of: small tables the tiny dLLM learns (100% one step at a time)
TERMS = (1, 2, 3)
STEPS = (5, 7)    # a chain has 5-7 steps: too many for the tiny dLLM to compute in one forward
# a step is written in 4 characters: op, digit, value, filler (the value at offset 2)
STEP_CHARS = 4
# harmless words: a free letter follows each partial value; the grader ignores them
FILLER = "abcdefghijklmnop"


def apply_op(value, op, d):
    """One step of the chain: '+' adds d, '~' reflects (value -> d - value), both modulo 10. They do
    not commute, so there is no counting shortcut to the answer (a small model still does part of it
    in one shot)."""
    return (value + d if op == "+" else d - value) % MOD


def make_chain(rng):
    """Start digit and 5-7 steps in a fixed order; answer: each step (its op and digit copied from
    the prompt), its value and one free filler letter, then '#' and the final value."""
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
    """n problems of a tiny task (train or test split: disjoint seeds; pretraining draws its own
    stream)."""
    make = {"chain": make_chain, "sub": make_sub}[task]
    rng = random.Random(f"{task}-{split}-{seed}")
    return [make(rng) for _ in range(n)]


def grade_tiny(task, question, response):
    """True iff `response` is a valid derivation for `question`, checked like a teacher would.
    chain: the prompt's steps in the prompt's order, every value right, filler letters (0-2 after a
    value) ignored, the answer after '#' equal to the last value. sub: the start, then each prompt
    digit subtracted once in any order, every value right, the answer equal to the last value.
    Exact, no partial credit."""
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


# --------------------------------------------------------------------------------------------------
# real tasks: data

GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
MATH500_REPO = "HuggingFaceH4/MATH-500"


SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. Respond in the following format:\n"
    "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>")
ANSWER_PREFIX = "<reasoning>\n"  # written as the start of the answer (the paper's eval prompt)


def read_jsonl(path, task):
    """Read a local jsonl. GSM8K rows need 'question' and 'answer' ('... #### 42', or a bare
    number); MATH rows need 'problem' and 'answer'. A row whose answer cannot be graded (no number
    after '####', an empty MATH answer) is refused here, not graded wrong later."""
    need = ("question", "answer") if task == "gsm8k" else ("problem", "answer")

    def check(row):
        if not isinstance(row[need[0]], str) or not isinstance(row["answer"], (str, int, float)) \
                or isinstance(row["answer"], bool):
            return f"'{need[0]}' must be a string and 'answer' a string or a number"
        gold = str(row["answer"]).split("####")[-1].strip() if task == "gsm8k" else str(
            row["answer"]).strip()
        if task == "gsm8k" and gsm8k_gold(gold) is None:
            return (
                f"its answer {gold[:40]!r} has no number to grade against (GSM8K answers end in "
                "'#### <number>', a finite one)")
        if not gold or (task == "math500" and not math_gold(gold)):
            return f"its 'answer' {gold[:40]!r} is empty: nothing to grade against"
        return None
    return jsonl_rows(path, task, need, check)


def _download_real(task, split):
    if task == "gsm8k":
        return fetch_once(GSM8K_URL.format(split=split),
                          os.path.join(CACHE, f"gsm8k_{split}.jsonl"), "GSM8K")
    try:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(MATH500_REPO, "test.jsonl", repo_type="dataset", cache_dir=CACHE)
    except Exception as e:  # offline, gated, or no huggingface_hub
        raise RuntimeError(
            f"could not download MATH-500 ({type(e).__name__}); pass a local jsonl with --data"
        ) from None


def real_problems(task, split="test", data=None, n=None):
    if task in CODE_TASKS:
        return codetasks.code_problems(task, split, data)[:n]
    if task == "math500" and split == "train" and not data:
        raise ValueError(
            "MATH-500 has no train split to download; pass a local jsonl of MATH problems with "
            "--data")
    rows = read_jsonl(data or _download_real(task, split), task)[:n]
    # the official answer is "reasoning #### 42"; a bare number (42) is accepted too
    if task == "gsm8k":
        return [Problem(r["question"], str(r["answer"]).split("####")[-1].strip()) for r in rows]
    return [Problem(r["problem"], str(r["answer"])) for r in rows]


def check_task(task, data=None):
    """A task the scripts know, and --data only where it is read (the tiny tasks are generated)."""
    if task not in TINY_TASKS + REAL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TINY_TASKS + REAL_TASKS}")
    if data and task in TINY_TASKS:
        raise ValueError(
            f"--data is for {' / '.join(REAL_TASKS)}; the {task} task is generated, not read")
    if task in CODE_TASKS:
        # generated code runs only in a sandbox (or with the user's explicit opt-in)
        codetasks.isolation()


SPLITS = ("train", "validation", "test")


def check_split(task, split):
    """A split the task has: the tiny tasks draw each from its own stream, MBPP has all three, GSM8K
    train and test, MATH-500 and HumanEval test (and a local --data file of any split)."""
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


# --------------------------------------------------------------------------------------------------
# real tasks: two graders. `paper` is the paper's protocol exactly, quirks included (its numbers
# compare with the paper's table only under it); `verify` is HF's math-verify, an independent grader
# that parses LaTeX and plain answers and checks equivalence with sympy. Both are computed for every
# completion; `paper` is the default reward and the rows' `accuracy`, `verify` is `accuracy_verify`
# beside it (docs/design.md, "Graders").

def training_sets(task, seed, data=None, least=1, eval_n=0):
    """GRPO's problems: the training split shuffled by seed (every problem of a real task, 100,000
    of a tiny one) and, for a tiny task, eval_n held-out test problems. Fewer training problems
    than `least` (one GRPO step's prompts) is an error."""
    train = get_problems(task, None if task in REAL_TASKS else 100_000, seed, "train", data)
    random.Random(seed).shuffle(train)
    if len(train) < least:
        raise ValueError(
            f"{len(train)} training problems{f' in {data}' if data else ''}: one GRPO step takes "
            f"--prompts-per-step {least} of them; pass more data or a smaller step")
    held = get_problems(task, eval_n, seed, "test", None) if eval_n and task in TINY_TASKS else []
    return train, held


GRADERS = ("paper", "verify")
# the paper's number pattern: no '+', no exponent, no thousands groups
PAPER_NUMBER = re.compile(r"-?\d+\.?\d*")


def _float(s):
    """float(s) if s reads as a finite number, else None."""
    try:
        v = float(s)
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def _paper_number(text, which):
    """The paper's reading of a box's or answer tag's text: commas, '$' and spaces removed, the
    whole text if it parses, else its first (which=0) or last (which=-1) number."""
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    v = _float(s)
    if v is None and (nums := PAPER_NUMBER.findall(s)):
        v = _float(nums[which])
    return v


def paper_gsm8k(response):
    """The paper's GSM8K answer (its extract_gsm_answer) -> float or None. Quirks kept on purpose:
    - a box's text ends at its first '}' (the pattern \\boxed{(.*?)}), so nested braces cut it (\\boxed{2{,}500} is 2);
    - the FIRST box that holds a number wins; a later box is never read, the one inside <answer> included;
    - a box's number is its whole text, else its first number (\\boxed{8 pets (3 dogs + 5 cats)} is 8);
      empty and all-dots boxes are skipped;
    - without such a box, the FIRST complete <answer>...</answer>: its whole text, else its LAST number;
      an unclosed tag gives nothing, and text outside tags and boxes is never read."""
    for box in re.findall(r"\\boxed{(.*?)}", response):
        if box.strip() and not re.fullmatch(r"\.+", box.strip()):
            v = _paper_number(box, 0)
            if v is not None:
                return v
    m = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
    return _paper_number(m.group(1), -1) if m and m.group(1).strip() else None


def gsm8k_gold(gold):
    """The number after '####' in a GSM8K reference (or a bare number), or None."""
    return _float(str(gold).split("####")[-1].strip().replace(",", "").replace("$", ""))


def last_boxed(text):
    """The last '\\boxed{...}' (or '\\fbox{...}') of text with its braces balanced, or None
    (Hendrycks' last_boxed_only_string)."""
    i = text.rfind("\\boxed")
    i = text.rfind("\\fbox") if i < 0 else i
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if text[j] == "}" and depth == 0:
            return text[i:j + 1]
    return None


def remove_boxed(s):
    """'\\boxed{X}' -> 'X' ('\\boxed X' -> 'X'); anything else (\\fbox included) -> None."""
    if s is None:
        return None
    if s.startswith("\\boxed "):
        return s[len("\\boxed "):]
    return s[len("\\boxed{"):-1] if s.startswith("\\boxed{") and s.endswith("}") else None


def paper_math(response):
    """The paper's MATH answer: the last box's text, else the first complete <answer>...</answer>'s,
    or None."""
    ans = remove_boxed(last_boxed(response))
    if not ans:
        m = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
        ans = m.group(1).strip() if m else None
    return ans or None


def math_gold(gold):
    """A MATH reference answer: its last box's text when it has one (a full solution), else itself.
    """
    inner = remove_boxed(last_boxed(str(gold)))
    return (str(gold) if inner is None else inner).strip()


def _fix_fracs(s):
    """\\frac12 -> \\frac{1}{2}, \\frac1{2} -> \\frac{1}{2} (Hendrycks)."""
    parts = s.split("\\frac")
    out = parts[0]
    for p in parts[1:]:
        out += "\\frac"
        if p[:1] == "{":
            out += p
        elif len(p) < 2:
            return s
        elif p[1] != "{":
            out += "{" + p[0] + "}{" + p[1] + "}" + p[2:]
        else:
            out += "{" + p[0] + "}" + p[1:]
    return out


def _fix_a_slash_b(s):
    """'3/4' (two integers exactly) -> \\frac{3}{4}."""
    a, _, b = s.partition("/")
    if s.count("/") == 1 and a.isdigit() and b.isdigit() and s == f"{int(a)}/{int(b)}":
        return "\\frac{" + a + "}{" + b + "}"
    return s


def _fix_sqrt(s):
    """\\sqrt3 -> \\sqrt{3}; IndexError on a bare trailing \\sqrt (is_equiv then compares the raw
    strings)."""
    parts = s.split("\\sqrt")
    return parts[0] + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:])
                              for p in parts[1:])


def strip_string(s):
    """Hendrycks' MATH normalisation (the paper's is_equiv), step by step in its order. Its quirks
    stay: a unit is dropped only after '\\text{ ' (with the space), and only when there is one such;
    any 'v = x' with a left side of at most two characters becomes 'x'; 0.5 is the one decimal equal
    to a fraction (\\frac{1}{2})."""
    for a, b in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                 ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(a, b)
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("several units")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    s = "0" + s if s[0] == "." else s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    return _fix_a_slash_b("\\frac{1}{2}" if s == "0.5" else s)


def is_equiv(a, b):
    """The paper's MATH equivalence: strip_string of both equal; when normalising fails, the raw
    strings equal."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except (ValueError, IndexError):
        return a == b


def _verify_parse(text):
    """math-verify's parse of a response: the whole text, else the <answer> region (it finds nothing
    in '<answer>-5</answer>' alone), else nothing."""
    from math_verify import parse
    got = parse(text, parsing_timeout=_timeout())
    if not got and (m := re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.DOTALL)):
        got = parse("$" + m.group(1).strip() + "$", parsing_timeout=_timeout())
    return got


def _timeout():
    """math-verify's time limit in seconds: it sets an alarm signal, which only the main thread may.
    """
    return 5 if threading.current_thread() is threading.main_thread() else None


def verify_grade(task, response, gold):
    """(the answer math-verify read, as text, or None; correct) for a GSM8K or MATH response and its
    gold."""
    from math_verify import parse, verify
    pred = _verify_parse(response)
    if not pred:
        return None, False
    ref = str(gold).split("####")[-1].strip().replace(
        ",", "") if task == "gsm8k" else "$" + math_gold(gold) + "$"
    return str(pred[-1]), bool(
        verify(parse(ref, parsing_timeout=_timeout()), pred, timeout_seconds=_timeout()))


def prompts_of(dllm, problems):
    """Left-padded prompt ids (B, P) and attention mask: each problem's question through the dLLM's
    chat template, its answer prefill after it."""
    return dllm.encode([
        dllm.prompt_text(p.question, SYSTEM_PROMPT if p.system is None else p.system,
                         ANSWER_PREFIX if p.prefix is None else p.prefix) for p in problems])


def math_key(answer):
    """A MATH answer as the paper compares it: strip_string's normal form (the raw text where that
    fails)."""
    try:
        return strip_string(answer)
    except (ValueError, IndexError):
        return answer


def final_answer(task, response):
    """The final answer a response gives by the paper's rules, comparable across responses (majority
    vote), or None: the digit after '#' (tiny tasks), the number (GSM8K), the answer in normal form
    (MATH). Code: None."""
    if task in TINY_TASKS:
        m = re.search(r"#(\d)$", response)
        return m.group(1) if m else None
    if task == "gsm8k":
        v = paper_gsm8k(response)
        return None if v is None else round(v, 6)
    if task == "math500":
        a = paper_math(response)
        return None if a is None else math_key(a)
    return None


def answer_is_right(task, problem, answer):
    """Whether a final answer (final_answer) is the gold one: the majority vote's grade."""
    if answer is None:
        return False
    if task in TINY_TASKS:
        return answer == problem.gold
    if task == "gsm8k":
        return abs(answer - gsm8k_gold(problem.gold)) < 1e-6
    return answer == math_key(math_gold(problem.gold))


def grade(task, problem, response, grader="paper"):
    """The one grader: bool correct for a decoded response (text after the prompt, up to
    end-of-text). GSM8K and MATH by the paper's rules (grader='paper') or math-verify's ('verify');
    tiny and code tasks have one grader."""
    if task in TINY_TASKS:
        return grade_tiny(task, problem.question, response)
    if task in CODE_TASKS:
        return codetasks.grade_code(problem, response)
    if task not in ("gsm8k", "math500"):
        raise ValueError(f"unknown task {task!r}")
    if grader == "verify":
        return verify_grade(task, response, problem.gold)[1]
    if task == "gsm8k":
        pred = paper_gsm8k(response)
        return pred is not None and abs(pred - gsm8k_gold(problem.gold)) < 1e-6
    pred = paper_math(response)
    return pred is not None and is_equiv(pred, math_gold(problem.gold))


def grade_many(task, problems, responses, grader="paper"):
    """[bool] for a batch of responses; code tasks run their programs in parallel on the machine's
    cores."""
    if task in CODE_TASKS:
        return codetasks.grade_code_many(problems, responses)
    return [grade(task, p, r, grader) for p, r in zip(problems, responses)]


def grade_both(task, problems, responses):
    """Both graders on a batch -> [dict(answer, correct, answer_verify, correct_verify)]: the
    answers each read (as text) and their verdicts. Tasks with one grader give it twice."""
    paper = grade_many(task, problems, responses)
    out = []
    for p, r, ok in zip(problems, responses, paper):
        if task in ("gsm8k", "math500"):
            a = paper_gsm8k(r) if task == "gsm8k" else paper_math(r)
            av, okv = verify_grade(task, r, p.gold)
        else:
            a, av, okv = final_answer(task, r), final_answer(task, r), ok
        out.append(dict(answer=None if a is None else str(a), correct=bool(ok),
                        answer_verify=None if av is None else str(av), correct_verify=bool(okv)))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="print a few problems of a task")
    p.add_argument("--task", default="chain", help=f"one of {TINY_TASKS + REAL_TASKS}")
    p.add_argument("--n", type=int, default=3, help="how many")
    p.add_argument("--data", default=None,
                   help="local jsonl for gsm8k / math500 / humaneval / mbpp")
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
