"""Hand-written steps, first-class: ``custom_step(fn)`` and the helpers it uses.

A hand-written ``fn(state, batch) -> (state, metrics)`` updates models and optimizers
itself. ``custom_step`` makes it a loop step like ``train_step``: the step's randomness
is seeded (and the global streams left as they were), ``micro_step``/``batch_idx``
advance by one batch, ``step`` advances by the optimizer steps the body really took
(observed with optimizer step hooks), and the state's step-interval LR schedulers step
on those updates unless the body stepped them itself. A body may accumulate across
loader batches (:func:`accumulation_boundary`) and use ``train_step``'s own update
phase (:func:`ftrain.apply_update`) with any gradient transforms.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import attrs
import torch

from ._seed import check_randomness, enter_step, leave_step
from ._state import TrainState
from ._step import Metrics, _detach_metrics, _device_type

__all__ = ["CustomStep", "accumulation_boundary", "custom_step"]

# Optimizer steps taken, counted by a post-step hook installed once per optimizer.
_TAKEN: weakref.WeakKeyDictionary[torch.optim.Optimizer, int] = weakref.WeakKeyDictionary()


def _count(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    _TAKEN[optimizer] = _TAKEN.get(optimizer, 0) + 1


def _taken(optimizers: list[torch.optim.Optimizer]) -> list[int]:
    counts = []
    for opt in optimizers:
        count = _TAKEN.get(opt)
        if count is None:
            opt.register_step_post_hook(_count)
            _TAKEN[opt] = count = 0
        counts.append(count)
    return counts


def accumulation_boundary(state: TrainState, n: int) -> bool:
    """Whether the batch a step is about to consume closes a window of ``n`` batches.

    The rule of :func:`ftrain.accumulate`: every ``n``-th batch of the epoch, and the
    epoch's last batch (when ``state.epoch_length`` is known) closing a short window.

    Args:
        state: the state the step was called with.
        n: batches per optimizer step, an int >= 1.

    Raises:
        ValueError: n < 1.

    Example:
        >>> import torch, ftrain as ft
        >>> state = ft.TrainState.create(torch.nn.Linear(1, 1), None)
        >>> [ft.accumulation_boundary(state.replace(batch_idx=i), 4) for i in range(4)]
        [False, False, False, True]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"accumulation_boundary: n must be an int >= 1, got {n!r}")
    length = state.epoch_length
    return state.batch_idx % n == n - 1 or (length is not None and state.batch_idx + 1 >= length)


@attrs.frozen(slots=True, repr=False)
class CustomStep:
    """A hand-written step made a loop step; build it with :func:`custom_step`."""

    fn: Callable[[TrainState, Any], tuple[TrainState, Metrics]]
    randomness: str = attrs.field(default="step", validator=check_randomness)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fn

    @property
    def __name__(self) -> str:
        return getattr(self.fn, "__name__", "custom_step")

    def with_(self, **changes: Any) -> CustomStep:
        """A copy with some settings changed."""
        return attrs.evolve(self, **changes)

    def __repr__(self) -> str:
        extra = f", randomness={self.randomness!r}" if self.randomness != "step" else ""
        return f"custom_step({self.__name__}{extra})"

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        optimizers = state.optimizers
        before = _taken(optimizers)
        configs = [c for c in state.schedulers if c.interval == "step"]
        epochs = [getattr(c.scheduler, "last_epoch", None) for c in configs]
        if self.randomness == "ambient":
            new, metrics = self.fn(state, batch)
        else:
            cuda = _device_type(state.model) == "cuda"
            saved = enter_step(state.seed, state.micro_step, state.rank, cuda)
            try:
                new, metrics = self.fn(state, batch)
            finally:
                leave_step(saved)
        if not isinstance(new, TrainState):
            raise TypeError(
                f"custom_step: {self.__name__} must return (state, metrics), "
                f"got {type(new).__name__} as the state"
            )
        step = new.step
        if step == state.step:
            taken = [b - a for a, b in zip(before, _taken(optimizers), strict=True)]
            updates = max(taken, default=0)
            step += updates
            position = state.batch_idx + 1
            for config, epoch in zip(configs, epochs, strict=True):
                sched = config.scheduler
                # A body that stepped its scheduler itself is left alone.
                stepped_by_body = getattr(sched, "last_epoch", None) != epoch
                if updates and position % config.frequency == 0 and not stepped_by_body:
                    for _ in range(updates):
                        sched.step()
        return new.replace(
            step=step, micro_step=state.micro_step + 1, batch_idx=state.batch_idx + 1
        ), _detach_metrics(dict(metrics))


def custom_step(
    fn: Callable[[TrainState, Any], tuple[TrainState, Metrics]], *, randomness: str = "step"
) -> CustomStep:
    """Turn a hand-written ``fn(state, batch) -> (state, metrics)`` into a loop step.

    ``state.step`` advances by the optimizer steps ``fn`` took (for several optimizers,
    the most any one took: a GAN's D and G updates count one), or is what ``fn`` set it
    to; ``micro_step`` and ``batch_idx`` advance by one. Step-interval schedulers of the
    state step on each update ``fn`` took, unless ``fn`` stepped them. ``fn`` may
    accumulate over batches with :func:`ftrain.accumulation_boundary`, and use
    :func:`ftrain.apply_update` for the update phase of ``train_step``.

    Args:
        fn: the step body.
        randomness: ``"step"`` (seeded from (seed, micro_step, rank); the global streams
            outside the step untouched) or ``"ambient"`` (the global generators).

    Returns:
        A ``CustomStep`` the loop can drive.

    Raises:
        TypeError: fn not callable. ValueError: an unknown randomness.

    Example:
        >>> import torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> def body(state, batch):
        ...     state.model(batch).sum().backward()
        ...     if ft.accumulation_boundary(state, 2):
        ...         state.optimizer.step()
        ...         state.optimizer.zero_grad()
        ...     return state, {}
        >>> step = ft.custom_step(body)
        >>> for _ in range(4):
        ...     state, _ = step(state, torch.ones(1, 2))
        >>> state.step, state.micro_step
        (2, 4)
    """
    if not callable(fn):
        raise TypeError(f"custom_step: fn must be callable, got {type(fn).__name__}")
    return CustomStep(fn, randomness)
