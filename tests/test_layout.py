"""The repository reads as a learning resource: the paper's method in 11 files at the top, on two
clean layers (the helpers in common/ below it, the experiments in support/ above it, nothing
pointing up), short functions in the method, no import circles, one grammar for policies (the
README's list is the registry's), a short README whose first command is near its top, and
product text that speaks of the project itself, not of its development history."""
import ast
import os
import re

from conftest import ROOT

METHOD = ("model.py", "env.py", "steps.py", "policy.py", "actions.py", "grpo.py", "train.py",
          "decode.py", "sample.py", "eval.py", "tasks.py")
SCRIPTS = ("train", "sample", "eval")


def modules():
    """Every project module -> its path (top level, common/ and support/)."""
    out = {}
    for folder in ("", "common", "support"):
        for f in sorted(os.listdir(os.path.join(ROOT, folder))):
            if f.endswith(".py") and f != "__init__.py":
                out[(folder + "." if folder else "") + f[:-3]] = os.path.join(ROOT, folder, f)
    return out


def imports(path, known):
    """(module, names) of the project modules a file imports, at its top or inside a function (a lazy import is still
    an edge)."""
    deps = []
    for n in ast.walk(ast.parse(open(path).read())):
        if isinstance(n, ast.Import):
            deps += [(a.name, ()) for a in n.names if a.name in known]
        elif isinstance(n, ast.ImportFrom) and n.module:
            if n.module in known:
                deps.append((n.module, tuple(a.name for a in n.names)))
            elif n.module in ("support", "common"):
                deps += [(f"{n.module}.{a.name}", ()) for a in n.names if f"{n.module}.{a.name}" in known]
    return deps


def layer(module):
    return 0 if module.startswith("common.") else 2 if module.startswith("support.") else 1


def test_the_method_files_at_the_top():
    top = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
    assert top == sorted(METHOD), top


def test_two_layers_and_no_circles():
    mods = modules()
    graph = {m: imports(p, mods) for m, p in mods.items()}
    for m, deps in graph.items():
        for d, _ in deps:
            assert layer(d) <= layer(m), f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)}): an arrow up"
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d, _ in graph[m]:
            assert state.get(d) != "open", f"import circle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"
    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_script_imports_a_script():
    """train, sample and eval share decode.py (decode and grade), never each other."""
    mods = modules()
    for m in SCRIPTS:
        bad = [d for d, _ in imports(mods[m], mods) if d in SCRIPTS]
        assert not bad, f"{m} imports {bad}"


def code_lines(path, fn):
    """Lines of code of a function below its docstring (blank lines and comments left out)."""
    lines = open(path).read().splitlines()
    body = fn.body
    doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    start = body[0].end_lineno if doc else body[0].lineno - 1
    return [l for l in lines[start:fn.end_lineno] if l.strip() and not l.strip().startswith("#")]


def test_method_functions_are_short():
    for f in METHOD:
        path = os.path.join(ROOT, f)
        for n in ast.walk(ast.parse(open(path).read())):
            if isinstance(n, ast.FunctionDef) and n.name != "main":
                assert len(code_lines(path, n)) <= 60, f"{f}: {n.name} has {len(code_lines(path, n))} lines of code"


def test_the_readme_lists_every_policy_spec_of_the_registry():
    from policy import spec_forms
    text = open(os.path.join(ROOT, "README.md")).read()
    listed = re.search(r"Policy specs: (.*?)\. ", text.replace("\n", " ")).group(1)
    assert re.findall(r"`([^`]+)`", listed) == spec_forms()


def test_readme_is_short_and_starts_with_the_first_command():
    text = open(os.path.join(ROOT, "README.md"), "rb").read()
    assert len(text) <= 16_000, len(text)
    head = text.decode().splitlines()[:40]
    assert any(l.startswith("python sample.py") for l in head) and any(l.startswith("python train.py") for l in head)
    for link in re.findall(r"\]\((docs/[^)#]+)", text.decode()):
        assert os.path.exists(os.path.join(ROOT, link)), link


def test_no_text_about_how_the_project_was_made():
    files = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))]
    files += list(modules().values())
    for path in files:
        text = open(path).read()
        for bad in (r"\bsessions?\b", r"\bissues?\b", r"\blent\b"):
            hits = [m.group(0) for m in re.finditer(bad, text, re.I)          # Popen's own word
                    if not re.search(r"start_new_session", text[max(0, m.start() - 10):m.end() + 1])]
            assert not hits, f"{os.path.relpath(path, ROOT)}: {hits}"


def test_the_walkthrough_names_real_code_and_its_numbers():
    """docs/walkthrough.md: every `file.py:name` it cites exists, and its numbers are those of the
    tiny run (the vocabulary, the policy's size, the first step's padded prompt length)."""
    import random
    from model import load_dllm
    from policy import LearnedPolicy, PolicyConfig
    from tasks import get_problems, prompts_of
    text = open(os.path.join(ROOT, "docs", "walkthrough.md")).read()
    for path, name in re.findall(r"`([\w/]+\.py):(\w+)", text):
        code = open(os.path.join(ROOT, path)).read()
        assert re.search(rf"^\s*(def|class) {name}\b|^{name} = ", code, re.M), f"{path}:{name}"
    dllm = load_dllm("tiny", device="cpu")
    problems = get_problems("chain", 100_000, 0, "train", None)
    random.Random(0).shuffle(problems)
    pad = prompts_of(dllm, problems[:16])[0].shape[1]
    params = sum(p.numel() for p in LearnedPolicy(PolicyConfig(init_bias=0.0)).parameters())
    assert f"V = {dllm.vocab_size}," in text and f"Pp = {pad} " in text
    assert f"{params:,} parameters" in text


def test_help_says_each_default_once(capsys):
    """Every script's --help gives a flag's default at most once, and never 'None'."""
    import pytest
    import eval as ev
    import sample
    import train
    from common.cli import parse_config
    for cls in (train.TrainConfig, sample.SampleConfig, ev.EvalConfig):
        with pytest.raises(SystemExit):
            parse_config(cls, ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text
        for flag in re.split(r"\s--(?=[a-z])", text)[1:]:
            assert flag.count("default") <= 1, flag
