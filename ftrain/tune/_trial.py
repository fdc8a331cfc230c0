"""What both tuners share: a scratch clone to explore on, cycled batches, cleanup.

A tuner never touches the state it is given. It explores on ``state.clone()`` with a
fresh copy of the step (a ``TrainStep`` caches the optimizer it last saw), keeps
torch's random generators as they were, and drops the clone before returning so
an accelerator gets its memory back.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .._batch import move_to_device
from .._state import TrainState
from .._step import Metrics, TrainStep

__all__ = [
    "advance",
    "batches",
    "check_choice",
    "check_int",
    "check_number",
    "device_of",
    "fresh_step",
    "kept_rng",
    "release",
    "scratch",
    "set_lr",
]


def check_int(owner: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return value


def check_number(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, or a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be one of {accepted}, got {value!r}")
    return value


def scratch(state: TrainState) -> TrainState:
    """A clone to explore on: no scheduler, a fresh accumulation window, train mode.

    The scheduler goes because the tuner sets the learning rate itself; the epoch
    window is reset so that a clone of a mid-epoch state accumulates full windows.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    if state.optimizer is None:
        raise ValueError("state has no optimizer: tuning needs TrainState.create(model, optimizer)")
    clone = state.clone().replace(scheduler=None, batch_idx=0, epoch_length=None)
    for model in clone.models:
        model.train()
    return clone


def fresh_step(step: Any) -> Any:
    """A copy of a ``TrainStep`` with an empty cache; other steps as they are."""
    if isinstance(step, TrainStep):
        return step.with_()
    if not callable(step):
        raise TypeError(f"train_step must be callable, got {type(step).__name__}")
    return step


def device_of(state: TrainState) -> torch.device:
    """The device of the state's first parameter (CPU for a model without any)."""
    for model in state.models:
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def batches(data: Iterable[Any], device: torch.device, owner: str) -> Iterator[Any]:
    """The batches of ``data`` on ``device``, starting over when it runs out.

    A one-shot iterator ends after its single pass.

    Raises:
        ValueError: ``data`` yields no batch at all.
    """
    if not isinstance(data, Iterable):
        raise TypeError(f"{owner}: data must be an iterable of batches, got {type(data).__name__}")
    first_pass = True
    while True:
        empty = True
        for batch in data:
            empty = False
            yield move_to_device(batch, device)
        if empty:
            if first_pass:
                raise ValueError(f"{owner}: data yielded no batches")
            return
        first_pass = False


def advance(step: Any, state: TrainState, batch: Any, owner: str) -> tuple[TrainState, Metrics]:
    """One call of the step, checked to have consumed the batch."""
    new, metrics = step(state, batch)
    if not isinstance(new, TrainState) or new.micro_step == state.micro_step:
        raise TypeError(
            f"{owner}: the train step did not advance state.micro_step; wrap a hand-written "
            "step with ftrain.custom_step"
        )
    return new, metrics


def set_lr(state: TrainState, lr: float) -> None:
    """Set ``lr`` on every param group of every optimizer (a tensor lr keeps its tensor)."""
    for opt in state.optimizers:
        for group in opt.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr


@contextlib.contextmanager
def kept_rng(device: torch.device) -> Iterator[None]:
    """Restore torch's generators afterwards: the step reseeds them, tuning must not."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def release(device: torch.device) -> None:
    """Return the dropped clone's memory to an accelerator.

    Reference counting frees the clone as soon as it is dropped; a full collection
    (about 0.2 s) is worth it only where a cache holds on to freed device memory.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
