"""CSV logger: one row per ``log_metrics`` call in ``metrics.csv``, as Lightning writes it."""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Mapping
from typing import Any

from .. import _fs
from ._base import VersionedLogger, save_hparams_json

__all__ = ["CSVLogger"]

METRICS_FILE = "metrics.csv"


def _columns(keys: Collection[str]) -> list[str]:
    """``step`` first, then ``epoch`` if present, then the other keys sorted."""
    rest = set(keys) - {"step", "epoch"}
    head = ["step", "epoch"] if "epoch" in keys else ["step"]
    return head + sorted(rest)


class CSVLogger(VersionedLogger):
    """Log metrics to ``save_dir/name/version_N/metrics.csv``.

    Each ``log_metrics(metrics, step)`` call is one row ``{"step": step, **metrics}``;
    the columns are the union of all keys seen (``step``, then ``epoch``, then
    the rest sorted) and a row leaves the metrics it lacks empty. A new key
    rewrites the file with the wider header. Hyperparameters go to ``hparams.json``.

    Args:
      save_dir: root folder of all experiments; an fsspec URL (``s3://bucket/runs``)
        stages the files locally and uploads them at each flush.
      name: experiment folder under ``save_dir``.
      version: ``None`` for the next free ``version_N``; an int ``v`` for
        ``version_{v}``; a string for a folder of exactly that name.
      flush_logs_every_n_steps: rows kept in memory before they are written.

    >>> import tempfile
    >>> from pathlib import Path
    >>> logger = CSVLogger(tempfile.mkdtemp())
    >>> logger.log_metrics({"loss": 0.5}, step=0)
    >>> logger.log_metrics({"val_loss": 0.25, "epoch": 0}, step=0)
    >>> logger.finalize("success")
    >>> print(Path(logger.metrics_file).read_text(), end="")
    step,epoch,loss,val_loss
    0,,0.5,
    0,0,,0.25
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str = "ftrain_logs",
        version: int | str | None = None,
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version)
        n = flush_logs_every_n_steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"CSVLogger: flush_logs_every_n_steps must be an int >= 1, got {n!r}")
        self._every = n
        self._pending: list[dict[str, Any]] = []
        self._header: list[str] = []  # columns of the file on disk; [] before the first write
        self._hparams: dict[str, Any] = {}

    @property
    def metrics_file(self) -> str:
        """Path (or URL) of ``metrics.csv``."""
        return _fs.join(self.log_dir, METRICS_FILE)

    @property
    def _file(self) -> str:
        # The file written: metrics_file, or its staged copy for a URL.
        return os.path.join(self._ensure_dir(), METRICS_FILE) if self._remote else self.metrics_file

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's hyperparameters and rewrite ``hparams.json``."""
        self._hparams.update(params)
        save_hparams_json(self._ensure_dir(), self._hparams)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer the row ``{"step": step, **metrics}``; write every n rows."""
        self._pending.append({"step": step, **metrics})
        if len(self._pending) >= self._every:
            self._write()
        if self._upload_due():
            self.flush()

    def resume(self, version: int | str, step: int) -> None:
        """Continue ``version``'s ``metrics.csv``, dropping its rows at steps >= ``step``.

        Args:
          version: the version of the interrupted run.
          step: the first step the resumed run will log.
        """
        self.flush()
        self._use_version(version)
        self._header = []
        path = self._file
        if self._remote and not self._download(METRICS_FILE):
            return
        if not os.path.exists(path):
            return
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if float(row["step"]) < step]
        # Drop columns only the discarded rows used, so the header equals that
        # of an uninterrupted run once the resumed run has logged its rows.
        kept = [{k: v for k, v in row.items() if v != ""} for row in rows]
        self._rewrite(_columns({k for row in kept for k in row} | {"step"}), kept)

    def flush(self) -> None:
        """Write buffered rows to ``metrics.csv`` (and upload it, for a URL)."""
        self._write()
        self._upload()

    def finalize(self, status: str) -> None:
        """Write buffered rows; the file is closed after every write."""
        self.flush()

    def _write(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        keys = set(self._header).union(*rows)
        if len(keys) == len(self._header):
            with open(self._file, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self._header).writerows(rows)
            return
        old: list[dict[str, Any]] = []
        if self._header:  # earlier rows of this run, under the narrower header
            with open(self._file, newline="", encoding="utf-8") as f:
                old = list(csv.DictReader(f))
        self._rewrite(_columns(keys), old + rows)

    def _rewrite(self, header: list[str], rows: list[dict[str, Any]]) -> None:
        self._ensure_dir()
        target = self._file
        tmp = target + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(rows)
        # A crash mid-rewrite must not lose the rows already logged.
        os.replace(tmp, target)
        self._header = header
