"""The shape of the code: no import cycles (imports inside functions count), sizes, layers."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import ftrain

_ROOT = pathlib.Path(ftrain.__file__).parent


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """Module name -> (file, is a package) for every module of ftrain."""
    found = {}
    for path in _ROOT.rglob("*.py"):
        parts = list(path.relative_to(_ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _resolve(node: ast.ImportFrom, module: str, package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Edges module -> ftrain modules it imports, anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, package)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    """The finder reports a cycle through three modules and none in a chain."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_imports_inside_functions() -> None:
    """An import inside a function body is an edge like a top-level one."""
    graph = import_graph()
    assert "ftrain.driver._fit" in graph["ftrain.driver"]
    assert all(isinstance(targets, set) for targets in graph.values())
    assert len(graph) == len(_modules()) > 40


def test_no_import_cycles() -> None:
    """No module of ftrain reaches itself through imports, counting function-level ones."""
    assert cycles(import_graph()) == []


def test_no_module_imports_the_package_root() -> None:
    """Inner modules never import ``ftrain`` itself (its __init__ imports everything)."""
    offenders = [m for m, targets in import_graph().items() if "ftrain" in targets]
    assert offenders == []


def test_import_linter_layers_contract() -> None:
    """The layers contract of pyproject.toml holds (CI runs it in the lint session)."""
    pytest.importorskip("importlinter")
    repo = _ROOT.parent
    if not (repo / "pyproject.toml").exists():
        pytest.skip("runs from a source checkout only")
    command = "from importlinter.cli import lint_imports_command as c; c()"
    out = subprocess.run(
        [sys.executable, "-c", command],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]


# A module reads top to bottom (STYLE.md: about 500 lines); a function on one screen
# (about 60 lines of code, at most about 80; a docstring does not count).
_MODULE_LINES = 510
_FUNCTION_LINES = 80


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = first.end_lineno + 1 if docstring and first.end_lineno else node.lineno
    return (node.end_lineno or node.lineno) - start + 1


def test_module_and_function_sizes() -> None:
    """No module of ftrain over ~500 lines, no function over ~80 lines of code."""
    too_long = []
    for name, (path, _) in _modules().items():
        text = path.read_text()
        if text.count("\n") > _MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and _code_lines(node) > _FUNCTION_LINES:
                too_long.append(f"{name}.{node.name}: {_code_lines(node)} lines")
    assert too_long == []
