"""LR schedulers: how the loop steps them (``SchedulerConfig``), and the stepping itself.

Lightning's rules: an "epoch" scheduler steps after every ``frequency`` whole training
epochs (``ReduceLROnPlateau`` with its monitored value), a "step" scheduler after an
optimizer update on batches whose ``(batch_idx + 1) % frequency == 0``.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from ._warn import user_stacklevel

__all__ = [
    "SchedulerConfig",
    "as_scheduler_config",
    "copy_step_tracking",
    "scheduler_configs",
    "step_epoch_schedulers",
]


@attrs.frozen(slots=True)
class SchedulerConfig:
    """How the loop steps an LR scheduler (Lightning's scheduler dict, as a value).

    Attributes:
        scheduler: a ``torch.optim.lr_scheduler`` object.
        interval: "epoch" (stepped at each training epoch's end, Lightning's default)
            or "step" (after each optimizer step, never on accumulating batches).
        frequency: step it every ``frequency`` epochs ("epoch"), or on updating
            batches whose ``(batch_idx + 1) % frequency == 0`` ("step", Lightning's rule).
        monitor: for ``ReduceLROnPlateau``: the logged metric it is fed.
        strict: a missing monitor is an error (True) or a warning (False).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1), interval="step").interval
        'step'
    """

    scheduler: Any
    interval: str = attrs.field(default="epoch")
    frequency: int = attrs.field(default=1)
    monitor: str | None = None
    strict: bool = True

    @interval.validator
    def _check_interval(self, _: Any, value: str) -> None:
        if value not in ("epoch", "step"):
            raise ValueError(f"SchedulerConfig: interval must be 'epoch' or 'step', got {value!r}")

    @frequency.validator
    def _check_frequency(self, _: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"SchedulerConfig: frequency must be an int >= 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and self.monitor is None:
            raise ValueError(
                "SchedulerConfig: ReduceLROnPlateau needs monitor=<name of a logged metric>"
            )

    def state_dict(self) -> dict[str, Any]:
        """The wrapped scheduler's state."""
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped scheduler's state."""
        self.scheduler.load_state_dict(state)


def as_scheduler_config(value: Any) -> SchedulerConfig:
    """A bare scheduler gets Lightning's defaults: stepped once per epoch.

    Raises:
        TypeError: a list or tuple (several schedulers go in a mapping), or an object
            without ``step`` and ``state_dict``.
    """
    if isinstance(value, SchedulerConfig):
        return value
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"scheduler: got a {type(value).__name__} of {len(value)}; pass one scheduler, or "
            "a mapping {name: scheduler} for several"
        )
    if not (hasattr(value, "step") and hasattr(value, "state_dict")):
        raise TypeError(
            f"scheduler: expected an LR scheduler (with step and state_dict), got "
            f"{type(value).__name__}"
        )
    return SchedulerConfig(value)


def scheduler_configs(scheduler: Any) -> list[SchedulerConfig]:
    """A state's ``scheduler`` field (None, one, or a mapping) as a list of configs."""
    if scheduler is None:
        return []
    if isinstance(scheduler, Mapping):
        return [as_scheduler_config(s) for s in scheduler.values()]
    return [as_scheduler_config(scheduler)]


def step_epoch_schedulers(
    schedulers: Sequence[SchedulerConfig], metrics: Mapping[str, float], epoch: int
) -> None:
    """Step the "epoch"-interval schedulers after the whole training epoch ``epoch``.

    Args:
        schedulers: the state's schedulers.
        metrics: the logged values; ``ReduceLROnPlateau`` is fed its ``monitor``.
        epoch: the 0-based epoch that ended.

    Raises:
        ValueError: a plateau scheduler's monitor was not logged and ``strict`` is set.
    """
    for sched in schedulers:
        if sched.interval != "epoch" or (epoch + 1) % sched.frequency != 0:
            continue
        if isinstance(sched.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = sched.monitor or ""
            if monitor not in metrics:
                message = (
                    f"ReduceLROnPlateau monitors {monitor!r}, which was not logged; "
                    f"logged: {sorted(metrics)}"
                )
                if sched.strict:
                    raise ValueError(message)
                warnings.warn(message, RuntimeWarning, stacklevel=user_stacklevel())
                continue
            sched.scheduler.step(metrics[monitor])
        else:
            sched.scheduler.step()


def copy_step_tracking(scheduler: Any, original: Any) -> None:
    """Re-install on a copied optimizer the ``step`` wrapper torch's LR schedulers add.

    Optimizer pickling (hence deepcopy) drops it, and without it the copy's first
    ``scheduler.step()`` warns that ``optimizer.step()`` was overridden.
    """
    opt = getattr(scheduler, "optimizer", None)
    source = getattr(original, "optimizer", None)
    if opt is None or source is None or not hasattr(source.step, "_wrapped_by_lr_sched"):
        return
    if hasattr(opt.step, "_wrapped_by_lr_sched"):
        return
    opt_ref = weakref.ref(opt)
    func = type(opt).step

    @functools.wraps(func)
    def step(*args: Any, **kwargs: Any) -> Any:
        target = opt_ref()
        target._opt_called = True  # type: ignore[union-attr]
        return func(target, *args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    opt.step = step  # type: ignore[method-assign]
    if getattr(source, "_opt_called", False):
        opt._opt_called = True
