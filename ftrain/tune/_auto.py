"""``fit``'s ``auto_lr_find`` and ``auto_scale_batch_size`` flags (Lightning 1.x's tuner).

Both run before training, on the state and step ``fit`` is about to train (already
on its device), and print what they chose:

- ``auto_scale_batch_size`` ("power", "binsearch", True = "power") needs
  ``train_data=ftrain.per_batch_size(make_data)``, ``make_data(batch_size) -> loader``. The size found is
  printed, and ``fit`` trains on ``make_data(size)``, rebuilt whenever
  ``reload_dataloaders_every_n_epochs`` asks for the data again. Under
  ``fast_dev_run`` the search is skipped and ``make_data(2)`` (the search's start) is used.
- ``auto_lr_find`` runs :func:`ftrain.tune.lr_find` on the training data and sets
  the suggestion on every param group of every optimizer (and on the schedulers'
  base learning rates). A run resumed from a checkpoint keeps the checkpoint's
  learning rate.

They run in a single process only: in a distributed run the ranks could choose
differently, so tune first with :mod:`ftrain.tune` and pass the values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._data._sources import check_train_data
from .._state import TrainState
from ._batch_size import scale_batch_size
from ._lr_find import lr_find
from ._trial import set_lr

__all__ = ["apply_lr", "check_fit_tuning", "tune_for_fit"]

_START_SIZE = 2


def _loader_at(make_data: Callable[[int], Any], size: int, epoch: int) -> Any:
    return make_data(size)


def _is_factory(data: Any) -> bool:
    return callable(data) and not hasattr(data, "__iter__")


def check_fit_tuning(config: Any, train_data: Any, world_size: int) -> None:
    """Refuse the tuning flags where they cannot run, before ``fit`` sets anything up.

    Raises:
        ValueError: ``auto_scale_batch_size`` without ``per_batch_size(make_data)``, or a
            tuning flag in a distributed run.
    """
    scale = config.auto_scale_batch_size not in (None, False)
    check_train_data(train_data, scale_batch_size=scale)
    if (scale or config.auto_lr_find) and world_size > 1 and not config.fast_dev_run:
        raise ValueError(
            "fit: auto_lr_find and auto_scale_batch_size run in a single process; with "
            f"{world_size} processes, tune first with ftrain.tune and pass the values"
        )


def apply_lr(state: TrainState, lr: float) -> None:
    """Set ``lr`` on every param group, and as the base of schedulers that keep one."""
    set_lr(state, lr)
    for opt in state.optimizers:
        for group in opt.param_groups:
            if "initial_lr" in group:
                group["initial_lr"] = lr
    for config in state.schedulers:
        base = getattr(config.scheduler, "base_lrs", None)
        if isinstance(base, list):
            config.scheduler.base_lrs = [lr] * len(base)


def tune_for_fit(
    state: TrainState,
    step: Any,
    train_data: Any,
    config: Any,
    *,
    resumed: bool,
    say: Callable[[str], None],
) -> Any:
    """Run the tuners ``config`` asks for; the train data ``fit`` should use.

    Returns:
        ``train_data``, or for ``auto_scale_batch_size`` a factory ``epoch -> loader``
        building ``make_data(size)``.
    """
    fast = bool(config.fast_dev_run)
    scale = config.auto_scale_batch_size
    if scale not in (None, False):
        make_data = train_data.fn
        if fast:
            size = _START_SIZE
            say(f"auto_scale_batch_size: skipped under fast_dev_run; batch size {size}")
        else:
            mode = "power" if scale is True else scale
            size = scale_batch_size(make_data, state, step, mode=mode, init_val=_START_SIZE)
            say(f"auto_scale_batch_size: batch size {size} ({mode})")
        train_data = functools.partial(_loader_at, make_data, size)

    if config.auto_lr_find:
        if fast:
            say("auto_lr_find: skipped under fast_dev_run")
        elif resumed:
            say("auto_lr_find: skipped; the resumed run keeps its checkpoint's learning rate")
        else:
            data = train_data(state.epoch) if _is_factory(train_data) else train_data
            lr = lr_find(state, step, data).suggestion()
            if lr is None:
                say("auto_lr_find: no suggestion; the learning rate is unchanged")
            else:
                apply_lr(state, lr)
                say(f"auto_lr_find: learning rate set to {lr:.6g}")
    return train_data
