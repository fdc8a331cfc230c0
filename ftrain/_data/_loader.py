"""Loaders: what the driver iterates each epoch, in the order of ``_sampler``.

- :func:`prepare_loader` applies :class:`SeededBatchSampler`'s order to what a user
  passed (a DataLoader is rebuilt around it once and cached), and sets epoch, skip
  and shard for each epoch.
- :class:`TensorLoader` is the fast in-memory loader: one gather per tensor per batch.
"""

from __future__ import annotations

import functools
import os
import warnings
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from .._seed import SkipFirst, worker_init_fn
from .._warn import user_stacklevel
from ._sampler import SeededBatchSampler, check_int, check_shard
from ._windows import RandomWindows

__all__ = [
    "TensorLoader",
    "loader_length",
    "prepare_loader",
]


class TensorLoader:
    """Batches of in-memory tensors, each gathered by one indexing op per tensor.

    The order, sharding and skipping follow :class:`SeededBatchSampler` exactly, so it
    yields what ``DataLoader(TensorDataset(*tensors), batch_sampler=SeededBatchSampler(...))``
    yields, without per-sample ``__getitem__`` and collate. Unshuffled, single-rank
    batches are contiguous slices (views, no copy). Tensors may live on any device;
    the epoch's indices are moved to it once per epoch.

    Args:
        *tensors: tensors sharing ``size(0)``.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch by (seed, epoch).
        drop_last: drop a short last batch (and the tail that does not divide among ranks).
        seed: the order's seed; None uses the run's seed under ``fit`` (0 on its own).

    Raises:
        ValueError: no tensors, a 0-dim tensor, differing ``size(0)``, or a bad batch size.

    Example:
        >>> x, y = torch.arange(5.0), torch.arange(5)
        >>> [b[1].tolist() for b in TensorLoader(x, y, batch_size=2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        owner = "TensorLoader"
        if not tensors:
            raise ValueError(f"{owner}: needs at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                raise ValueError(
                    f"{owner}: tensor {i} must be a torch.Tensor with at least one dimension, "
                    f"got {type(t).__name__}{'' if not isinstance(t, torch.Tensor) else ' of dim 0'}"
                )
        sizes = [t.size(0) for t in tensors]
        if len(set(sizes)) > 1:
            listed = ", ".join(f"tensor {i}: {s}" for i, s in enumerate(sizes))
            raise ValueError(f"{owner}: all tensors must share size(0), got {listed}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"{owner}: seed must be an int or None, got {seed!r}")
        self.tensors = tensors
        self.shuffle = bool(shuffle)
        self.seed = seed
        self._batches = SeededBatchSampler(
            sizes[0], batch_size, shuffle=self.shuffle, seed=seed or 0, drop_last=drop_last
        )

    @property
    def batch_size(self) -> int:
        """Samples per batch."""
        return self._batches.batch_size

    @property
    def drop_last(self) -> bool:
        """Whether a short last batch is dropped."""
        return self._batches.drop_last

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose order the next iteration yields."""
        self._batches.set_epoch(epoch)

    def set_skip(self, batches: int) -> None:
        """Make the next iteration (only) start after ``batches`` batches of this rank's shard."""
        self._batches.set_skip(batches)

    def shard(self, rank: int, world_size: int) -> None:
        """Yield only rank ``rank``'s shard of each epoch, as ``DistributedSampler`` cuts it."""
        check_shard("TensorLoader", rank, world_size)
        self._batches.rank, self._batches.world_size = rank, world_size

    def _configure(self, run_seed: int, shuffle: bool | None) -> None:
        # The loader's own seed wins over the run's; a driver's shuffle override applies
        # to this use only, so the same loader can serve as train and as eval data.
        self._batches.seed = self.seed if self.seed is not None else run_seed
        self._batches.shuffle = self.shuffle if shuffle is None else shuffle

    def __len__(self) -> int:
        """Batches per rank in a full epoch (the skip is not subtracted)."""
        return len(self._batches)

    def __iter__(self) -> Iterator[Any]:
        # As for SeededBatchSampler, the epoch and skip are read at the first batch.
        indices, start = self._batches._plan()
        bs, stop, tensors = self.batch_size, len(self._batches), self.tensors
        single = len(tensors) == 1
        if indices is None:
            # In order: views made by split() a chunk of batches at a time (~1.3 µs a
            # view; a slice costs ~3.4), so at most a few hundred views are alive
            # whatever the epoch's length. Inline: a generator level costs per batch.
            for first in range(start, stop, _CHUNK):
                s, e = first * bs, min(min(first + _CHUNK, stop) * bs, len(tensors[0]))
                views = [t[s:e].split(bs) for t in tensors]
                if single:
                    yield from views[0]
                else:
                    yield from zip(*views, strict=True)
            return
        moved: dict[torch.device, torch.Tensor] = {}
        for t in tensors:
            if t.device not in moved:
                moved[t.device] = indices.to(t.device)
        per_tensor = [moved[t.device] for t in tensors]
        yield from _gathers(tensors, per_tensor, single, bs, start, stop)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return (
            f"TensorLoader({shapes}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, seed={self.seed})"
        )


_CHUNK = 256  # batches whose views are made together: one split() call, not 256 slices


def _gathers(
    tensors: tuple[torch.Tensor, ...],
    indices: list[torch.Tensor],
    single: bool,
    bs: int,
    start: int,
    stop: int,
) -> Iterator[Any]:
    if single:
        t, idx = tensors[0], indices[0]
        for i in range(start, stop):
            yield t.index_select(0, idx[i * bs : (i + 1) * bs])
        return
    if all(idx is indices[0] for idx in indices):
        # One device: slice the batch's indices once for all tensors.
        idx_all = indices[0]
        for i in range(start, stop):
            idx = idx_all[i * bs : (i + 1) * bs]
            yield tuple([t.index_select(0, idx) for t in tensors])
        return
    pairs = list(zip(tensors, indices, strict=True))
    for i in range(start, stop):
        s = i * bs
        yield tuple([t.index_select(0, idx[s : s + bs]) for t, idx in pairs])


# Rebuilt loaders, per user loader and (rank, world_size, shuffle, seed_workers): a
# cache of pure functions of those, so each epoch only sets epoch and skip. Weak keys:
# an entry goes when the user's loader goes.
_REBUILT: weakref.WeakKeyDictionary[
    DataLoader[Any], dict[tuple[int, int, bool, bool], DataLoader[Any]]
]
_REBUILT = weakref.WeakKeyDictionary()


def _rebuildable(loader: DataLoader[Any]) -> bool:
    # Only the plain class: a subclass's constructor may take other arguments, and a
    # batch_size of None means the user chose the batching (batch_sampler or none).
    return (
        type(loader) is DataLoader
        and loader.batch_size is not None
        and not isinstance(loader.dataset, IterableDataset)
    )


def _standard_shuffle(sampler: Any, dataset: Any) -> bool | None:
    """True/False for the stock random/sequential samplers, None for any other."""
    if type(sampler) is SequentialSampler:
        return False
    if (
        type(sampler) is RandomSampler
        and not sampler.replacement
        and sampler.num_samples == len(dataset)
    ):
        return True
    return None


def _rebuild(
    loader: DataLoader[Any], rank: int, world_size: int, shuffle: bool, base: list[int] | None
) -> DataLoader[Any]:
    n = len(base) if base is not None else len(loader.sampler)  # type: ignore[arg-type]
    batches = SeededBatchSampler(
        n,
        loader.batch_size or 1,
        shuffle=shuffle,
        seed=0,
        drop_last=loader.drop_last,
        rank=rank,
        world_size=world_size,
        base_order=base,
    )
    init_fn = loader.worker_init_fn
    if init_fn is None and loader.num_workers > 0 and os.environ.get("FTRAIN_SEED_WORKERS") == "1":
        init_fn = functools.partial(worker_init_fn, rank=rank)
    extra: dict[str, Any] = {}
    if hasattr(loader, "in_order"):
        extra["in_order"] = loader.in_order
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        **extra,
    )


def _set_epoch_on_samplers(loader: DataLoader[Any], epoch: int) -> None:
    batch_sampler = loader.batch_sampler
    for obj in (loader.sampler, batch_sampler, getattr(batch_sampler, "sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def _prepare_dataloader(
    loader: DataLoader[Any],
    seed: int,
    epoch: int,
    skip: int,
    rank: int,
    world_size: int,
    shuffle_default: bool | None,
) -> DataLoader[Any]:
    sampler = loader.sampler
    shuffle = _standard_shuffle(sampler, loader.dataset)
    base: list[int] | None = None
    if shuffle is None:
        # Any other sampler keeps its own order; it is materialised so that a resume can
        # skip by index. A user DistributedSampler has already sharded it.
        shuffle = False
        _set_epoch_on_samplers(loader, epoch)
        base = list(sampler)
        if isinstance(sampler, DistributedSampler):
            rank, world_size = 0, 1
    elif shuffle_default is not None:
        shuffle = shuffle_default
    seed_workers = os.environ.get("FTRAIN_SEED_WORKERS") == "1"
    key = (rank, world_size, shuffle, seed_workers)
    per_loader = _REBUILT.setdefault(loader, {})
    rebuilt = per_loader.get(key)
    if rebuilt is None:
        if base is not None and not isinstance(sampler, DistributedSampler):
            warnings.warn(
                f"prepare_loader: the DataLoader's {type(sampler).__name__} is read in full "
                "(list(sampler)) at the start of every epoch so that a resume can skip "
                "batches by index; for an exact resume it must give the same order for "
                "the same epoch",
                stacklevel=user_stacklevel(),
            )
        rebuilt = per_loader[key] = _rebuild(loader, rank, world_size, shuffle, base)
    batches = rebuilt.batch_sampler
    assert isinstance(batches, SeededBatchSampler)
    if base is not None:
        batches.n = len(base)
        batches._set_base_order(base)
    batches.seed = seed
    batches.set_epoch(epoch)
    batches.set_skip(skip)
    return rebuilt


def prepare_loader(
    data: Iterable[Any],
    *,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_default: bool | None = None,
) -> Iterable[Any]:
    """The iterable of one epoch's batches for what a user passed as data.

    - A ``DataLoader`` over a map-style dataset with its default batching (it has a
      ``batch_size``) is rebuilt once (cached per loader, rank, world size and shuffle)
      around a :class:`SeededBatchSampler` with the same dataset, workers, collate and
      other settings. A ``RandomSampler`` without replacement shuffles by (seed, epoch), a
      ``SequentialSampler`` keeps ``0..n-1``; ``shuffle_default`` True/False overrides
      either. Any other sampler's order is read in full each epoch (after its
      ``set_epoch``, if any) and sharded; it must be deterministic for an exact resume. A
      ``DistributedSampler`` is taken as already sharded.
    - A ``TensorLoader`` or ``RandomWindows`` is set to this epoch, skip, shard and seed
      (its own seed wins).
    - Anything else (a DataLoader with a user ``batch_sampler``, an ``IterableDataset``, a
      DataLoader subclass, any iterable) is returned as is (a DataLoader's sampler and
      batch sampler get ``set_epoch`` if they have it); skipped batches are then loaded
      and thrown away, and sharding is the user's business.
    - With ``FTRAIN_SEED_WORKERS=1`` (``seed_everything(workers=True)``), a rebuilt loader
      with workers and no ``worker_init_fn`` gets ftrain's, seeded per rank and worker.

    A user sampler must yield integer indices.

    Args:
        data: a DataLoader, a TensorLoader or any iterable of batches.
        seed: the run seed.
        epoch: the epoch.
        skip_batches: batches of this rank's epoch already consumed (mid-epoch resume).
        rank: this process's rank.
        world_size: number of ranks.
        shuffle_default: None follows the loader; True/False forces shuffling on or off
            for a TensorLoader and for a DataLoader with a stock random/sequential sampler.

    Returns:
        An iterable of this epoch's remaining batches; its ``len`` (see
        :func:`loader_length`) is the full epoch's, skipped batches included.

    Raises:
        ValueError: a negative epoch or skip, or a rank outside ``[0, world_size)``.

    Example:
        >>> loader = DataLoader(list(range(6)), batch_size=2)
        >>> [b.tolist() for b in prepare_loader(loader, seed=0, epoch=0, skip_batches=1)]
        [[2, 3], [4, 5]]
    """
    owner = "prepare_loader"
    check_int(owner, "epoch", epoch, 0)
    check_int(owner, "skip_batches", skip_batches, 0)
    check_shard(owner, rank, world_size)
    if isinstance(data, (TensorLoader, RandomWindows)):
        data.shard(rank, world_size)
        data._configure(seed, shuffle_default)
        data.set_epoch(epoch)
        data.set_skip(skip_batches)
        return data
    if isinstance(data, DataLoader):
        if _rebuildable(data):
            try:
                len(data.dataset)  # type: ignore[arg-type]
            except TypeError:
                pass
            else:
                return _prepare_dataloader(
                    data, seed, epoch, skip_batches, rank, world_size, shuffle_default
                )
        _set_epoch_on_samplers(data, epoch)
    if skip_batches == 0:
        return data
    warnings.warn(
        f"prepare_loader: resuming {type(data).__name__} mid-epoch by loading and discarding "
        f"{skip_batches} batches, which costs as much time as reading them; a loader with "
        "state_dict()/load_state_dict() (torchdata's StatefulDataLoader) resumes without "
        "re-reading",
        stacklevel=user_stacklevel(),
    )
    return SkipFirst(data, skip_batches)


def loader_length(data: Iterable[Any]) -> int | None:
    """Batches in a full epoch of ``data``, or None when it has no length.

    Args:
        data: a loader or any iterable.

    Returns:
        ``len(data)``, or None for an unsized iterable or a DataLoader over an
        ``IterableDataset`` without ``__len__``.

    Example:
        >>> loader_length([1, 2]), loader_length(iter([1, 2]))
        (2, None)
    """
    try:
        return len(data)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None
