"""The update phase, the same piece for ``train_step`` and hand-written steps.

``apply_update`` runs what follows backward in a hand-written loop: unscale (16-mixed)
→ the gradient transforms → ``optimizer.step()`` (through the GradScaler) → the
after-update transforms → ``zero_grad(set_to_none=True)``. ``step_schedulers`` steps
the state's step-interval LR schedulers after an update, with Lightning's frequency rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._state import SchedulerConfig, TrainState
from ._transforms import GradientTransform, init_missing, named_trainable, run_after_update
from ._transforms import run_gradient_transforms as _run_gradient

__all__ = ["apply_update", "step_schedulers", "update_phase"]


def update_phase(
    state: TrainState,
    transforms: Sequence[GradientTransform],
    named: Sequence[Any],
    optimizers: Sequence[torch.optim.Optimizer],
    scaler: Any,
    metrics: dict[str, Any],
) -> Any:
    """Unscale, transform, step, after-update, zero_grad; returns the new extras."""
    extras = state.extras
    if scaler is not None:
        for opt in optimizers:
            scaler.unscale_(opt)
    apply = True
    if transforms:
        apply, extras = _run_gradient(transforms, named, state, extras, metrics)
    after = transforms and any(t.slot == "after_update" for t in transforms)
    if apply and after:
        # An after-update transform's state starts from the weights before the first update.
        extras = init_missing(transforms, state, extras, "after_update")
    if apply:
        if scaler is not None:
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
        else:
            for opt in optimizers:
                opt.step()
        if after:
            extras = run_after_update(transforms, named, state, extras, metrics)
    elif scaler is not None:
        scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return extras


def step_schedulers(state: TrainState, position: int) -> None:
    """Step the step-interval schedulers after an update at batch ``position`` (1-based).

    Lightning counts a step-interval ``frequency`` in batches of the epoch.
    """
    sched = state.scheduler
    if sched is None:
        return
    for config in (sched,) if isinstance(sched, SchedulerConfig) else state.schedulers:
        if config.interval == "step" and position % config.frequency == 0:
            config.scheduler.step()


def apply_update(
    state: TrainState,
    transforms: Sequence[GradientTransform] = (),
    *,
    optimizer: Any = None,
    scaler: Any = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Run the update phase of ``train_step`` in a hand-written step.

    Unscales (when given the 16-mixed ``scaler``), runs the gradient transforms in order
    on the accumulated gradients (their state in ``state.extras``), steps the
    optimizer(s), runs the after-update transforms and zeroes the gradients. It does
    not touch the counters: ``custom_step`` counts the optimizer steps taken.

    Args:
        state: the state whose parameters hold gradients.
        transforms: gradient and after-update transforms, in order.
        optimizer: an optimizer, a list of them, or None for all of the state's.
        scaler: the ``GradScaler`` the loss was scaled with, if any.

    Returns:
        (the state with the transforms' new extras, their metrics).

    Raises:
        TypeError: a transform that is not a ``GradientTransform``.

    Example:
        >>> import torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> net(torch.ones(1, 2)).sum().backward()
        >>> state, metrics = ft.apply_update(state, [ft.clip_grad_norm(1.0)])
        >>> sorted(metrics), net.weight.grad
        (['grad_norm'], None)
    """
    for t in transforms:
        if not isinstance(t, GradientTransform):
            raise TypeError(f"apply_update: transforms must be GradientTransform values, got {t!r}")
    if optimizer is None:
        optimizers = state.optimizers
    elif isinstance(optimizer, torch.optim.Optimizer):
        optimizers = [optimizer]
    else:
        optimizers = list(optimizer)
    named = named_trainable(state.models, optimizers)
    metrics: dict[str, Any] = {}
    extras = update_phase(state, tuple(transforms), named, optimizers, scaler, metrics)
    return state.replace(extras=extras), metrics
