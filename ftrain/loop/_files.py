"""The files of a hand-written loop: a logger's rows and the checkpoints, kept in step.

:class:`RunFiles` is the edge a loop of your own writes through. It folds the
checkpoint reducer over the events the loop reports and writes the files it decides,
and it keeps the logger consistent with them: the rows are flushed before a checkpoint
names them, and each checkpoint carries the rows of its own step, so that a resume
drops exactly what was logged after it and logs those rows again (as ``fit`` does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import _fs
from .._checkpointing import load_checkpoint, restore, write_checkpoints
from .._state import TrainState
from ..checkpoint import list_checkpoints
from ._checkpoints import checkpoint_event, checkpoint_reducer
from ._validation import ValInterval

__all__ = ["RunFiles"]

Row = tuple[dict[str, Any], int]


class RunFiles:
    """A run's logger and checkpoint folder, written so that a resume is exact.

    Args:
        logger: a logger (``ftrain.loggers``), with a fixed ``version`` to resume into.
        policy: the checkpoint policy (``ft.checkpoint.top_k(...) | ft.checkpoint.last()``).
        interval: the loop's validation interval: a policy's
            ``save_on_train_epoch_end=None`` resolves against it, as in ``fit``.
        folder: where the checkpoints go (default: ``checkpoints`` in the logger's folder).

    Raises:
        TypeError: ``logger`` is not a logger, ``policy`` not a checkpoint policy, or
            ``interval`` not a ``ValInterval``.
        ValueError: no ``folder`` and a logger without a folder of its own.

    Example:
        >>> import tempfile, torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> logger = ft.loggers.CSVLogger(tempfile.mkdtemp(), version=0)
        >>> files = ft.loop.RunFiles(logger, ft.checkpoint.last())
        >>> state = files.resume(state)  # nothing to resume: the same state
        >>> files.log({"loss": 0.5}, 0)
        >>> [os.path.basename(p) for p in files.checkpoint("fit_end", state.replace(step=1))]
        ['last.ckpt']
        >>> files.close()
    """

    def __init__(
        self,
        logger: Any,
        policy: Any,
        interval: ValInterval | None = None,
        folder: str | os.PathLike[str] | None = None,
    ) -> None:
        missing = [
            m for m in ("log_metrics", "resume", "flush", "finalize") if not hasattr(logger, m)
        ]
        if missing:
            raise TypeError(
                f"RunFiles: logger must be an ftrain logger (log_metrics, resume, flush, "
                f"finalize), got {type(logger).__name__} without {', '.join(missing)}"
            )
        if interval is not None and not isinstance(interval, ValInterval):
            raise TypeError(
                f"RunFiles: interval must be a loop.val_interval(...), got {type(interval).__name__}"
            )
        if folder is None and getattr(logger, "log_dir", None) is None:
            raise ValueError(
                f"RunFiles: {type(logger).__name__} has no log_dir; pass folder= for the checkpoints"
            )
        self.logger = logger
        at_epoch_end = True if interval is None else interval.at_epoch_end
        try:
            self.reducer = checkpoint_reducer(policy).resolve(at_epoch_end)
        except TypeError:
            raise TypeError(
                "RunFiles: policy must be an ftrain.checkpoint policy (e.g. "
                f"ft.checkpoint.top_k(2, 'val_loss') | ft.checkpoint.last()), got {policy!r}"
            ) from None
        if folder is None:
            folder = _fs.join(os.fspath(logger.log_dir), "checkpoints")
        self.folder = os.fspath(folder)
        self.policies = self.reducer.init()
        self.rows: list[Row] = []  # the rows of the newest step logged

    def resume(self, state: TrainState, name: str = "last.ckpt") -> TrainState:
        """``state`` restored from ``name`` in the folder if it exists (else unchanged).

        Recovers the policies' states from the files on disk, drops the logger's rows
        at steps >= the checkpoint's step and logs again the rows saved with it.
        """
        path = _fs.join(self.folder, name)
        if not _fs.exists(path):
            return state
        saved = load_checkpoint(path)
        state = restore(state, saved)
        on_disk = [list_checkpoints(self.folder)]
        self.policies = self.reducer.recover(saved.get("policies"), on_disk)
        self.logger.resume(self.logger.version, state.step)
        for values, step in saved.get("rows", []):
            self.log(values, step)
        return state

    def log(self, values: Mapping[str, float], step: int) -> None:
        """Log ``values`` at ``step`` (the x-axis: Lightning's step of the row)."""
        self.logger.log_metrics(values, step)
        self.rows = [row for row in self.rows if row[1] == step] + [(dict(values), step)]

    def checkpoint(
        self, stage: str, state: TrainState, metrics: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Report a loop event; write and delete the files the policies decide.

        Args:
            stage: the event (``"train_step"``, ``"validation_end"``,
                ``"train_epoch_end"``, ``"fit_end"``).
            state: the state at the event.
            metrics: the values a monitoring policy reads (e.g. ``val_loss``).

        Returns:
            The paths written.
        """
        event = checkpoint_event(
            stage,
            step=state.step,
            epoch=state.epoch,
            batch_idx=state.batch_idx,
            metrics=dict(metrics or {}),
        )
        self.policies, actions = self.reducer.update(self.policies, event)
        if not actions:
            return []
        self.logger.flush()  # what was logged so far is on disk before a file names it
        carried = [row for row in self.rows if row[1] >= state.step]
        extra = {"policies": self.policies, "rows": carried}
        return write_checkpoints(state, actions, self.folder, extra=extra)

    def close(self, status: str = "success") -> None:
        """Finalize the logger (``status``: "success", "failed" or "interrupted")."""
        self.logger.finalize(status)
