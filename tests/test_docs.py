"""The documentation runs: every python block of every page, and of the README.

The blocks of one page run in order in one fresh namespace, inside a temporary
working directory, so a page reads as one script. A block is skipped when its
fence says ``no-run`` (```` ```python title="train.py" no-run ````) or when the
line before the fence is ``<!-- no-run -->``: only for snippets that need
``torchrun`` or a shell. The API reference must name every public object.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

import ftrain

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
if not (ROOT / "mkdocs.yml").exists():  # e.g. the tests copied next to an installed wheel
    pytest.skip("the documentation is not part of this tree", allow_module_level=True)
PAGES = sorted(DOCS.rglob("*.md"))

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_NO_RUN = "<!-- no-run -->"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The runnable python blocks of a Markdown text as ``(first line, code)`` pairs."""
    blocks = []
    for match in _FENCE.finditer(text):
        words = match["info"].strip().split()
        if not words or words[0] not in ("python", "py") or "no-run" in words:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == _NO_RUN:
            continue
        first_line = text.count("\n", 0, match.start("body")) + 1
        blocks.append((first_line, textwrap.dedent(match["body"])))
    return blocks


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


class TestPythonBlocks:
    def test_fences_and_markers(self) -> None:
        """Only python fences run; `no-run` in the fence or a marker line skips one."""
        text = "\n".join(
            [
                "```python",
                "a = 1",
                "```",
                "```bash",
                "ls",
                "```",
                '```python title="train.py" no-run',
                "b = 2",
                "```",
                _NO_RUN,
                "```python",
                "c = 3",
                "```",
                "!!! note",
                "    ```py",
                "    d = 4",
                "    ```",
            ]
        )

        assert python_blocks(text) == [(2, "a = 1\n"), (16, "d = 4\n")]


@pytest.mark.parametrize("page", [*PAGES, README], ids=_page_id)
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page's python blocks run top to bottom without an error or a warning."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for first_line, code in python_blocks(page.read_text(encoding="utf-8")):
        # Pad so that a traceback points at the line of the Markdown file.
        source = "\n" * (first_line - 1) + code
        exec(compile(source, str(page), "exec"), namespace)


def _api_page() -> str:
    return (DOCS / "api.md").read_text(encoding="utf-8")


def test_api_reference_names_every_public_object() -> None:
    """Every name in ``ftrain.__all__`` has a ``::: ftrain.<name>`` entry (optax's check)."""
    entries = set(re.findall(r"^::: (ftrain\.[\w.]+)", _api_page(), re.MULTILINE))

    missing = sorted(f"ftrain.{name}" for name in ftrain.__all__ if f"ftrain.{name}" not in entries)

    assert missing == []


def test_api_reference_names_every_public_package() -> None:
    """Each public subpackage and module of ftrain has its own entry."""
    entries = set(re.findall(r"^::: (ftrain\.[\w.]+)", _api_page(), re.MULTILINE))
    package = Path(ftrain.__file__).parent
    public = {
        f"ftrain.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if not p.name.startswith("_")
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }

    assert sorted(public - entries) == []


def test_every_page_is_in_the_nav() -> None:
    """No page is left out of mkdocs.yml's nav, and the nav names no missing page of ours."""
    config = ROOT / "mkdocs.yml"
    listed = set(re.findall(r"([\w./-]+\.md)\s*$", config.read_text(), re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in PAGES}

    assert sorted(pages - listed) == []


def test_api_doctests_are_fenced() -> None:
    """The docs' griffe extension turns doctest runs into code blocks, once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("doctest_blocks", DOCS / "_ext/doctest_blocks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "Example:\n    >>> f(1)\n    [0, 1]\n\n    Then:\n\n    ```python\n    >>> g()\n    ```"

    expected = (
        "Example:\n    ```pycon\n    >>> f(1)\n    [0, 1]\n    ```\n\n    Then:\n\n"
        "    ```python\n    >>> g()\n    ```"
    )
    assert module.fence_doctests(text) == expected


def _quickstart_lines(path: Path) -> list[str]:
    return [
        line.split("#")[0].rstrip()
        for line in path.read_text().splitlines()
        if line.startswith("python3 ") and "nox -s " in line
    ]


def test_quickstart_commands_are_the_same_everywhere() -> None:
    """README, index and getting-started give the same two commands, each making its own venv."""
    lines = _quickstart_lines(README)
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["demo", "tests"]
    for line in lines:
        # PEP 668: a stock Debian python3 refuses a system-wide pip install.
        assert line.startswith("python3 -m venv .venv && .venv/bin/pip install "), line
        assert "python3 -m pip" not in line and "python3 -m nox" not in line
    for page in (DOCS / "index.md", DOCS / "getting-started.md"):
        assert _quickstart_lines(page) == lines, page


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run extracts the README's test command and runs that text."""
    script = (ROOT / ".ci" / "run").read_text()
    extract = next(line for line in script.splitlines() if line.startswith("tests_cmd=$("))
    out = subprocess.run(
        ["bash", "-c", f'{extract}; printf %s "$tests_cmd"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == _quickstart_lines(README)[1]
    assert 'bash -c "$tests_cmd"' in script
