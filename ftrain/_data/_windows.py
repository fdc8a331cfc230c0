"""Random windows of a token array: batch k is a pure function of (seed, epoch, k, rank).

The recipe of GPT-style pretraining (nanoGPT's ``get_batch``): every batch draws
``batch_size`` random start offsets into one long array of token ids and cuts
``block_size + 1`` tokens at each, giving inputs and next-token targets. Nothing is
remembered between batches, so a resume at batch k costs one draw (no replay), and
the global batch of all ranks is drawn once and cut by rank, so 2 ranks x B see
exactly the windows of 1 process x 2B.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._seed import mix_seed

__all__ = ["RandomWindows", "window_offsets"]

_STREAM = -2  # no epoch or step counter takes this value (as 2**64 - 2)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"RandomWindows: {name} must be an int >= {low}, got {value!r}")
    return value


def _integer_dtype(tokens: torch.Tensor | np.ndarray) -> bool:
    if isinstance(tokens, torch.Tensor):
        return (
            not tokens.dtype.is_floating_point
            and not tokens.dtype.is_complex
            and tokens.dtype != torch.bool
        )
    return tokens.dtype.kind in "iu"


def window_offsets(
    n_tokens: int,
    block_size: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    index: int,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Start offsets of rank ``rank``'s windows in batch ``index`` of ``epoch``.

    The ``world_size * batch_size`` offsets of the global batch are drawn uniformly
    from ``[0, n_tokens - block_size - 1]`` by a generator seeded with
    ``mix_seed(seed, -2, epoch, index)`` (the -2 keeps this stream apart from the
    others derived from the run seed); this rank takes rows
    ``rank * batch_size`` to ``(rank + 1) * batch_size``.

    Returns:
        A CPU int64 tensor of ``batch_size`` offsets.

    Example:
        >>> a = window_offsets(100, 8, 2, seed=0, epoch=0, index=3, world_size=2)
        >>> b = window_offsets(100, 8, 2, seed=0, epoch=0, index=3, rank=1, world_size=2)
        >>> both = window_offsets(100, 8, 4, seed=0, epoch=0, index=3)
        >>> torch.equal(torch.cat([a, b]), both)
        True
    """
    generator = torch.Generator().manual_seed(mix_seed(seed, _STREAM, epoch, index))
    high = n_tokens - block_size  # the last window ends at the array's last token
    drawn = torch.randint(high, (world_size * batch_size,), generator=generator)
    return drawn[rank * batch_size : (rank + 1) * batch_size]


class RandomWindows:
    """Batches ``(x, y)`` of random token windows, ``y`` being ``x`` shifted by one.

    Batch ``k`` of an epoch holds the windows that start at
    :func:`window_offsets` ``(seed, epoch, k, rank)``; ``x`` and ``y`` are int64 of shape
    ``(batch_size, block_size)``. Without ``num_batches`` the loader has no length and
    never ends: train by ``max_steps`` (iteration-based) and validate every N steps
    (``val_check_interval=N``). Under ``fit`` it is sharded by rank, and a resume
    starts at the next batch by index (nothing drawn or read before it).

    Args:
        tokens: a 1-D integer tensor (any device) or NumPy array, e.g.
            ``np.memmap("train.bin", dtype=np.uint16, mode="r")``: only the windows'
            pages are read.
        block_size: tokens per window (the model's context).
        batch_size: windows per batch (per rank).
        num_batches: batches per epoch (None: endless), e.g. evaluation batches.
        seed: the draw's seed; None uses the run's seed under ``fit`` (0 on its own).

    Raises:
        ValueError: a tokens array that is not 1-D or shorter than ``block_size + 1``,
            or a size out of range.

    Example:
        >>> windows = RandomWindows(torch.arange(100), block_size=4, batch_size=2, num_batches=3)
        >>> x, y = next(iter(windows))
        >>> x.shape, torch.equal(x[:, 1:], y[:, :-1]), len(windows)
        (torch.Size([2, 4]), True, 3)
    """

    def __init__(
        self,
        tokens: torch.Tensor | np.ndarray,
        block_size: int,
        batch_size: int,
        *,
        num_batches: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(tokens, (torch.Tensor, np.ndarray)):
            raise ValueError(
                "RandomWindows: tokens must be a 1-D torch.Tensor or numpy array (np.memmap), "
                f"got {type(tokens).__name__}"
            )
        if tokens.ndim != 1 or not _integer_dtype(tokens):
            raise ValueError(
                "RandomWindows: tokens must be 1-D integer token ids, got "
                f"shape {tuple(tokens.shape)} and dtype {tokens.dtype}"
            )
        self.block_size = _check_int("block_size", block_size, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if tokens.shape[0] < block_size + 1:
            raise ValueError(
                f"RandomWindows: tokens must hold at least block_size + 1 = {block_size + 1} "
                f"tokens, got {tokens.shape[0]}"
            )
        if num_batches is not None:
            _check_int("num_batches", num_batches, 1)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"RandomWindows: seed must be an int or None, got {seed!r}")
        self.tokens = tokens
        self.num_batches = num_batches
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._run_seed = 0
        self._skip = 0
        self._steps = torch.arange(block_size + 1)
        if isinstance(tokens, torch.Tensor):
            self._steps = self._steps.to(tokens.device)

    def __len__(self) -> int:
        """Batches per epoch; only with ``num_batches`` (an endless loader has no length)."""
        if self.num_batches is None:
            raise TypeError("RandomWindows without num_batches is endless and has no len()")
        return self.num_batches

    # The driver's protocol, as TensorLoader's: epoch, skip and shard are set before
    # each epoch and read when its first batch is drawn.

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose batches the next iteration yields."""
        self.epoch = _check_int("epoch", epoch, 0)

    def set_skip(self, batches: int) -> None:
        """Make the next iteration (only) start at batch ``batches``."""
        self._skip = _check_int("skip", batches, 0)

    def shard(self, rank: int, world_size: int) -> None:
        """Yield rank ``rank``'s part of each global batch of ``world_size`` ranks."""
        _check_int("world_size", world_size, 1)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(
                f"RandomWindows: rank must be in [0, world_size), got {rank!r}, {world_size}"
            )
        self.rank, self.world_size = rank, world_size

    def _configure(self, run_seed: int, shuffle: bool | None) -> None:
        self._run_seed = run_seed  # windows are always random: shuffle does not apply

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of the current epoch, for this rank."""
        seed = self.seed if self.seed is not None else self._run_seed
        offsets = window_offsets(
            self.tokens.shape[0],
            self.block_size,
            self.batch_size,
            seed=seed,
            epoch=self.epoch,
            index=index,
            rank=self.rank,
            world_size=self.world_size,
        )
        tokens = self.tokens
        if isinstance(tokens, torch.Tensor):
            windows = tokens[offsets.to(tokens.device)[:, None] + self._steps].long()
        else:
            rows = offsets.numpy()[:, None] + np.arange(self.block_size + 1)
            windows = torch.from_numpy(tokens[rows].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._skip = self._skip, 0
        index = start
        while self.num_batches is None or index < self.num_batches:
            yield self.batch(index)
            index += 1

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.tokens, np.memmap) else type(self.tokens).__name__
        return (
            f"RandomWindows({kind} of {self.tokens.shape[0]} tokens, block_size={self.block_size}, "
            f"batch_size={self.batch_size}, num_batches={self.num_batches}, seed={self.seed})"
        )
