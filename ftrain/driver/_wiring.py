"""Preparing a run: the flags applied to the steps, the state on its device, modes."""

from __future__ import annotations

from typing import Any

import torch

from .._batch import batch_size_of
from .._combinators import apply_fit_flags, clip_grad_norm, clip_grad_value
from .._config import FitConfig
from .._state import TrainState
from .._step import _number
from ..loop import reload_due

__all__ = [
    "BatchSize",
    "build_step",
    "is_factory",
    "move_state",
]


def is_factory(data: Any) -> bool:
    return callable(data) and not hasattr(data, "__iter__")


def build_step(step: Any, config: FitConfig) -> Any:
    """Apply the accumulate/clip/precision/randomness flags to the step (never twice)."""
    clip_val = config.gradient_clip_val
    clip = None
    if clip_val is not None and clip_val > 0:
        value = _number("gradient_clip_val", clip_val)
        clip = (
            clip_grad_norm(value) if config.clip_algorithm() == "norm" else clip_grad_value(value)
        )
    return apply_fit_flags(
        step, config.accumulate_grad_batches, clip, config.resolved_precision, config.randomness
    )


def move_state(state: TrainState, device: torch.device) -> None:
    for model in state.models:
        model.to(device)
    for opt in state.optimizers:
        for per_param in opt.state.values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and key != "step" and value.device != device:
                    per_param[key] = value.to(device)


class BatchSize:
    """``batch_size_of(batch)`` of the current batch, for the collector to call when needed.

    One object for the whole run: the loop sets ``batch`` instead of making a closure
    per batch.
    """

    __slots__ = ("batch",)

    def __init__(self) -> None:
        self.batch: Any = None

    def __call__(self) -> int | None:
        return batch_size_of(self.batch)


class DataSource:
    """A loader, or a factory ``epoch -> loader`` called again when a reload is due."""

    def __init__(self, data: Any, reload_every_n_epochs: int) -> None:
        self.data = data
        self.every = reload_every_n_epochs
        self.factory = is_factory(data)
        self.loaded: Any = None
        self.last: int | None = None

    def at(self, epoch: int) -> Any:
        """The loader of ``epoch``."""
        if not self.factory:
            return self.data
        if reload_due(epoch, self.last, self.every):
            self.loaded = self.data(epoch)
            self.last = epoch
        return self.loaded
