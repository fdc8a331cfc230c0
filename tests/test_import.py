"""The package surface: a light import, a docstring on every public name, working examples."""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types

import pytest

import ftrain
import ftrain.testing

# Modules `import ftrain` must leave unloaded (the driver loads them when used).
_HEAVY = ("tensorboard", "tqdm", "torch.utils.tensorboard")
# Type aliases and constants carry no docstring of their own.
_UNDOCUMENTED = {"Metrics", "Step", "PRECISIONS"}

_PROBE = """
import json, sys, time
import torch
before = set(sys.modules)
start = time.perf_counter()
import ftrain
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "new": sorted(set(sys.modules) - before)}))
"""


@pytest.fixture(scope="module")
def fresh_import() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_no_logger_or_progress_bar(fresh_import: dict) -> None:
    """`import ftrain` (after `import torch`) loads neither tensorboard nor tqdm."""
    loaded = [
        name
        for name in fresh_import["new"]
        if any(name == heavy or name.startswith(heavy + ".") for heavy in _HEAVY)
    ]
    assert loaded == []
    assert "ftrain" in fresh_import["new"]


def test_import_is_fast(fresh_import: dict) -> None:
    """`import ftrain` after `import torch` takes under 0.5 s (a generous guard)."""
    assert fresh_import["seconds"] < 0.5


def _public(module: types.ModuleType) -> list[tuple[str, object]]:
    return [(name, getattr(module, name)) for name in module.__all__ if name not in _UNDOCUMENTED]


@pytest.mark.parametrize(
    ("name", "obj"),
    _public(ftrain) + [(f"testing.{n}", o) for n, o in _public(ftrain.testing)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_public_name_has_a_docstring(name: str, obj: object) -> None:
    """Each name in ftrain.__all__ (and ftrain.testing.__all__) has its own docstring."""
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"ftrain.{name} has no docstring"
    if isinstance(obj, type):
        assert obj.__doc__ is not None, f"ftrain.{name} only inherits its docstring"


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted (constants first, as ruff sorts it) and names only existing attributes."""
    for module in (ftrain, ftrain.testing):
        assert list(module.__all__) == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
        assert all(hasattr(module, name) for name in module.__all__)


def _modules() -> list[str]:
    names = ["ftrain"]
    for info in pkgutil.walk_packages(ftrain.__path__, "ftrain."):
        if info.name.split(".")[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


_CORE_WITH_EXAMPLES = {
    "ftrain._combinators",
    "ftrain._precision",
    "ftrain._seed",
    "ftrain._state",
    "ftrain._step",
    "ftrain.testing",
}


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name: str) -> None:
    """Every example in the docstrings of ftrain's modules runs and prints what it shows."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}"
    if module_name in _CORE_WITH_EXAMPLES:
        assert result.attempted > 0, f"{module_name} has no doctested example"
