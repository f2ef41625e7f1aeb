"""
The two graders side by side on answer formats a real model writes, each with a careful human's
verdict: the paper's protocol (tasks.grade, its rules exactly) and math-verify
(tasks.verify_grade). A number is comparable with the paper's table only under the paper's rules;
math-verify is the independent check beside it.

    python -m support.graders            # the table (docs/real-models.md shows it)
"""
from tasks import Problem, grade, paper_gsm8k, paper_math, verify_grade

# Formats a real model writes, with a careful human's verdict (response, gold, right): math-verify
# reads them all but its known limits below; the paper's rules miss more (tests/test_tasks.py).
HUMAN_GSM8K = [
    ("\\boxed{2{,}500}", "2500", True),
    ("\\boxed{\\mathbf{18}}", "18", True),
    ("\\boxed{\\$1.2 \\text{ million}}", "1200000", True),
    ("<answer>8 pets (3 dogs + 5 cats)</answer>", "8", True),
    ("<answer>42 apples, 7 of which are red</answer>", "42", True),
    ("Step 1: \\boxed{6} eggs used. Final answer: \\boxed{18}", "18", True),
    ("\\boxed{1.5 \\times 10^3}", "1500", True),
    ("\\boxed{60\\text{ km/h}}", "60", True),
    ("\\boxed{18 \\; \\text{dollars}}", "18", True),
    ("<answer>72</answer> <answer>", "72", True),
    ("She earns 9 an hour, so 8 hours give 72. The answer is 72.", "72", True),
    ("<answer>\\boxed{15} or \\boxed{12}</answer>", "15", False),
    ("<answer>\\boxed{4}</answer>", "4", True),
    ("\\boxed{1,234}", "1234", True),
    ("<answer>-5</answer>", "-5", True),
    ("\\boxed{3.50}", "3.5", True),
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("\\boxed{7}", "-7", False),
    ("no answer at all", "3", False),
    ("\\boxed{10\\%}", "10", True),
    ("<answer>\\boxed{x = 10}</answer>", "10", True),
    ("\\boxed{\\$18}", "18", True),
    ("\\boxed{12,345,678}", "12345678", True),
    ("<reasoning>so \\boxed{12} first</reasoning><answer>\\boxed{15}</answer>", "15", True),
]
HUMAN_MATH = [
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", True),
    ("\\boxed{\\textbf{(B)}}", "\\text{(B)}", True),
    ("\\boxed{B}", "\\text{(B)}", True),
    ("\\boxed{(3,\\ 4)}", "(3,4)", True),
    ("\\boxed{\\frac12}", "\\frac{1}{2}", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac34", True),
    ("\\boxed{90^\\circ}", "90", True),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", True),
    ("\\boxed{\\pi/2}", "\\frac{\\pi}{2}", True),
    ("\\boxed{(3, 4)}", "(4, 3)", False),
    ("\\boxed{x \\in [2, 5]}", "[2,5]", True),
    ("\\boxed{2.0}", "2", True),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
     "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
]
VERIFY_LIMITS = {   # what math-verify reads differently from a human: (task, response) -> why
    ("gsm8k", "\\boxed{\\$1.2 \\text{ million}}"):
        "a scale word after the number is dropped (1.2)",
    ("gsm8k", "<answer>8 pets (3 dogs + 5 cats)</answer>"):
        "the last number of a sentence (5)",
    ("gsm8k", "<answer>42 apples, 7 of which are red</answer>"):
        "the last number of a sentence (7)",
}


def table():
    """The markdown table of every format: the human's verdict, each grader's answer and verdict,
    and the counts."""
    lines = ["| task | response | gold | human | paper | math-verify |",
             "|---|---|---|---|---|---|"]
    miss = dict(paper=0, verify=0)
    for task, cases in (("gsm8k", HUMAN_GSM8K), ("math500", HUMAN_MATH)):
        for response, gold, human in cases:
            p = grade(task, Problem("q", gold), response)
            pa = paper_gsm8k(response) if task == "gsm8k" else paper_math(response)
            va, v = verify_grade(task, response, gold)
            miss["paper"] += p != human
            miss["verify"] += v != human
            mark = lambda ok: ("right" if ok else "wrong") + ("" if ok == human else " **(miss)**")
            cell = lambda t: "`" + str(t).replace("|", "\\|").replace("\n", " ") + "`"
            lines.append(f"| {task} | {cell(response)} | {cell(gold)} | "
                         f"{'right' if human else 'wrong'} | "
                         f"{cell(pa)} {mark(p)} | {cell(va)} {mark(v)} |")
    n = len(HUMAN_GSM8K) + len(HUMAN_MATH)
    lines.append(f"\nOf {n} formats the paper's rules disagree with the human on {miss['paper']}, "
                 f"math-verify on {miss['verify']} (its known limits: "
                 + "; ".join(VERIFY_LIMITS.values()) + ").")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
