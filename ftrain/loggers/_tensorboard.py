"""TensorBoard logger: scalars, hyperparameters and a train-vs-validation chart layout.

Tag scheme: each metric is a scalar under its logged name (``loss``, ``val_loss``,
``train_acc``, ``val_acc``, ...) and ``epoch`` once per step. Whenever a validation
metric ``val_X`` (or ``val/X``) appears beside a training one (``X``, ``train_X``,
``train/X``, with or without ``_step``/``_epoch``), the CUSTOM SCALARS tab gets a chart
``X`` with both curves on it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _fs
from ._base import VersionedLogger, flatten_params, save_hparams_json

__all__ = ["TensorBoardLogger", "tensorboard_available", "train_val_layout"]

LAYOUT_CATEGORY = "train vs validation"
_VAL = re.compile(r"^(val|valid|validation)([_/])(?P<base>.+)$")
_SUFFIX = re.compile(r"_(step|epoch)$")


def train_val_layout(tags: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout that puts each validation metric beside its training one.

    Args:
      tags: the scalar tags logged so far.

    Returns:
      ``{LAYOUT_CATEGORY: {X: ["Multiline", [anchored tag regexes]]}}`` for every ``X``
      with a validation tag (``val_X``, ``val/X``) and at least one training tag (``X``,
      ``train_X``, ``train/X``, each also with ``_step``/``_epoch``); ``{}`` when none.

    >>> train_val_layout(["loss", "val_loss", "epoch", "train_acc", "val_acc", "lr"])
    {'train vs validation': {'acc': ['Multiline', ['^train_acc$', '^val_acc$']], 'loss': ['Multiline', ['^loss$', '^val_loss$']]}}
    """
    tags = set(tags)
    charts: dict[str, list[Any]] = {}
    for val in sorted(tags):
        match = _VAL.match(val)
        if not match:
            continue
        base = _SUFFIX.sub("", match["base"])
        stems = (base, f"train_{base}", f"train/{base}")
        train = sorted(tag for tag in tags if tag != val and _SUFFIX.sub("", tag) in stems)
        if train:
            series = charts.setdefault(base, ["Multiline", []])[1]
            series.extend(f"^{re.escape(tag)}$" for tag in [*train, val])
    for chart in charts.values():
        chart[1] = sorted(set(chart[1]), key=lambda r: (r.startswith("^val"), r))
    return {LAYOUT_CATEGORY: dict(sorted(charts.items()))} if charts else {}


def tensorboard_available() -> bool:
    """Return whether tensorboard can be imported, without importing it."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(VersionedLogger):
    """Log to TensorBoard event files in ``save_dir/name/version_N``.

    Metrics become scalars at the given step (``epoch`` once per step however often
    it is passed). Each validation metric is charted beside its training metric in
    the CUSTOM SCALARS tab (see ``train_val_layout``). Hyperparameters appear in the
    HPARAMS tab (nested keys joined with ``/``), with every scalar as a metric column,
    and in ``hparams.json``. tensorboard is imported on the first write.

    Args:
      save_dir: root folder of all experiments; an fsspec URL (``s3://bucket/runs``)
        writes the event files in a local staging folder and uploads them at each
        flush (tensorboard's own remote writing needs TensorFlow's file systems).
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
        self._tags: set[str] = set()
        self._layout: dict[str, Any] = {}
        self._epoch_step: int | None = None  # the step whose epoch is written

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter``, opened on first use, for images, histograms and the like."""
        return self._open()

    def _open(self, purge_step: int | None = None) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # A reopened run (after finalize or on resume) must get an event file
            # that sorts after the existing ones.
            _wait_past_event_files(self._event_files())
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
        # Only the session-start summary, into this run's own event file
        # (SummaryWriter.add_hparams would start a separate run folder). Without an
        # experiment summary, TensorBoard makes every scalar of the run a metric
        # column of the HPARAMS table; an experiment summary would fix the columns
        # before any metric is known.
        _, session_start, _ = hparams(flatten_params(self._hparams), {})
        writer.file_writer.add_summary(session_start)
        save_hparams_json(self._ensure_dir(), self._hparams)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Add one scalar per metric at ``step``; ``epoch`` is written once per step."""
        writer = self._open()
        for key, value in metrics.items():
            if key == "epoch":
                if step == self._epoch_step:
                    continue
                self._epoch_step = step
            writer.add_scalar(key, value, global_step=step)
        if not self._tags.issuperset(metrics):
            self._tags.update(metrics)
            layout = train_val_layout(self._tags)
            if layout != self._layout:
                # At this step: TensorBoard shows the layout written last.
                writer.file_writer.add_summary(_layout_summary(layout), step)
                self._layout = layout
        if self._upload_due():
            self.flush()

    def resume(self, version: int | str, step: int) -> None:
        """Reopen ``version`` so TensorBoard hides its events at steps >= ``step``.

        Args:
          version: the version of the interrupted run.
          step: the first step the resumed run will log.
        """
        self.finalize("interrupted")
        self._tags, self._layout, self._epoch_step = set(), {}, None
        self._use_version(version)
        _wait_past_event_files(self._event_files())
        # purge_step writes a restart marker; TensorBoard's reader drops the
        # older events at steps >= step when it meets it.
        self._open(purge_step=step)

    def flush(self) -> None:
        """Write pending events to disk (and upload the changed files, for a URL)."""
        if self._writer is not None:
            self._writer.flush()
        self._upload()

    def finalize(self, status: str) -> None:
        """Flush and close the event file; a later write opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._upload()

    def _event_files(self) -> list[str]:
        """Names of this version's event files (for a URL: uploaded and staged ones)."""
        names = _fs.listdir(self.log_dir) if self._remote else []
        names += os.listdir(self._ensure_dir())
        return [n for n in names if n.startswith("events.out.tfevents.")]


def _layout_summary(layout: Mapping[str, Any]) -> Any:
    from torch.utils.tensorboard.summary import custom_scalars

    return custom_scalars(layout)


def _wait_past_event_files(names: Iterable[str]) -> None:
    # TensorBoard reads a folder's event files in name order, and the name
    # starts with the creation second; the resumed file must sort after the
    # old ones for its restart marker to apply. Only a resume within the same
    # second (in one process) can break this, so waiting is almost never needed.
    stamps = []
    for name in names:
        stamp = name.split(".")[3]
        if stamp.isdigit():
            stamps.append(int(stamp))
    if stamps:
        delay = max(stamps) + 1 - time.time()
        if delay > 0:
            time.sleep(delay)
