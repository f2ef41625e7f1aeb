"""The repository reads as a learning resource: the paper's method in at most 9 files at the top, short functions
there, no import circles anywhere, a short README whose first command is near its top, and product text that speaks
of the project itself, not of its development history."""
import ast
import os
import re

from conftest import ROOT

METHOD = ("model.py", "env.py", "policy.py", "actions.py", "grpo.py", "train.py")


def modules():
    """Every project module -> its path (top level and support/)."""
    out = {}
    for folder in ("", "support"):
        for f in sorted(os.listdir(os.path.join(ROOT, folder))):
            if f.endswith(".py") and f != "__init__.py":
                out[(folder + "." if folder else "") + f[:-3]] = os.path.join(ROOT, folder, f)
    return out


def imports(path, known):
    """The project modules a file imports, at its top or inside a function (a lazy import is still an edge)."""
    deps = set()
    for n in ast.walk(ast.parse(open(path).read())):
        if isinstance(n, ast.Import):
            deps |= {a.name for a in n.names if a.name in known}
        elif isinstance(n, ast.ImportFrom) and n.module:
            if n.module in known:
                deps.add(n.module)
            elif n.module == "support":
                deps |= {f"support.{a.name}" for a in n.names if f"support.{a.name}" in known}
    return deps


def test_at_most_nine_files_at_the_top():
    top = [f for f in os.listdir(ROOT) if f.endswith(".py")]
    assert len(top) <= 9, sorted(top)
    assert set(METHOD) <= set(top) and {"sample.py", "eval.py", "tasks.py"} <= set(top)


def test_no_import_circles():
    mods = modules()
    graph = {m: imports(p, mods) for m, p in mods.items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in graph[m]:
            assert state.get(d) != "open", f"import circle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"
    for m in graph:
        if m not in state:
            visit(m, [m])
    assert "support.suite" not in set().union(*graph.values()) - graph["support.suite"]   # nothing imports the suite


def test_method_functions_are_short():
    for f in METHOD:
        for n in ast.walk(ast.parse(open(os.path.join(ROOT, f)).read())):
            if isinstance(n, ast.FunctionDef):
                assert n.end_lineno - n.lineno + 1 <= 80, f"{f}: {n.name} is {n.end_lineno - n.lineno + 1} lines"


def test_readme_is_short_and_starts_with_the_first_command():
    text = open(os.path.join(ROOT, "README.md"), "rb").read()
    assert len(text) <= 15_000, len(text)
    head = text.decode().splitlines()[:40]
    assert any(l.startswith("python sample.py") for l in head)
    for link in re.findall(r"\]\((docs/[^)#]+)", text.decode()):
        assert os.path.exists(os.path.join(ROOT, link)), link


def test_no_text_about_how_the_project_was_made():
    files = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))]
    files += list(modules().values())
    for path in files:
        text = open(path).read()
        for bad in (r"\bsessions?\b", r"\bissues?\b", r"\blent\b"):
            hits = [m.group(0) for m in re.finditer(bad, text, re.I)
                    if "start_new_session" not in text[max(0, m.start() - 10):m.end() + 1]]
            assert not hits, f"{os.path.relpath(path, ROOT)}: {hits}"
