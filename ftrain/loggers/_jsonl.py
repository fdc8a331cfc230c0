"""A logger in forty lines: the example to copy when writing your own.

Anything with the methods of ``ftrain.loggers.Logger`` is a logger; no base
class is needed. This one appends one JSON object per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

from .. import _fs

__all__ = ["JSONLinesLogger"]


class JSONLinesLogger:
    """Append ``{"step": step, **metrics}`` as one JSON line per ``log_metrics`` call.

    Hyperparameters are a line ``{"hparams": {...}}``. There is one file and
    no versions: ``version`` is always 0.

    Args:
      path_or_dir: a ``.jsonl`` file, or a folder to hold ``metrics.jsonl``.
      name: the experiment name reported by ``name``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> logger = JSONLinesLogger(tempfile.mkdtemp())
    >>> logger.log_metrics({"loss": 0.5}, step=3)
    >>> logger.finalize("success")
    >>> print(Path(logger.path).read_text(), end="")
    {"step": 3, "loss": 0.5}
    """

    def __init__(self, path_or_dir: str | os.PathLike[str], name: str = "jsonl") -> None:
        path = os.fspath(path_or_dir)
        if _fs.is_url(path):
            raise ValueError(
                f"JSONLinesLogger: path_or_dir={path!r} is a URL; this logger appends to a "
                "local file, which object stores cannot do. Use CSVLogger or "
                "TensorBoardLogger for a URL (they upload whole files)"
            )
        self.path = path if path.endswith(".jsonl") else os.path.join(path, "metrics.jsonl")
        self.name = name
        self.version: int | str = 0
        self.log_dir: str | None = os.path.dirname(os.path.abspath(self.path))
        self._file: TextIO | None = None  # opened on the first write

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._file.write(json.dumps(record, default=str) + "\n")

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Append the line ``{"hparams": params}``."""
        self._write({"hparams": dict(params)})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append the line ``{"step": step, **metrics}``."""
        self._write({"step": step, **metrics})

    def resume(self, version: int | str, step: int) -> None:
        """Drop the lines logged at steps >= ``step``; later lines append."""
        self.finalize("interrupted")
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if json.loads(line).get("step", -1) < step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(lines)

    def flush(self) -> None:
        """Push written lines to the operating system."""
        if self._file is not None:
            self._file.flush()

    def finalize(self, status: str) -> None:
        """Close the file; a later write reopens it."""
        if self._file is not None:
            self._file.close()
            self._file = None
