"""
Read completion records (eval.py and sample.py write one JSON line per completion,
common.cli.append_records):

    python -m support.compare A.records.jsonl      # where the paper's grader and math-verify differ
    python -m support.compare A.records.jsonl B.records.jsonl   # where two runs' verdicts differ
    python -m support.compare A.jsonl B.jsonl --policy-a threshold:0.9 --policy-b out/p.pt

A file with several settings (a sweep) needs --policy-a / --policy-b to say which one to read.
"""
import json
from dataclasses import dataclass

from common.cli import interrupted, option, parse_config, read_records


@dataclass
class CompareConfig:
    a: str = option(None, "a records file (.records.jsonl)", positional="optional")
    b: str = option(None, "a second one: the problems on which the two differ",
                    positional="optional")
    policy_a: str = option(None, "the policy to read from the first file (when it has several)")
    policy_b: str = option(None, "the same for the second file")
    grader: str = option("paper", "whose verdicts two files are compared by: paper or verify")
    show: int = option(20, "lines to print at most")


def one_setting(path, policy):
    """The records of one setting of a file: {(problem, sample): record} and the setting's text."""
    recs = read_records(path)
    if not recs:
        raise ValueError(f"{path} holds no completion records")
    policy_of = lambda r: json.loads(r["setting"]).get("policy")
    settings = {r["setting"] for r in recs if policy is None or policy_of(r) == policy}
    if len(settings) != 1:
        names = sorted({policy_of(r) for r in recs})
        raise ValueError(f"{path} holds {len(settings)} settings for --policy {policy}: "
                         f"name one of {names}")
    setting = settings.pop()
    return {(r["problem"], r["sample"]): r for r in recs if r["setting"] == setting}, setting


def line(r, *extra):
    text = r["text"].replace("\n", " ")
    return f"  problem {r['id']} sample {r['sample']}: {' '.join(extra)}  {text[-80:]!r}"


def compare(cfg):
    """-> the (problem, sample) pairs printed: graders disagreeing (one file), or verdicts
    differing (two files)."""
    a, name_a = one_setting(cfg.a, cfg.policy_a)
    verdict = lambda ok: "right" if ok else "wrong"
    if cfg.b is None:
        diff = [k for k, r in a.items() if r["correct"] != r["correct_verify"]]
        print(f"{cfg.a}: {len(diff)} of {len(a)} completions graded differently by the paper's "
              f"rules and math-verify")
        for k in diff[:cfg.show]:
            r = a[k]
            print(line(r, f"paper {r['answer']!r} {verdict(r['correct'])},",
                       f"verify {r['answer_verify']!r} {verdict(r['correct_verify'])}"))
        return diff
    b, name_b = one_setting(cfg.b, cfg.policy_b)
    col = "correct" if cfg.grader == "paper" else "correct_verify"
    both = sorted(set(a) & set(b))
    diff = [k for k in both if a[k][col] != b[k][col]]
    print(f"{len(both)} completions in both; {len(diff)} graded differently ({cfg.grader}): "
          f"{sum(a[k][col] for k in diff)} right only in A, {sum(b[k][col] for k in diff)} right "
          f"only in B")
    print(f"  A {name_a}\n  B {name_b}")
    for k in diff[:cfg.show]:
        nfe = f"(A NFE {a[k]['nfe']}, B NFE {b[k]['nfe']})"
        print(line(a[k], "A right" if a[k][col] else "B right", nfe))
    return diff


def main(argv=None):
    try:
        cfg, _ = parse_config(CompareConfig, argv, "compare completion records",
                              "python -m support.compare")
        if cfg.a is None:
            raise ValueError("name a records file (eval.py writes NAME.records.jsonl beside --out)")
        if cfg.grader not in ("paper", "verify"):
            raise ValueError(f"--grader must be paper or verify, not {cfg.grader!r}")
        return compare(cfg)
    except KeyboardInterrupt:
        raise interrupted("interrupted") from None
    except (ValueError, OSError, KeyError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
