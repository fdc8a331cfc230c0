"""The one walker over nested batches: device moves, casts, sizes and byte counts.

A batch is a tensor or a nest of tuples (namedtuples and other tuple types too),
lists, mappings, attrs classes and dataclasses holding tensors; anything else is a
leaf that is kept as it is. :func:`map_tensors` rebuilds the nest around new
tensors, :func:`tensors` yields them depth first; every other function here is
one of those two with a function.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import torch

__all__ = [
    "batch_size_of",
    "cast_floats",
    "map_tensors",
    "move_to_device",
    "tensor_bytes",
    "tensors",
]


def _is_record(obj: Any) -> bool:
    cls = type(obj)
    return not isinstance(obj, type) and (attrs.has(cls) or dataclasses.is_dataclass(cls))


def _fields(obj: Any) -> list[tuple[str, str, bool]]:
    """(attribute name, init name, in __init__) for an attrs or dataclass instance."""
    cls = type(obj)
    if attrs.has(cls):
        return [(a.name, a.alias or a.name, a.init) for a in attrs.fields(cls)]
    return [(f.name, f.name, f.init) for f in dataclasses.fields(obj)]


def _map_record(fn: Callable[[torch.Tensor], Any], record: Any) -> Any:
    fields = _fields(record)
    out = type(record)(
        **{
            init: map_tensors(fn, getattr(record, name))
            for name, init, in_init in fields
            if in_init
        }
    )
    for name, _, in_init in fields:
        if not in_init:
            # Fields outside __init__ are computed or defaulted; carry the mapped value.
            object.__setattr__(out, name, map_tensors(fn, getattr(record, name)))
    return out


def map_tensors(fn: Callable[[torch.Tensor], Any], batch: Any) -> Any:
    """The batch with every tensor ``t`` replaced by ``fn(t)``, its nesting rebuilt.

    Args:
        fn: applied to each tensor.
        batch: a tensor or a nest of tuples, lists, mappings, attrs classes and
            dataclasses; other objects are returned as they are.

    Returns:
        A batch of the same structure and types.

    Example:
        >>> map_tensors(lambda t: t * 2, {"x": (torch.ones(1), "id")})
        {'x': (tensor([2.]), 'id')}
    """
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    cls = type(batch)
    if cls is tuple or cls is list:  # the common case, without the checks below
        return cls([fn(x) if isinstance(x, torch.Tensor) else map_tensors(fn, x) for x in batch])
    if cls is dict:
        return {k: map_tensors(fn, v) for k, v in batch.items()}
    if isinstance(batch, Mapping):
        mapped = {k: map_tensors(fn, v) for k, v in batch.items()}
        if isinstance(batch, defaultdict):
            return cls(batch.default_factory, mapped)
        return cls(mapped)
    if isinstance(batch, tuple):
        items = [map_tensors(fn, x) for x in batch]
        # A namedtuple takes fields as arguments; other tuple types (torch.return_types)
        # take one sequence.
        return cls(*items) if hasattr(batch, "_fields") else cls(items)
    if isinstance(batch, list):
        return cls(map_tensors(fn, x) for x in batch)
    if _is_record(batch):
        return _map_record(fn, batch)
    return batch


def tensors(batch: Any) -> Iterator[torch.Tensor]:
    """The tensors of a nested batch, depth first (mapping values in their order).

    Example:
        >>> [t.shape[0] for t in tensors(((torch.zeros(4), 1), {"y": torch.zeros(2)}))]
        [4, 2]
    """
    if isinstance(batch, torch.Tensor):
        yield batch
        return
    if isinstance(batch, (tuple, list)):
        children: Any = batch
    elif isinstance(batch, Mapping):
        children = batch.values()
    elif _is_record(batch):
        children = (getattr(batch, name) for name, _, _ in _fields(batch))
    else:
        return
    for child in children:
        yield from tensors(child)


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a nested batch to ``device``.

    A tensor already on ``device`` is returned itself, not copied.

    Args:
        batch: a tensor or a nested structure holding tensors.
        device: the target device.
        non_blocking: passed to ``Tensor.to``.

    Returns:
        The batch with its tensors on ``device``.

    Example:
        >>> b = {"x": torch.ones(2)}
        >>> move_to_device(b, torch.device("cpu"))["x"] is b["x"]
        True
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    return map_tensors(lambda t: t.to(device, non_blocking=non_blocking), batch)


def cast_floats(batch: Any, dtype: torch.dtype) -> Any:
    """Cast the floating-point tensors of a nested batch to ``dtype``.

    Example:
        >>> cast_floats((torch.ones(1), torch.ones(1, dtype=torch.int64)), torch.float64)
        (tensor([1.], dtype=torch.float64), tensor([1]))
    """
    return map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t, batch)


def batch_size_of(batch: Any) -> int | None:
    """The batch size as Lightning infers it: ``size(0)`` of the first tensor found.

    The search is depth first; a 0-dim tensor counts as 1.

    Args:
        batch: a tensor or a nested structure.

    Returns:
        The size, or None when the batch holds no tensor.

    Example:
        >>> batch_size_of((torch.zeros(4, 3), torch.zeros(4))), batch_size_of({"a": 1})
        (4, None)
    """
    first = next(tensors(batch), None)
    if first is None:
        return None
    return first.size(0) if first.dim() else 1


def tensor_bytes(batch: Any) -> int:
    """Bytes held by the tensors of a nested batch.

    Example:
        >>> tensor_bytes((torch.zeros(4, 2), {"y": torch.zeros(4, dtype=torch.int64)}))
        64
    """
    return sum(t.nelement() * t.element_size() for t in tensors(batch))
