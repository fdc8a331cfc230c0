"""Reductions of logged values: pure folds ``(acc, value, weight) -> acc``, then ``finalize``.

Accumulators stay on the value's device: nothing is copied to the host until
:func:`to_float` is asked for a number at a log point.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from typing import Any

import attrs
import torch

__all__ = ["Reducer", "reducer", "to_float"]

_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "max": "max", "min": "min", "sum": "sum"}
_REDUCE_FUNCS: dict[Any, str] = {
    torch.mean: "mean",
    torch.max: "max",
    torch.min: "min",
    torch.sum: "sum",
    builtins.max: "max",
    builtins.min: "min",
    builtins.sum: "sum",
}


def _resolve_reduce_fx(value: Any) -> str | Callable[..., Any]:
    if isinstance(value, str):
        try:
            return _REDUCE_NAMES[value]
        except KeyError:
            raise ValueError(
                f"reduce_fx: unknown value {value!r}; accepted: 'mean' (or 'avg'), 'max', 'min', "
                "'sum', or a callable over the stacked step values"
            ) from None
    if value in _REDUCE_FUNCS:
        return _REDUCE_FUNCS[value]
    if callable(value):
        return value
    raise TypeError(f"reduce_fx must be a string or a callable, got {type(value).__name__}")


@attrs.frozen(slots=True)
class Reducer:
    """A pure, incremental reduction: ``init()``, ``update(acc, value, weight)``, ``finalize(acc)``."""

    name: str
    init: Callable[[], Any]
    update: Callable[[Any, Any, int], Any]
    finalize: Callable[[Any], Any]


def _mean_update(acc: Any, value: Any, weight: int) -> Any:
    total, count = acc
    if isinstance(value, torch.Tensor):
        value = value.detach()
        total = value * weight if total is None else total.add(value, alpha=weight)
    else:
        total = value * weight if total is None else total + value * weight
    return (total, count + weight)


def _mean_finalize(acc: Any) -> Any:
    total, count = acc
    return total / count if count else math.nan


def _extreme(name: str, pick: Callable[[Any, Any], Any]) -> Reducer:
    def update(acc: Any, value: Any, weight: int) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach()
        return value if acc is None else pick(acc, value)

    return Reducer(name, lambda: None, update, lambda acc: math.nan if acc is None else acc)


def _tmax(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return a if a >= b else b


def _tmin(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return a if a <= b else b


def _sum_update(acc: Any, value: Any, weight: int) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach()
    return value if acc is None else acc + value


def _callable_reducer(fn: Callable[..., Any]) -> Reducer:
    def update(acc: Any, value: Any, weight: int) -> Any:
        value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        return (*acc, value)

    def finalize(acc: Any) -> Any:
        return fn(torch.stack([torch.as_tensor(v).reshape(()) for v in acc])) if acc else math.nan

    return Reducer(getattr(fn, "__name__", "callable"), tuple, update, finalize)


_REDUCERS = {
    "mean": Reducer("mean", lambda: (None, 0), _mean_update, _mean_finalize),
    "max": _extreme("max", _tmax),
    "min": _extreme("min", _tmin),
    "sum": Reducer("sum", lambda: None, _sum_update, lambda acc: 0.0 if acc is None else acc),
}


def reducer(reduce_fx: str | Callable[..., Any]) -> Reducer:
    """The reducer for a ``reduce_fx``.

    Example:
        >>> r = reducer("mean")
        >>> acc = r.init()
        >>> for value, weight in [(1.0, 3), (4.0, 1)]:
        ...     acc = r.update(acc, value, weight)
        >>> r.finalize(acc)
        1.75
    """
    resolved = _resolve_reduce_fx(reduce_fx)
    if isinstance(resolved, str):
        return _REDUCERS[resolved]
    return _callable_reducer(resolved)


def to_float(value: Any) -> float:
    """A Python float from a number or one-element tensor (syncs the device)."""
    if isinstance(value, torch.Tensor):
        return float(value.item())
    return float(value)
