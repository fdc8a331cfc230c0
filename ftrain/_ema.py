"""Exponential moving average of the weights, an after-update transform.

``ema(decay)`` keeps ``avg = decay * avg + (1 - decay) * param`` after every
``optimizer.step()``; the averages live in ``state.extras["ema"]`` (checkpointed).
``ema_weights(state)`` swaps them into the model for a ``with`` block (validate,
test, export); ``ema_state_dict(state)`` is the model's ``state_dict`` with them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ._state import TrainState
from ._transforms import GradientTransform, named_trainable

__all__ = ["ema", "ema_state_dict", "ema_weights"]


def ema(decay: float = 0.999, *, name: str = "ema") -> GradientTransform:
    """Average the weights after each update: ``avg = decay * avg + (1 - decay) * param``.

    The averages start as a copy of the weights at the first update and are kept
    in ``state.extras[name]`` as a ``{param name: tensor}`` dict (checkpointed, so a
    resume continues them exactly). Use :func:`ema_weights` to validate or export.

    Args:
        decay: a number in [0, 1).
        name: the key in ``state.extras``; give two EMAs different names.

    Returns:
        An after-update transform (a combinator).

    Raises:
        ValueError: decay outside [0, 1).

    Example:
        >>> import ftrain as ft
        >>> ft.ema(0.99)
        ema(0.99)
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ValueError(f"ema: decay must be a number in [0, 1), got {decay!r}")
    weight = 1.0 - float(decay)

    def init(state: TrainState) -> dict[str, torch.Tensor]:
        named = named_trainable(state.models, state.optimizers)
        return {n: p.detach().clone() for n, p in named}

    def update(params: dict[str, torch.Tensor], avg: dict[str, torch.Tensor], state: Any) -> Any:
        averages = list(avg.values())
        weights = [p.detach() for p in params.values()]
        if averages and averages[0].device != weights[0].device:
            # Loaded from a checkpoint onto another device: follow the weights once.
            avg = {n: a.to(weights[0].device) for n, a in avg.items()}
            averages = list(avg.values())
        torch._foreach_lerp_(averages, weights, weight)
        return avg, {}

    update.__name__ = "ema"
    shown = f"ema({decay!r})" if name == "ema" else f"ema({decay!r}, name={name!r})"
    return GradientTransform(
        name, update, init, "after_update", shown=shown, key=("ema", float(decay))
    )


def _averages(state: TrainState, name: str) -> dict[str, torch.Tensor]:
    avg = state.extras.get(name)
    if avg is None and state.step == 0:
        return {}  # before the first update the average is the weights themselves
    if not isinstance(avg, dict):
        raise KeyError(
            f"ema_weights: state.extras has no averages under {name!r}; the step needs "
            "ft.ema(...) and at least one update"
        )
    return avg


@contextlib.contextmanager
def ema_weights(state: TrainState, name: str = "ema") -> Iterator[TrainState]:
    """Swap the averaged weights into the model for a ``with`` block, then swap back.

    Args:
        state: a state trained with ``ft.ema(...)``.
        name: the EMA's name.

    Yields:
        The state, whose model holds the averages inside the block.

    Raises:
        KeyError: no averages under ``name`` after the first update (before it, the
            averages are the weights and nothing is swapped).

    Example:
        >>> import torch, ftrain as ft
        >>> net = torch.nn.Linear(1, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> step = ft.ema(0.5)(ft.train_step(lambda m, b: m(b).sum()))
        >>> state, _ = step(state, torch.ones(1, 1))
        >>> before = net.weight.clone()
        >>> with ft.ema_weights(state):
        ...     moved = not torch.equal(net.weight, before)
        >>> moved, torch.equal(net.weight, before)
        (True, True)
    """
    avg = _averages(state, name)
    named = dict(named_trainable(state.models, state.optimizers))
    pairs = [(named[n], a) for n, a in avg.items() if n in named]
    with torch.no_grad():
        for p, a in pairs:
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)
    try:
        yield state
    finally:
        with torch.no_grad():
            for p, a in pairs:
                tmp = p.detach().clone()
                p.copy_(a)
                a.copy_(tmp)


def ema_state_dict(state: TrainState, name: str = "ema") -> dict[str, Any]:
    """The model's ``state_dict`` with the averaged weights (buffers as they are).

    For a mapping of models, a dict of their state dicts.

    Raises:
        KeyError: no averages under ``name``.
    """
    with ema_weights(state, name):
        if isinstance(state.model, torch.nn.Module):
            return {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        return {
            key: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for key, m in state.model.items()
        }
