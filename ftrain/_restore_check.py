"""Check that a checkpoint fits a state before anything is loaded into it.

``restore`` copies into live parameters and optimizer buffers; a mismatch found
half-way (an SGD checkpoint into Adam, a wrong layer size) would leave a state that
is neither the old one nor the checkpoint's. :func:`check_restorable` looks at every
part first: model keys and shapes, optimizer class, parameter-group layout and
per-parameter state keys, scheduler class and accumulated gradients, and raises a
``CheckpointError`` naming the file and the part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._state import TrainState
from .checkpoint._io import CheckpointError

__all__ = ["check_restorable", "class_names", "qualname"]

# Group entries torch added over versions (flags): absent from older files, not a
# sign of another optimizer class.
_FLAG_TYPES = (bool, type(None))


def qualname(obj: object) -> str:
    """``module.Class`` of an optimizer or scheduler (inside a ``SchedulerConfig``)."""
    kind = type(getattr(obj, "scheduler", obj))
    return f"{kind.__module__}.{kind.__qualname__}"


def class_names(value: Any) -> Any:
    """``qualname`` of one object or of each value of a mapping; None stays None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: qualname(v) for k, v in value.items()}
    return qualname(value)


def _pairs(mine: Any, saved: Any, what: str, path: str) -> list[tuple[str, Any, Any, Any]]:
    """Match one object or a mapping of them with the checkpoint's entries: (name of
    the part, its key or None, this state's object, the checkpoint's entry)."""
    if not isinstance(mine, Mapping):
        return [(what, None, mine, saved)]
    if not isinstance(saved, Mapping) or set(saved) != set(mine):
        got = sorted(saved) if isinstance(saved, Mapping) else "one"
        raise CheckpointError(f"{path}: {what}s {got} in the file, {sorted(mine)} in the state")
    return [(f"{what} {key!r}", key, mine[key], saved[key]) for key in mine]


def _class_of(classes: Mapping[str, Any], part: str, key: Any) -> Any:
    cls = classes.get(part)
    return cls.get(key) if isinstance(cls, Mapping) else cls


def _check_model(module: nn.Module, weights: Any, path: str, what: str) -> None:
    own = module.state_dict()
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's {what} is not a state_dict")
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the checkpoint's {what} does not match this model: missing keys "
            f"{missing[:10]}{'...' if len(missing) > 10 else ''}, unexpected keys "
            f"{unexpected[:10]}{'...' if len(unexpected) > 10 else ''}"
        )
    for key, value in weights.items():
        mine = own[key]
        tensors = isinstance(value, torch.Tensor) and isinstance(mine, torch.Tensor)
        if tensors and value.shape != mine.shape:
            raise CheckpointError(
                f"{path}: shape mismatch for {what} parameter {key!r}: checkpoint "
                f"{tuple(value.shape)}, model {tuple(mine.shape)}"
            )


def _hyper_keys(group: Mapping[str, Any]) -> set[str]:
    return {k for k, v in group.items() if k != "params" and not isinstance(v, _FLAG_TYPES)}


def _check_optimizer(
    opt: torch.optim.Optimizer, saved: Any, cls: Any, path: str, what: str
) -> None:
    mine = qualname(opt)
    if isinstance(cls, str) and cls != mine:
        raise CheckpointError(f"{path}: the checkpoint's {what} is a {cls}, this state's a {mine}")
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        raise CheckpointError(f"{path}: the checkpoint's {what} state is not an optimizer state")
    groups, own_groups = saved["param_groups"], opt.param_groups
    layout = [len(g["params"]) for g in groups]
    own_layout = [len(g["params"]) for g in own_groups]
    if layout != own_layout:
        raise CheckpointError(
            f"{path}: the checkpoint's {what} has parameter groups of sizes {layout}, "
            f"this optimizer {own_layout}"
        )
    for i, (group, own) in enumerate(zip(groups, own_groups, strict=True)):
        if _hyper_keys(group) != _hyper_keys(own):
            raise CheckpointError(
                f"{path}: the checkpoint's {what} group {i} has settings "
                f"{sorted(_hyper_keys(group))}, this {type(opt).__name__} "
                f"{sorted(_hyper_keys(own))} (another optimizer class?)"
            )
    ids = [p for g in groups for p in g["params"]]
    own_state = list(opt.state.values())
    own_keys = {frozenset(s) for s in own_state}
    for index, entry in saved["state"].items():
        if index not in ids:
            raise CheckpointError(
                f"{path}: the checkpoint's {what} has state for an unknown parameter {index!r}"
            )
        if len(own_keys) == 1 and set(entry) != set(next(iter(own_keys))):
            raise CheckpointError(
                f"{path}: the checkpoint's {what} state holds {sorted(entry)} per parameter, "
                f"this {type(opt).__name__} {sorted(next(iter(own_keys)))}"
            )


def _check_scheduler(sched: Any, saved: Any, cls: Any, path: str, what: str) -> None:
    mine = qualname(sched)
    if isinstance(cls, str) and cls != mine:
        raise CheckpointError(f"{path}: the checkpoint's {what} is a {cls}, this state's a {mine}")
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's {what} state is not a scheduler state")
    extra = sorted(set(saved) - set(sched.state_dict()))
    if extra:
        raise CheckpointError(
            f"{path}: the checkpoint's {what} state has entries {extra} this "
            f"{type(sched).__name__} does not (another scheduler class?)"
        )


def _check_grads(module: nn.Module, grads: Any, path: str, what: str) -> None:
    if grads is None:
        return
    params = dict(module.named_parameters())
    for name, grad in grads.items():
        if name not in params or grad.shape != params[name].shape:
            raise CheckpointError(
                f"{path}: the checkpoint's {what} gradient {name!r} fits no parameter"
            )


def check_restorable(state: TrainState, payload: Mapping[str, Any], path: str, unwrap: Any) -> None:
    """Raise ``CheckpointError`` (naming ``path`` and the part) unless every part fits.

    Args:
        state: the state ``restore`` would load into.
        payload: the checkpoint dict.
        path: the file's name, for messages.
        unwrap: the function that finds the user's module inside DDP/compile wrappers.
    """
    models = _pairs(state.model, payload.get("model"), "model", path)
    for what, _, module, weights in models:
        _check_model(unwrap(module), weights, path, what)
    if payload.get("weights_only"):
        return
    classes = payload.get("classes") or {}
    if state.optimizer is not None:
        if payload.get("optimizer") is None:
            raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
        for what, key, opt, saved in _pairs(
            state.optimizer, payload["optimizer"], "optimizer", path
        ):
            _check_optimizer(opt, saved, _class_of(classes, "optimizer", key), path, what)
    if state.scheduler is not None and payload.get("scheduler") is not None:
        for what, key, sched, saved in _pairs(
            state.scheduler, payload["scheduler"], "scheduler", path
        ):
            _check_scheduler(sched, saved, _class_of(classes, "scheduler", key), path, what)
    grads = payload.get("grads")
    if grads is not None:
        for what, _, module, saved in _pairs(state.model, grads, "model", path):
            _check_grads(unwrap(module), saved, path, what)
