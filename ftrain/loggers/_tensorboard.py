"""TensorBoard logger: scalars and hyperparameters through ``SummaryWriter``."""

from __future__ import annotations

import glob
import importlib.util
import os
import time
from collections.abc import Mapping
from typing import Any

from ._base import VersionedLogger, flatten_params, save_hparams_json

__all__ = ["TensorBoardLogger", "tensorboard_available"]


def tensorboard_available() -> bool:
    """Return whether tensorboard can be imported, without importing it."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(VersionedLogger):
    """Log to TensorBoard event files in ``save_dir/name/version_N``.

    Metrics become scalars at the given step. Hyperparameters appear in
    TensorBoard's HPARAMS tab (nested keys joined with ``/``) and in
    ``hparams.json``. tensorboard is imported on the first write.

    Args:
      save_dir: root folder of all experiments.
      name: experiment folder under ``save_dir``.
      version: ``None`` for the next free ``version_N``; an int ``v`` for
        ``version_{v}``; a string for a folder of exactly that name.
      **writer_kwargs: passed to ``torch.utils.tensorboard.SummaryWriter``
        (e.g. ``flush_secs``, ``max_queue``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str = "ftrain_logs",
        version: int | str | None = None,
        **writer_kwargs: Any,
    ) -> None:
        super().__init__(save_dir, name, version)
        self._writer_kwargs = writer_kwargs
        self._writer: Any = None
        self._hparams: dict[str, Any] = {}

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter``, opened on first use, for images, histograms and the like."""
        return self._open()

    def _open(self, purge_step: int | None = None) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # A reopened run (after finalize or on resume) must get an event file
            # that sorts after the existing ones.
            _wait_past_event_files(self._ensure_dir())
            self._writer = SummaryWriter(
                self._ensure_dir(), purge_step=purge_step, **self._writer_kwargs
            )
        return self._writer

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters for the HPARAMS tab and in ``hparams.json``.

        Args:
          params: hyperparameters; nested mappings are flattened with ``/`` and
            values other than bool, int, float and str are stringified.
        """
        from torch.utils.tensorboard.summary import hparams

        self._hparams.update(params)
        writer = self._open()
        # Written into this run's own event file: SummaryWriter.add_hparams
        # would start a separate run folder instead.
        summaries = hparams(flatten_params(self._hparams), {})
        for summary in summaries:
            writer.file_writer.add_summary(summary)
        save_hparams_json(self.log_dir, self._hparams)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Add one scalar per metric at ``step``."""
        writer = self._open()
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=step)

    def resume(self, version: int | str, step: int) -> None:
        """Reopen ``version`` so TensorBoard hides its events at steps >= ``step``.

        Args:
          version: the version of the interrupted run.
          step: the first step the resumed run will log.
        """
        self.finalize("interrupted")
        self._use_version(version)
        _wait_past_event_files(self.log_dir)
        # purge_step writes a restart marker; TensorBoard's reader drops the
        # older events at steps >= step when it meets it.
        self._open(purge_step=step)

    def flush(self) -> None:
        """Write pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        """Flush and close the event file; a later write opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _wait_past_event_files(log_dir: str) -> None:
    # TensorBoard reads a folder's event files in name order, and the name
    # starts with the creation second; the resumed file must sort after the
    # old ones for its restart marker to apply. Only a resume within the same
    # second (in one process) can break this, so waiting is almost never needed.
    stamps = []
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        stamp = os.path.basename(path).split(".")[3]
        if stamp.isdigit():
            stamps.append(int(stamp))
    if stamps:
        delay = max(stamps) + 1 - time.time()
        if delay > 0:
            time.sleep(delay)
