"""Pure schedules: when to validate, when to stop, how many batches to run.

Every function here answers a question about the loop's position with integer
arithmetic: no model, no data, no clock. The loop calls them; tests call them with
plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._step import accumulate_at

__all__ = [
    "can_stop_early",
    "every",
    "is_max_reached",
    "limit_batches",
    "should_validate",
    "should_validate_epoch",
    "val_check_batch",
]


_DATA_NAMES = {
    "limit_train_batches": "training",
    "limit_val_batches": "validation",
    "limit_test_batches": "test",
    "limit_predict_batches": "prediction",
}


def limit_batches(
    length: int | None, limit: int | float, flag: str = "limit_train_batches"
) -> int | None:
    """The number of batches a loop runs, from the data length and a ``limit_*`` flag.

    A float is a fraction (``int(length * f)``), an int a count (``min(length, n)``);
    ``1`` is one batch, ``1.0`` all of them. None means "all of an unsized stream".

    Raises:
        ValueError: empty data, a fraction of an unsized stream, or a fraction so small
            that it rounds to 0 batches.

    Example:
        >>> limit_batches(10, 0.25), limit_batches(10, 3), limit_batches(10, 1.0), limit_batches(None, 5)
        (2, 3, 10, 5)
    """
    if length == 0 and limit != 0:
        data = _DATA_NAMES.get(flag, flag)
        raise ValueError(f"the {data} data is empty (it has 0 batches)")
    if isinstance(limit, float) and limit > 1.0:
        limit = int(limit)
    if isinstance(limit, int):
        return limit if length is None else min(length, limit)
    if length is None:
        if limit == 1.0:
            return None
        if limit == 0.0:
            return 0
        raise ValueError(
            f"{flag}={limit!r}: a fraction needs data with a length; this data has none, "
            "so give an int number of batches (or 1.0)"
        )
    n = int(length * limit)
    if n == 0 and limit > 0.0:
        raise ValueError(
            f"{flag}={limit!r} of {length} batches rounds to 0 batches; use a larger fraction "
            "or an int count"
        )
    return n


def val_check_batch(
    epoch_batches: int | None,
    val_check_interval: int | float | None,
    check_val_every_n_epoch: int | None,
) -> int | None:
    """Batches between validation runs, or None for "at the epoch's end".

    Lightning's rule: a float f gives ``max(1, int(epoch_batches * f))``; an int N is N
    batches (counted within the epoch, or across epochs when
    ``check_val_every_n_epoch`` is None).

    Raises:
        ValueError: an int interval longer than the epoch (with per-epoch checking),
            or a fraction < 1.0 of an unsized epoch.

    Example:
        >>> val_check_batch(10, 0.3, 1), val_check_batch(10, 1.0, 1), val_check_batch(None, 1.0, 1)
        (3, 10, None)
    """
    interval = 1.0 if val_check_interval is None else val_check_interval
    if isinstance(interval, float):
        if epoch_batches is None:
            if interval != 1.0:
                raise ValueError(
                    f"val_check_interval={interval!r}: a fraction of the epoch needs data with a "
                    "length; give an int number of batches"
                )
            return None
        return max(1, int(epoch_batches * interval))
    if (
        check_val_every_n_epoch is not None
        and epoch_batches is not None
        and interval > epoch_batches
    ):
        raise ValueError(
            f"val_check_interval={interval} is larger than the {epoch_batches} training batches of an "
            "epoch; use a smaller value, or check_val_every_n_epoch=None to count batches across epochs"
        )
    return interval


def should_validate_epoch(epoch: int, check_val_every_n_epoch: int | None) -> bool:
    """Whether validation may run during 0-based ``epoch`` (``(epoch + 1) % n == 0``).

    Example:
        >>> [should_validate_epoch(e, 2) for e in range(4)]
        [False, True, False, True]
    """
    return check_val_every_n_epoch is None or (epoch + 1) % check_val_every_n_epoch == 0


def should_validate(
    *,
    epoch: int,
    batch_idx: int,
    total_batch_idx: int,
    is_last_batch: bool,
    check_batch: int | None,
    check_val_every_n_epoch: int | None,
    stopping: bool = False,
) -> bool:
    """Whether validation runs right after training batch ``batch_idx`` of ``epoch``.

    Args:
        epoch: 0-based epoch.
        batch_idx: 0-based batch index within the epoch.
        total_batch_idx: 0-based batch index across epochs.
        is_last_batch: this is the epoch's last batch.
        check_batch: from :func:`val_check_batch` (None: at epoch end).
        check_val_every_n_epoch: the flag.
        stopping: training stops after this batch by a request (early stopping,
            max_time) that may take effect now: validation runs once more.

    Example:
        >>> [b for b in range(10) if should_validate(epoch=0, batch_idx=b, total_batch_idx=b,
        ...     is_last_batch=b == 9, check_batch=3, check_val_every_n_epoch=1)]
        [2, 5, 8]
    """
    if not should_validate_epoch(epoch, check_val_every_n_epoch):
        return False
    if check_batch is None:
        return is_last_batch or stopping
    if stopping:
        return True
    index = total_batch_idx if check_val_every_n_epoch is None else batch_idx
    return (index + 1) % check_batch == 0


def is_max_reached(value: int, limit: int) -> bool:
    """``value >= limit`` where ``limit == -1`` means no limit.

    Example:
        >>> is_max_reached(5, 5), is_max_reached(5, -1)
        (True, False)
    """
    return limit != -1 and value >= limit


def can_stop_early(*, epochs_done: int, step: int, min_epochs: int, min_steps: int | None) -> bool:
    """Whether a stop *request* (early stopping, max_time) may end the run now.

    ``min_epochs``/``min_steps`` hold such requests off; max_* limits are not
    requests and always stop.

    Example:
        >>> can_stop_early(epochs_done=1, step=10, min_epochs=2, min_steps=None)
        False
    """
    return epochs_done >= min_epochs and (min_steps is None or step >= min_steps)


def every(*, steps: int | None = None, epochs: int | None = None) -> EveryPredicate:
    """A predicate "every n steps" or "every n epochs" over 1-based counts.

    Example:
        >>> p = every(steps=50)
        >>> [s for s in range(1, 201) if p(s)]
        [50, 100, 150, 200]
    """
    if (steps is None) == (epochs is None):
        raise ValueError("every: give exactly one of steps= or epochs=")
    n = steps if steps is not None else epochs
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"every: n must be an int >= 1, got {n!r}")
    return EveryPredicate(n, "steps" if steps is not None else "epochs")


class EveryPredicate:
    """``count % n == 0``, with a readable repr."""

    __slots__ = ("kind", "n")

    def __init__(self, n: int, kind: str) -> None:
        self.n = n
        self.kind = kind

    def __call__(self, count: int) -> bool:
        return count % self.n == 0

    def __repr__(self) -> str:
        return f"every({self.kind}={self.n})"


def estimated_stepping_batches(
    epoch_batches: int | None,
    accumulate: int | Mapping[int, int],
    max_epochs: int,
    max_steps: int,
) -> float:
    """Total optimizer steps a run will take (Lightning's estimate), ``inf`` if unbounded.

    Each epoch takes ``ceil(epoch_batches / n)`` steps (a short last window steps too),
    with ``n`` from an ``{epoch: n}`` schedule where one is given; ``max_steps`` caps it.

    Example:
        >>> estimated_stepping_batches(10, 4, max_epochs=3, max_steps=-1)
        9
        >>> estimated_stepping_batches(10, {0: 1, 2: 5}, max_epochs=3, max_steps=15)
        15
    """
    if epoch_batches is None or max_epochs == -1:
        return math.inf if max_steps == -1 else max_steps
    total = 0
    for epoch in range(max_epochs):
        total += math.ceil(epoch_batches / accumulate_at(accumulate, epoch))
    return total if max_steps == -1 else min(total, max_steps)
