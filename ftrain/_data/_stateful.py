"""Resume from a loader's own saved position instead of replaying its batches.

A source that can save its position (``state_dict()``/``load_state_dict()``, as
torchdata's ``StatefulDataLoader``; or, in a DataLoader without workers, its
``IterableDataset``) has that state recorded after each batch it yields, and a
checkpoint stores the state of the last batch trained on. On resume the state is
loaded before the epoch's first ``iter()``, so no consumed sample is read again,
also with worker processes. The record is taken where the batch is fetched, so a
read-ahead (the loop's look-ahead for unsized data, a prefetch thread) does not move
the saved position past the batch trained on.

Sources without such state keep :func:`prepare_loader`'s resume: by index where the
order is ftrain's (``TensorLoader``, ``RandomWindows``, a rebuilt DataLoader), by
reading and discarding batches otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from ._loader import TensorLoader, loader_length, prepare_loader
from ._windows import RandomWindows

__all__ = ["LoaderPosition", "state_owner"]

_KEEP = 32  # recorded states kept: more than any read-ahead of the loop or a prefetch


def _has_state(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def state_owner(data: Any) -> Any | None:
    """The object whose ``state_dict()`` is ``data``'s position, or None.

    The loader itself when it has ``state_dict``/``load_state_dict``; else the
    ``IterableDataset`` of a DataLoader without workers (with workers the dataset's
    copies live in the worker processes). ftrain's own loaders resume by index.

    Example:
        >>> state_owner([1, 2]) is None
        True
    """
    if isinstance(data, (TensorLoader, RandomWindows)):
        return None
    if _has_state(data):
        return data
    if (
        isinstance(data, DataLoader)
        and data.num_workers == 0
        and isinstance(data.dataset, IterableDataset)
        and _has_state(data.dataset)
    ):
        return data.dataset
    return None


class _Recording:
    """Iterates a loader and records its owner's state after each batch it yields."""

    def __init__(self, loader: Iterable[Any], owner: Any, position: LoaderPosition) -> None:
        self.loader, self.owner, self.position = loader, owner, position

    def __len__(self) -> int:
        length = loader_length(self.loader)
        if length is None:
            raise TypeError(f"{type(self.loader).__name__} has no length")
        return length

    def __iter__(self) -> Iterator[Any]:
        index = self.position.first
        record = self.position.record
        for batch in self.loader:
            index += 1
            record(index, self.owner.state_dict())
            yield batch


class LoaderPosition:
    """The saved position of the training source, across one run and its resume.

    ``prepare`` replaces :func:`prepare_loader` for the training data; ``saved`` is what
    a checkpoint stores; ``restore`` takes it back on resume.
    """

    def __init__(self) -> None:
        self.owner: Any = None
        self.first = 0
        self._pending: Mapping[str, Any] | None = None
        self._states: dict[int, Any] = {}
        self._lock = threading.Lock()

    def restore(self, saved: Mapping[str, Any] | None) -> None:
        """Load ``saved`` (from :meth:`saved`) into the next prepared source."""
        self._pending = saved or None

    def record(self, index: int, state: Any) -> None:
        with self._lock:
            self._states[index] = state
            self._states.pop(index - _KEEP, None)

    def prepare(
        self, source: Any, *, skip_batches: int, processes: int, **kwargs: Any
    ) -> Iterable[Any]:
        """This epoch's batches of ``source``, from its saved state when it has one.

        Args:
            source: what the user passed (or a factory made) for this epoch.
            skip_batches: batches of the epoch already trained on.
            processes: the number of processes (a rank's state is its own: a
                multi-process run resumes stateful loaders by skipping).
            **kwargs: :func:`prepare_loader`'s seed, epoch, rank and world size.
        """
        owner = state_owner(source) if processes == 1 else None
        pending, self._pending = self._pending, None
        with self._lock:
            self._states.clear()
        self.owner, self.first = owner, skip_batches
        if owner is None or (pending is None and skip_batches):
            return prepare_loader(source, skip_batches=skip_batches, **kwargs)
        loader = prepare_loader(source, skip_batches=0, **kwargs)
        if pending is not None:
            owner.load_state_dict(pending["state"])
            if pending["epoch_end"]:
                # Saved after an epoch's last batch: the loader's iterator had not yet
                # ended. Ending it starts the next iteration at a fresh epoch, as in the
                # uninterrupted run (it reads nothing unless a limit cut the epoch short).
                for _ in loader:
                    pass
        return _Recording(loader, owner, self)

    def saved(self, batch_idx: int, epoch_done: bool) -> dict[str, Any] | None:
        """The position after ``batch_idx`` batches of the epoch, for a checkpoint.

        At an epoch's end (or before the next epoch's first batch) the state of the
        last batch read is stored, marked to be run to its end on resume.
        """
        if self.owner is None:
            return None
        with self._lock:
            if not self._states:
                return None
            if epoch_done or batch_idx == 0:
                return {"state": self._states[max(self._states)], "epoch_end": True}
            state = self._states.get(batch_idx)
        return None if state is None else {"state": state, "epoch_end": False}
