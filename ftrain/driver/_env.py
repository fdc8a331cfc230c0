"""The distributed environment of one process (the null case of every verb)."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import _fs
from .._checkpointing import restore, state_payload
from .._state import TrainState
from ..checkpoint._async import Job
from ..checkpoint._io import atomic_save, link_checkpoint

__all__ = ["DistEnv", "Mirror"]


class DistEnv:
    """One process: every collective is a no-op."""

    rank = 0
    local_rank = 0
    world_size = 1
    launched_here = False
    restarted = False
    sharded = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, accelerator: str) -> torch.device:
        if accelerator == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(accelerator)

    def launch(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def loggers(self, loggers: list[Any]) -> list[Any]:
        """The loggers this rank drives: the real ones on rank 0, mirrors elsewhere."""
        return loggers

    def share(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed on rank 0 and sent to every rank (its exception raised on all)."""
        return fn()

    def share_logger_dirs(self, loggers: list[Any]) -> None:
        """Give the mirrors rank 0's logger versions and folders."""

    def wrap(self, state: TrainState, step: Any) -> TrainState:
        return state

    def unwrap(self, state: TrainState) -> TrainState:
        return state

    def barrier(self) -> None:
        return None

    def agree(self, flags: tuple[bool, ...], step: int, *, now: bool = False) -> tuple[bool, ...]:
        """The flags every rank acts on: OR over ranks at agreement points, else all False."""
        return flags

    def reduce_step_values(self, values: dict[str, Any], collector: Any) -> dict[str, Any]:
        return values

    def reduce_epoch_values(self, collector: Any) -> None:
        """Reduce a collector's epoch accumulators across ranks, before it finalizes them."""

    def with_rank_state(
        self,
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        train_metrics: Callable[[], Mapping[str, Any]],
    ) -> Callable[[], dict[str, Any]]:
        """``extra`` plus what differs per rank (DDP: partial gradients inside a window,
        every rank's partial training epoch reductions).

        Called on every rank at the same checkpoint events (never per step).
        """
        return extra

    def share_actions(self, actions: list[Any]) -> list[Any]:
        """The checkpoint actions to carry out (FSDP: rank 0's, since every rank writes)."""
        return actions

    def save_checkpoint(
        self,
        state: TrainState,
        path: str,
        extra: Callable[[], dict[str, Any]],
        *,
        weights_only: bool,
        overwrite: bool = True,
        job: Job | None = None,
        link_to: str | None = None,
    ) -> None:
        """Write ``state`` and ``extra()`` to ``path`` (rank 0 only); ``overwrite=False``
        raises ``FileExistsError`` rather than replace a file. With a writer's ``job``,
        hand the payload to it (written when the job runs; with ``link_to``, ``path``
        becomes a link to that checkpoint where links work)."""
        if not self.is_main:
            return
        payload = state_payload(state, weights_only=weights_only)
        payload.update(extra())
        if job is None:
            atomic_save(payload, path, overwrite=overwrite)
        else:
            job.save(payload, path, overwrite=overwrite, link_to=link_to)

    def link_checkpoint(self, target: str, path: str) -> bool:
        """Make ``path`` a link to the checkpoint ``target`` (rank 0); False: write instead."""
        if not self.is_main:
            return True
        return link_checkpoint(target, path)

    def remove_checkpoint(self, path: str) -> None:
        """Delete a checkpoint file and its shard folders (rank 0 only)."""
        if not self.is_main:
            return
        if _fs.is_url(path):
            _fs.remove(path)  # no shard folders: sharded checkpoints are local only
            return
        if os.path.lexists(path):  # a link is removed, never its target
            os.remove(path)
        for shards in glob.glob(glob.escape(path) + ".*.dcp"):
            shutil.rmtree(shards, ignore_errors=True)

    def restore(self, state: TrainState, payload: Mapping[str, Any], path: str) -> TrainState:
        """Load a checkpoint's payload into the (wrapped) state."""
        return restore(state, payload, name=path)

    def teardown(self) -> None:
        return None


class Mirror:
    """A logger on a rank other than 0: rank 0's names and folders; it writes nothing."""

    def __init__(self, logger: Any) -> None:
        self.name = getattr(logger, "name", None)
        self.save_dir = getattr(logger, "save_dir", None)
        self.version: int | str | None = None
        self.log_dir: str | None = None

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def resume(self, version: int | str, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass
