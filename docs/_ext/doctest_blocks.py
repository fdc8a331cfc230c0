"""A griffe extension for the API reference: doctest examples render as code.

ftrain's docstrings hold doctests under ``Example:`` or with no heading at all.
Griffe's Google parser only knows ``Examples:``, so elsewhere the ``>>>`` lines
would be read as Markdown (``[0, 1]`` becomes a link). This extension wraps
every run of doctest lines (prompts, continuations and expected output) in a
``pycon`` code fence before the docstring is parsed.
"""

from __future__ import annotations

from typing import Any

try:
    import griffe

    _Extension: Any = griffe.Extension
except ModuleNotFoundError:  # the pure function below is tested without the docs tools
    _Extension = object

_FENCE = "```"


def fence_doctests(text: str) -> str:
    """Wrap each doctest run of ``text`` (outside existing fences) in a ``pycon`` fence."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(_FENCE):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}{_FENCE}pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}{_FENCE}")
    return "\n".join(out)


class DoctestBlocks(_Extension):
    """Fence the doctests of every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
