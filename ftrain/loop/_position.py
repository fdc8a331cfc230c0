"""Where a loop is: the position of a batch, and which batches an epoch runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .._data._loader import prepare_loader
from .._schedules import limit_batches

__all__ = ["Position", "batches", "epoch_batches", "epoch_data", "reload_due"]

_END = object()


class Position(NamedTuple):
    """The position of one training batch.

    Attributes:
        epoch: the 0-based epoch.
        batch_idx: the 0-based index of the batch in its epoch.
        total_batch_idx: the 0-based index of the batch across epochs.
        epoch_batches: the batches this epoch runs, when known.
        is_last: the batch is the epoch's last.

    Example:
        >>> [p.is_last for p in Position.whole_epoch(0, 3)]
        [False, False, True]
    """

    epoch: int
    batch_idx: int
    total_batch_idx: int
    epoch_batches: int | None
    is_last: bool

    @classmethod
    def whole_epoch(cls, epoch: int, n: int, first_total: int = 0) -> list[Position]:
        """The positions of a whole epoch of ``n`` batches (for tests and plans)."""
        return [cls(epoch, i, first_total + i, n, i == n - 1) for i in range(n)]


def epoch_batches(
    length: int | None, limit: int | float = 1.0, fast_dev_batches: int = 0
) -> int | None:
    """The batches an epoch runs: the data's ``length`` cut by ``limit_train_batches``
    and by ``fast_dev_run``; None for all of an unsized stream.

    Example:
        >>> epoch_batches(10, 0.5), epoch_batches(10, 1.0, fast_dev_batches=2), epoch_batches(None)
        (5, 2, None)
    """
    n = limit_batches(length, limit)
    if fast_dev_batches:
        n = fast_dev_batches if n is None else min(n, fast_dev_batches)
    return n


def reload_due(epoch: int, last_reload: int | None, every_n_epochs: int) -> bool:
    """Whether a data factory is called again at ``epoch`` (Lightning's
    ``reload_dataloaders_every_n_epochs``; it is always called for the first epoch run).

    Example:
        >>> reload_due(0, None, 2), reload_due(1, 0, 2), reload_due(2, 0, 2), reload_due(5, 0, 0)
        (True, False, True, False)
    """
    if last_reload is None:
        return True
    return bool(every_n_epochs) and epoch - last_reload >= every_n_epochs


def batches(
    data: Iterable[Any], count: int | None, start: int = 0
) -> Iterator[tuple[int, Any, bool]]:
    """``(batch_idx, batch, is_last)`` for the batches of one epoch.

    Args:
        data: the epoch's batches (already positioned at ``start``).
        count: the batches the epoch runs, or None to run to the end of ``data``
            (then one batch is read ahead to know the last).
        start: the index of the first batch (a resume inside an epoch).

    Example:
        >>> list(batches("abc", None)), list(batches("abcd", 2, start=1))
        ([(0, 'a', False), (1, 'b', False), (2, 'c', True)], [(1, 'a', True)])
    """
    iterator = iter(data)
    index = start
    if count is None:
        pending = next(iterator, _END)
        while pending is not _END:
            batch, pending = pending, next(iterator, _END)
            yield index, batch, pending is _END
            index += 1
        return
    while index < count:
        batch = next(iterator, _END)
        if batch is _END:
            return
        yield index, batch, index + 1 == count
        index += 1


def epoch_data(
    data: Iterable[Any],
    *,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterable[Any]:
    """The batches of ``epoch`` in the order ``fit`` uses: a function of (seed, epoch).

    A shuffling ``DataLoader`` or ``TensorLoader`` is reordered by the run seed and
    the epoch; ``skip_batches`` starts after that many batches (a resume inside an
    epoch) without loading them; ``rank``/``world_size`` take this process's shard.
    Its ``len`` is the whole epoch's, skipped batches included.

    Example:
        >>> import torch, ftrain as ft
        >>> data = ft.TensorLoader(torch.arange(6), batch_size=2, shuffle=False)
        >>> [b.tolist() for b in epoch_data(data, seed=0, epoch=0, skip_batches=1)]
        [[2, 3], [4, 5]]
    """
    return prepare_loader(
        data, seed=seed, epoch=epoch, skip_batches=skip_batches, rank=rank, world_size=world_size
    )
