"""The epoch's batch order as a function of (seed, epoch): a seeded batch sampler.

The order is :func:`epoch_permutation` (shuffled) or a fixed base order (sequential,
or what a user's sampler produced), then the rank's shard as ``DistributedSampler``
cuts it, then batches; a resume in the middle of an epoch starts after ``k``
batches by index, so the skipped samples are never loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from .._seed import mix_seed

__all__ = ["SeededBatchSampler", "check_int", "check_shard", "epoch_permutation"]


def check_int(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return value


def check_shard(owner: str, rank: Any, world_size: Any) -> None:
    check_int(owner, "world_size", world_size, 1)
    check_int(owner, "rank", rank, 0)
    if rank >= world_size:
        raise ValueError(
            f"{owner}: rank must be in [0, world_size), got rank={rank}, world_size={world_size}"
        )


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` samples for one epoch: a function of (seed, epoch) only.

    Args:
        n: number of samples.
        seed: the run seed.
        epoch: the epoch.

    Returns:
        A CPU int64 tensor, a permutation of ``0..n-1``.

    Example:
        >>> torch.equal(epoch_permutation(5, 0, 1), epoch_permutation(5, 0, 1))
        True
    """
    check_int("epoch_permutation", "n", n, 0)
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


class SeededBatchSampler(Sampler[list[int]]):
    """Batches of indices in an order fixed by (seed, epoch), sharded like ``DistributedSampler``.

    The epoch's order is ``epoch_permutation(n, seed, epoch)`` when shuffling (applied to
    ``base_order`` when one is given), else ``base_order`` or ``range(n)``. Then, as
    ``DistributedSampler`` does, the order is padded by repeating it from the start
    until it divides evenly among ranks (or its tail is dropped when ``drop_last``),
    this rank takes ``order[rank::world_size]`` and cuts it into batches (the last one
    short unless ``drop_last``).

    Args:
        n: number of positions in the order (``len(base_order)`` when given).
        batch_size: indices per batch.
        shuffle: draw the order from ``epoch_permutation``.
        seed: the run seed.
        drop_last: drop the tail that does not divide among ranks and a short last batch.
        rank: this process's rank.
        world_size: number of ranks.
        base_order: the order to use instead of ``range(n)``, e.g. ``list(user_sampler)``.

    Raises:
        ValueError: an argument out of range, or ``len(base_order) != n``.

    Example:
        >>> list(SeededBatchSampler(5, 2, shuffle=False, seed=0))
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        base_order: Sequence[int] | None = None,
    ) -> None:
        owner = "SeededBatchSampler"
        check_int(owner, "n", n, 0)
        check_int(owner, "batch_size", batch_size, 1)
        check_shard(owner, rank, world_size)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{owner}: seed must be an int, got {seed!r}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0
        self._base: torch.Tensor | None = None
        if base_order is not None:
            self._set_base_order(base_order)

    def _set_base_order(self, base_order: Sequence[int]) -> None:
        base = torch.as_tensor(base_order, dtype=torch.int64).reshape(-1)
        if base.numel() != self.n:
            raise ValueError(
                f"SeededBatchSampler: base_order must hold n={self.n} indices, got {base.numel()}"
            )
        self._base = base

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose order the next iteration yields."""
        self.epoch = check_int("SeededBatchSampler", "epoch", epoch, 0)

    def set_skip(self, batches: int) -> None:
        """Make the next iteration (only) start after ``batches`` batches of this rank's shard."""
        self._skip = check_int("SeededBatchSampler", "skip", batches, 0)

    def _per_rank(self) -> int:
        n, world = self.n, self.world_size
        if world == 1:
            return n
        if self.drop_last and n % world:
            return n // world
        return -(-n // world)

    def __len__(self) -> int:
        """Batches per rank in a full epoch (the skip is not subtracted)."""
        per_rank = self._per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def _rank_indices(self) -> torch.Tensor | None:
        """This rank's indices for the current epoch; None when they are ``0..n-1``."""
        n, world = self.n, self.world_size
        order = self._base
        if self.shuffle:
            perm = epoch_permutation(n, self.seed, self.epoch)
            order = perm if order is None else order[perm]
        if world == 1:
            return order
        if order is None:
            order = torch.arange(n)
        total = self._per_rank() * world
        if total > n:
            # DistributedSampler's padding: repeat the order from its start.
            order = torch.cat([order, order.repeat(-(-(total - n) // n))[: total - n]])
        return order[self.rank : total : world]

    def _plan(self) -> tuple[torch.Tensor | None, int]:
        """Fix the epoch's indices and the first batch, consuming the one-shot skip."""
        start, self._skip = self._skip, 0
        return self._rank_indices(), start

    def __iter__(self) -> Iterator[list[int]]:
        # The epoch and skip are read at the first batch, not at iter(): a multi-worker
        # DataLoader calls iter() twice and draws from the second iterator only.
        indices, start = self._plan()
        bs, stop = self.batch_size, len(self)
        if indices is None:
            count = self._per_rank()
            for i in range(start, stop):
                yield list(range(i * bs, min((i + 1) * bs, count)))
            return
        flat: list[int] = indices.tolist()
        for i in range(start, stop):
            yield flat[i * bs : (i + 1) * bs]

    def __repr__(self) -> str:
        return (
            f"SeededBatchSampler(n={self.n}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, rank={self.rank}, "
            f"world_size={self.world_size}, epoch={self.epoch})"
        )
