"""The batch-size finder (Lightning's ``scale_batch_size``) as a pure function.

Each trial builds a loader with ``make_data(batch_size)`` and trains a clone of the
state for a few optimizer steps. Sizes grow by doubling until a trial runs out of
memory; "power" then settles on the last size that worked, "binsearch" bisects
between the largest size that worked and the smallest that failed. The given
state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from .._batch import batch_size_of, tensor_bytes
from .._data._loader import loader_length
from .._data._sources import DataFactory
from .._state import TrainState
from ._trial import (
    advance,
    batches,
    check_choice,
    check_int,
    check_number,
    device_of,
    fresh_step,
    kept_rng,
    release,
    scratch,
)

__all__ = ["is_oom_error", "scale_batch_size"]

_MODES = ("power", "binsearch")

# Lowercased fragments of the allocators' messages. cuDNN reports NOT_SUPPORTED for
# inputs past its size limits, which a larger batch causes as surely as memory does.
_OOM_MESSAGES = (
    "out of memory",  # CUDA, MPS, XPU
    "can't allocate memory",  # CPU allocator on Linux and macOS
    "cannot allocate memory",
    "not enough memory",  # CPU allocator on Windows
    "cublas_status_alloc_failed",
    "cudnn_status_not_supported",
)


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out (CUDA, MPS or the CPU allocator).

    Example:
        >>> is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
        True
        >>> is_oom_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
        False
    """
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        message = str(exc).lower()
        return any(fragment in message for fragment in _OOM_MESSAGES)
    return False


class _OutOfMemory(Exception):
    """A trial over the ``fits`` bound: treated as running out of memory."""


def _bound(fits: Any) -> tuple[Callable[[int], bool] | None, int | None]:
    if fits is None:
        return None, None
    if isinstance(fits, int) and not isinstance(fits, bool):
        return None, check_int("scale_batch_size", "fits", fits, 1)
    if callable(fits):
        return fits, None
    raise ValueError(
        "scale_batch_size: fits must be None, a predicate batch_size -> bool or a memory "
        f"bound in bytes (int >= 1), got {fits!r}"
    )


def scale_batch_size(
    make_data: Callable[[int], Iterable[Any]],
    state: TrainState,
    train_step: Any,
    *,
    mode: str = "power",
    init_val: int = 2,
    max_trials: int = 25,
    steps_per_trial: int = 3,
    max_val: int = 8192,
    margin: float = 0.05,
    fits: Callable[[int], bool] | int | None = None,
) -> int:
    """Find the largest batch size whose training steps fit in memory.

    Each trial trains a clone of ``state`` for ``steps_per_trial`` optimizer steps on
    ``make_data(size)``. A trial fails when it raises an out-of-memory error (see
    :func:`is_oom_error`) or exceeds ``fits``; any other error is re-raised. Sizes
    start at ``init_val`` and double, capped at ``max_val``, until a trial fails,
    ``max_val`` or the dataset's size is reached, or ``max_trials`` trials ran.

    - ``"power"``: the last size that worked.
    - ``"binsearch"``: bisect between the largest size that worked and the smallest
      that failed until they differ by 1, then keep the margin Lightning keeps:
      ``max(1, int(size·(1 − margin)))``.

    A size that fails before any has worked is halved until one works. A loader
    whose one and only batch is smaller than asked means the dataset is smaller:
    that size counts as the dataset's and the search stops there.

    Trials hold a second copy of the model and optimizer (the clone), so on an
    accelerator the size found leaves that much memory spare.

    Args:
        make_data: ``batch_size -> loader``; the loader's batches must have that size.
        state: the state to try (not modified).
        train_step: the step, with its combinators.
        mode: "power" or "binsearch".
        init_val: the first size tried, >= 1.
        max_trials: trials at most, >= 1.
        steps_per_trial: optimizer steps per trial, >= 1.
        max_val: the largest size tried.
        margin: the fraction binsearch takes off its result, in [0, 1); power ignores it.
        fits: bound the search without running out of memory: a predicate
            ``batch_size -> bool`` (False: the trial fails without running), or a
            memory bound in bytes that the first batch's tensors must not exceed.

    Returns:
        The batch size.

    Raises:
        ValueError: a bad argument (named, with what is accepted), or ``make_data``
            building batches of another size than asked.
        RuntimeError: not even batch size 1 fits.

    Example:
        >>> import torch, ftrain as ft
        >>> from ftrain import tune
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> step = ft.train_step(lambda m, b: m(b).pow(2).mean())
        >>> make_data = lambda bs: [torch.randn(bs, 2)]
        >>> tune.scale_batch_size(make_data, state, step, fits=lambda bs: bs <= 100)
        64
    """
    owner = "scale_batch_size"
    make_data = _batch_size_factory(make_data)
    mode = check_choice(owner, "mode", mode, _MODES)
    check_int(owner, "init_val", init_val, 1)
    check_int(owner, "max_trials", max_trials, 1)
    check_int(owner, "steps_per_trial", steps_per_trial, 1)
    check_int(owner, "max_val", max_val, init_val)
    margin = check_number(owner, "margin", margin)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"{owner}: margin must be in [0.0, 1.0), got {margin}")
    predicate, max_memory = _bound(fits)

    def trial(size: int) -> int | None:
        """The size a trial of ``size`` ran (smaller: the dataset is), None if it failed."""
        if predicate is not None and not predicate(size):
            return None
        try:
            return _trial(make_data, size, state, train_step, steps_per_trial, max_memory)
        except Exception as exc:
            if not (isinstance(exc, _OutOfMemory) or is_oom_error(exc)):
                raise
            return None

    device = device_of(state)
    with kept_rng(device):
        low, high = _search(trial, lambda: release(device), mode, init_val, max_trials, max_val)
    if low == 0:
        tried = f"down to {high}" if high is not None else f"from {init_val}"
        raise RuntimeError(f"{owner}: no batch size fits in memory (tried {tried})")
    if mode == "binsearch" and margin > 0:
        return max(1, int(low * (1 - margin)))
    return low


def _batch_size_factory(make_data: Any) -> Callable[[int], Iterable[Any]]:
    if isinstance(make_data, DataFactory):
        if make_data.kind != "batch_size":
            raise TypeError(
                "scale_batch_size: make_data must be a function batch_size -> loader (or "
                f"per_batch_size(fn)), got {make_data!r}, a factory of another kind"
            )
        make_data = make_data.fn
    if not callable(make_data):
        raise TypeError(
            "scale_batch_size: make_data must be a callable batch_size -> loader, "
            f"got {type(make_data).__name__}"
        )
    return make_data


def _search(
    trial: Callable[[int], int | None],
    release: Callable[[], None],
    mode: str,
    init_val: int,
    max_trials: int,
    max_val: int,
) -> tuple[int, int | None]:
    """(largest size that worked or 0, smallest that failed or None) after the trials."""
    low, high, size = 0, None, init_val
    for _ in range(max_trials):
        seen = trial(size)
        release()  # after the trial: the traceback that held the clone is gone
        if seen is None:
            high = size
            if (mode == "power" and low) or high - low <= 1:
                break
            size = (low + high) // 2
            continue
        low = max(low, seen)
        if seen < size or size >= max_val:
            break
        if high is None:
            size = min(size * 2, max_val)
        elif high - low <= 1:
            break
        else:
            size = (low + high) // 2
    return low, high


def _trial(
    make_data: Callable[[int], Iterable[Any]],
    size: int,
    state: TrainState,
    train_step: Any,
    steps: int,
    max_memory: int | None,
) -> int:
    """Train a clone for ``steps`` optimizer steps at ``size``; the size the data gave."""
    owner = "scale_batch_size"
    loader = make_data(size)
    stream = batches(loader, device_of(state), f"{owner}: make_data({size})")
    first = next(stream)
    seen = batch_size_of(first)
    if seen is None:
        raise ValueError(f"{owner}: make_data({size}) gave a batch without tensors: {first!r}")
    dataset_sized = seen < size and loader_length(loader) == 1
    if seen != size and not dataset_sized:
        raise ValueError(
            f"{owner}: make_data({size}) gave a first batch of size {seen}; make_data must "
            "build batches of the batch_size it is given (it seems to ignore its argument)"
        )
    if max_memory is not None and tensor_bytes(first) > max_memory:
        raise _OutOfMemory
    explore = scratch(state)
    step = fresh_step(train_step)
    batch = first
    stop = explore.step + steps
    while True:
        explore, _ = advance(step, explore, batch, owner)
        if explore.step >= stop:
            return seen
        batch = next(stream, None)
        if batch is None:  # a one-shot iterator ended: the trial ran what it had
            return seen
