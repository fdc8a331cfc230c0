"""Metric objects (torchmetrics-style) in checkpoints: their accumulated epoch state.

A metric object a step returns accumulates over the epoch (``update`` in its
``forward``) and is read at the epoch's end (``compute``, then ``reset``). For an exact
mid-epoch resume its state goes into the checkpoint. Duck-typed on torchmetrics'
public API, without importing it: ``metric_state`` (the dict of state tensors or
lists of tensors) to save, ``merge_state(dict)`` to restore.

The restore is a merge, not an overwrite: after a resume the object is first seen
when the step returns it, that is after it has already taken in its first batch, so
the saved state (the batches before the checkpoint) is merged in front of it with the
object's own reductions (sum, cat, max, min), which is what ``merge_state`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ._warn import user_stacklevel

__all__ = ["merge_saved_state", "saved_state"]


def _to(value: Any, device: torch.device | None) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device) if device is not None else value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_to(v, device) for v in value]
    return value


def _device(obj: Any, attr: str) -> torch.device | None:
    local = getattr(obj, attr, None)
    if isinstance(local, torch.Tensor):
        return local.device
    if isinstance(local, list) and local and isinstance(local[0], torch.Tensor):
        return local[0].device
    return getattr(obj, "device", None)


def saved_state(obj: Any) -> dict[str, Any] | None:
    """What a checkpoint keeps of a metric object: its states (on the CPU) and update
    count, or None when it has none this epoch or does not expose ``metric_state``."""
    states = getattr(obj, "metric_state", None)
    count = getattr(obj, "_update_count", None)
    if not isinstance(states, Mapping) or count == 0:
        return None
    return {
        "states": {k: _to(v, torch.device("cpu")) for k, v in states.items()},
        "update_count": int(count) if isinstance(count, int) else None,
    }


def merge_saved_state(obj: Any, saved: Mapping[str, Any], name: str) -> bool:
    """Merge a checkpoint's state of metric ``name`` into ``obj`` (see the module
    docstring). Returns False, with a warning, when the object cannot merge."""
    merge = getattr(obj, "merge_state", None)
    states = {k: _to(v, _device(obj, k)) for k, v in saved["states"].items()}
    try:
        if merge is None:
            raise TypeError("it has no merge_state")
        merge(states)
    except (RuntimeError, TypeError, ValueError) as err:
        warnings.warn(
            f"metric {name!r}: its state from the checkpoint could not be merged ({err}); "
            "its epoch value covers only the batches since the resume",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
        return False
    count = saved.get("update_count")
    if isinstance(count, int) and isinstance(getattr(obj, "_update_count", None), int):
        obj._update_count += count
    return True
