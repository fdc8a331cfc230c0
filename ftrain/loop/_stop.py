"""When a loop stops: Lightning's max/min epochs and steps and ``max_time``, as predicates."""

from __future__ import annotations

from typing import Any

import attrs

from .._config import FitConfig
from .._schedules import can_stop_early, is_max_reached

__all__ = ["StopConditions", "stop_conditions"]


def _limit(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"stop_conditions: {attribute.name} must be an int >= -1, got {value!r}")


def _at_least_zero(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"stop_conditions: {attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen(slots=True)
class StopConditions:
    """When training ends, as pure predicates over (epochs done, optimizer steps, seconds).

    ``max_*`` limits always end the run (-1: no limit). A stop *request* (early
    stopping, a callback, ``max_time``) ends it only once ``min_epochs`` and
    ``min_steps`` are reached, as in Lightning.

    Example:
        >>> stop = stop_conditions(max_epochs=3, min_steps=10)
        >>> stop.reached(epoch=3, step=4), stop.may_stop(epochs_done=1, step=9)
        (True, False)
    """

    max_epochs: int = attrs.field(default=-1, validator=_limit)
    max_steps: int = attrs.field(default=-1, validator=_limit)
    min_epochs: int = attrs.field(default=0, validator=_at_least_zero)
    min_steps: int | None = attrs.field(default=None, validator=_at_least_zero)
    max_seconds: float | None = None

    def reached(self, *, epoch: int, step: int) -> bool:
        """A max limit is reached: ``epoch`` epochs are done or ``step`` steps taken."""
        return is_max_reached(epoch, self.max_epochs) or is_max_reached(step, self.max_steps)

    def steps_reached(self, step: int) -> bool:
        """``max_steps`` is reached."""
        return is_max_reached(step, self.max_steps)

    def may_stop(self, *, epochs_done: int, step: int) -> bool:
        """A stop request may take effect now (``min_epochs``/``min_steps`` are met)."""
        return can_stop_early(
            epochs_done=epochs_done, step=step, min_epochs=self.min_epochs, min_steps=self.min_steps
        )

    def out_of_time(self, elapsed: float) -> bool:
        """``max_time`` has passed (a stop request, held off by the minimums)."""
        return self.max_seconds is not None and elapsed >= self.max_seconds


def stop_conditions(
    max_epochs: int | None = None,
    max_steps: int = -1,
    min_epochs: int | None = None,
    min_steps: int | None = None,
    max_time: Any = None,
    *,
    config: FitConfig | None = None,
) -> StopConditions:
    """Stop conditions from Lightning's flags (or from a ``FitConfig``'s).

    Lightning's defaults apply: ``max_epochs`` is 1000 when nothing bounds the run,
    -1 when ``max_steps`` or ``max_time`` does; ``min_epochs`` is 1 when only
    ``min_steps`` is given.

    Raises:
        ValueError: a flag of the wrong type or range.

    Example:
        >>> stop_conditions().max_epochs, stop_conditions(max_steps=5).max_epochs
        (1000, -1)
    """
    if config is None:
        config = FitConfig(
            max_epochs=max_epochs,
            max_steps=max_steps,
            min_epochs=min_epochs,
            min_steps=min_steps,
            max_time=max_time,
        )
    return StopConditions(
        config.resolved_max_epochs(),
        config.resolved_max_steps(),
        config.resolved_min_epochs(),
        config.min_steps,
        config.max_time_seconds(),
    )
