"""When a loop validates: Lightning's ``val_check_interval`` and ``check_val_every_n_epoch``."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import attrs

from .._config import parse_max_time
from .._schedules import should_validate, should_validate_epoch, val_check_batch
from ._position import Position

__all__ = ["ValInterval", "val_interval"]


def _check_every(_: Any, __: Any, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"val_interval: every_n_epochs must be None or an int >= 1, got {value!r}")


@attrs.frozen(slots=True)
class ValInterval:
    """A validation interval: a predicate over the loop's :class:`Position`.

    Build it with :func:`val_interval`. ``batches`` is a fraction of the epoch
    (float), a number of batches (int) or None (the epoch's end); ``seconds`` makes
    it time-based instead (``due`` is then the clock's call: see ``time_due``).

    Example:
        >>> v = val_interval(0.5)
        >>> [p.batch_idx for p in Position.whole_epoch(0, 10) if v.due(p)]
        [4, 9]
    """

    batches: int | float | None = 1.0
    every_n_epochs: int | None = attrs.field(default=1, validator=_check_every)
    seconds: float | None = None

    def check_batch(self, epoch_batches: int | None) -> int | None:
        """Batches between validations in an epoch of ``epoch_batches`` (None: its end).

        Raises:
            ValueError: an int interval longer than the epoch, or a fraction < 1.0 of
                an unsized epoch.
        """
        if self.seconds is not None:
            return None
        return val_check_batch(epoch_batches, self.batches, self.every_n_epochs)

    def counted(self, epoch: int, epoch_batches: int | None) -> tuple[int, bool] | None:
        """``due``'s rule for the batches of ``epoch`` before its last, without a stop.

        Returns:
            ``(k, across)``: validation follows the batch whose index (its index
            across epochs when ``across``) ``i`` has ``(i + 1) % k == 0``; or None
            when none of those batches is followed by one (it runs at the epoch's end
            or on a stop only). A time-based interval returns None: its clock decides.

        Example:
            >>> val_interval(0.5).counted(0, 10), val_interval(1.0, 2).counted(0, 10)
            ((5, False), None)
        """
        if self.seconds is not None or not should_validate_epoch(epoch, self.every_n_epochs):
            return None
        check = self.check_batch(epoch_batches)
        return None if check is None else (check, self.every_n_epochs is None)

    def due(self, pos: Position, *, stopping: bool = False, time_due: bool = False) -> bool:
        """Whether validation runs right after the batch at ``pos``.

        Args:
            pos: the position of the batch just trained.
            stopping: the run stops after this batch by a request (early stopping,
                max_time): validation runs once more, as in Lightning.
            time_due: for a time-based interval, the clock says it is time.
        """
        if self.seconds is not None:
            return time_due or stopping
        return should_validate(
            epoch=pos.epoch,
            batch_idx=pos.batch_idx,
            total_batch_idx=pos.total_batch_idx,
            is_last_batch=pos.is_last,
            check_batch=self.check_batch(pos.epoch_batches),
            check_val_every_n_epoch=self.every_n_epochs,
            stopping=stopping,
        )

    @property
    def at_epoch_end(self) -> bool:
        """Validation runs once per epoch, at its end (Lightning then saves epoch-triggered
        checkpoints at the training epoch's end)."""
        return self.every_n_epochs == 1 and self.seconds is None and self.batches in (None, 1.0)


def val_interval(
    val_check_interval: int | float | str | datetime.timedelta | Mapping[str, int] | None = 1.0,
    check_val_every_n_epoch: int | None = 1,
) -> ValInterval:
    """The validation interval of Lightning's two flags, as a value.

    Args:
        val_check_interval: a fraction of the epoch (float in (0, 1]), a number of
            training batches (int), a time (``"DD:HH:MM:SS"``, a dict of timedelta
            arguments, a ``timedelta``), or None for the epoch's end.
        check_val_every_n_epoch: validate in every n-th epoch; None counts an int
            interval across epochs.

    Returns:
        A :class:`ValInterval`.

    Raises:
        ValueError: a value outside those.

    Example:
        >>> val_interval(0.25).batches, val_interval("00:00:01:00").seconds
        (0.25, 60.0)
    """
    value = val_check_interval
    if isinstance(value, (str, Mapping, datetime.timedelta)):
        delta = parse_max_time(value)
        seconds = None if delta is None else delta.total_seconds()
        return ValInterval(None, check_val_every_n_epoch, seconds)
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value <= 0
        or (isinstance(value, float) and value > 1.0)
    ):
        raise ValueError(
            "val_interval: val_check_interval must be a float in (0, 1], an int >= 1, a time "
            f"or None, got {value!r}"
        )
    return ValInterval(value, check_val_every_n_epoch)
