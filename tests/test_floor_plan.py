"""The floor plan, guarded: every import points down, and nothing grows past the size limits.

Floors, from the ground up (README, "Layout"): ``basics`` (standard library, numpy, torch,
safetensors) < ``sim`` < ``control`` and ``reward_models`` (side by side; neither imports the
other) < ``ros`` < ``jobs`` (the CLI and one module per job; the only readers of Hydra configs)
< ``benchmarks``. The imports are read with :mod:`ast` from every module, those inside functions
included, so a new upward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> floor; a package may import its own floor's package and any lower floor, except the
#: pairs in SIDE_BY_SIDE.
FLOORS = {"basics": 0, "sim": 1, "control": 2, "reward_models": 2, "ros": 3, "jobs": 4, "configs": 4,
          "benchmarks": 5}
SIDE_BY_SIDE = {("control", "reward_models"), ("reward_models", "control")}
#: what the ground floor may import beyond the standard library
GROUND_ALLOWED = {"numpy", "torch", "safetensors"}
MAX_FUNCTION_LINES = 120
MAX_FILE_LINES = 800


def _modules():
    for pkg in FLOORS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield pkg, path


def _imports(path: Path):
    """(line number, imported top-level name, dotted module, inside a function?) per import."""
    tree = ast.parse(path.read_text())
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    inner.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name.split(".")[0], a.name, id(node) in inner
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module.split(".")[0], node.module, id(node) in inner


def test_every_import_points_down():
    bad = []
    for pkg, path in _modules():
        for line, top, module, _ in _imports(path):
            if top not in FLOORS or top == pkg:
                continue
            if FLOORS[top] > FLOORS[pkg] or (FLOORS[top] == FLOORS[pkg]) or (pkg, top) in SIDE_BY_SIDE:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({pkg}, floor {FLOORS[pkg]}) imports {module} "
                           f"(floor {FLOORS[top]})")
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_ground_floor_imports_only_stdlib_numpy_torch_safetensors():
    import sys

    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for pkg, path in _modules() if pkg == "basics"
           for line, top, module, _ in _imports(path)
           if top not in sys.stdlib_module_names and top not in GROUND_ALLOWED and top != "basics"]
    assert not bad, "\n".join(bad)


def test_project_imports_inside_functions_are_marked_lazy():
    """A project import inside a function hides the structure; it is allowed only where a heavy or
    optional dependency (rclpy, transformers, warp, ...) must stay lazy, and the line says so
    with a comment containing "lazy" (on the import's line or the line above)."""
    bad = []
    for _, path in _modules():
        lines = path.read_text().splitlines()
        for line, top, module, inside in _imports(path):
            if not inside or top not in FLOORS:
                continue
            near = " ".join(lines[max(0, line - 2):line])
            if "#" not in near or "lazy" not in near.lower():
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a function")
    assert not bad, "unmarked project imports inside functions:\n" + "\n".join(bad)


def test_no_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for _, path in _modules():
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = {m for _, top, m, _ in _imports(path) if top in FLOORS}
    names = set(graph)

    def resolve(m):  # "sim" or "control.sac" -> a module of the graph
        return m if m in names else None

    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for m in graph.get(n, ()):
            m = resolve(m)
            if m is None or m == n:
                continue
            if state.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_no_function_longer_than_the_limit(limit):
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {limit} lines:\n" + "\n".join(long)


def test_no_file_longer_than_the_limit():
    long = [f"{path.relative_to(ROOT)} ({n} lines)" for _, path in _modules()
            if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(long)


def test_the_library_never_takes_a_hydra_config():
    """Only the jobs read Hydra configs; the library floors take plain arguments or typed configs."""
    bad = [f"{path.relative_to(ROOT)}:{i}" for pkg, path in _modules() if pkg in ("basics", "sim", "control",
                                                                                     "reward_models", "ros")
           for i, text in enumerate(path.read_text().splitlines(), 1)
           if "DictConfig" in text or "from omegaconf" in text or "from hydra" in text or "import hydra" in text]
    assert not bad, "library code that reads Hydra configs:\n" + "\n".join(bad)
