"""What a checkpoint holds, and turning a state into one and back.

A checkpoint is a plain dict of tensors, numbers and strings, loadable with
``torch.load(path, weights_only=True)``: ``model`` is an ordinary ``state_dict``
(a dict of them for several models), so the weights are readable without ftrain.
Keys: ``ftrain_format``, ``versions``, ``model``, ``optimizer``, ``scheduler``,
``scaler``, ``counters``, ``seed``, ``extras``, ``rng`` (the global generators' states:
torch, CUDA, python, numpy), ``grads`` (gradients accumulated so
far when saved inside an accumulation window, else absent), and what ``fit`` adds: ``loop``
(position, elapsed time, logger versions, partial epoch metrics), ``policies``,
``callbacks``, ``config`` and ``checkpoint_info``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import _fs
from ._restore_check import check_restorable, class_names
from ._seed import rng_states
from ._state import TrainState
from ._version import __version__
from .checkpoint import Delete, Save
from .checkpoint._io import FORMAT_VERSION, CheckpointError, atomic_save, safe_load

__all__ = [
    "load_checkpoint",
    "partial_grads",
    "restore",
    "save_checkpoint",
    "state_payload",
    "unwrap",
]


def unwrap(module: nn.Module) -> nn.Module:
    """The user's module inside DDP/FSDP or ``torch.compile`` wrappers."""
    while True:
        inner = getattr(module, "module", None)
        if isinstance(inner, nn.Module) and type(module).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
        ):
            module = inner
            continue
        orig = getattr(module, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            module = orig
            continue
        return module


def _each(value: Any, fn: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: fn(v) for k, v in value.items()}
    return fn(value)


def _versions() -> dict[str, str]:
    return {"ftrain": str(__version__), "torch": str(torch.__version__)}


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in unwrap(module).named_parameters() if p.grad is not None}


def state_payload(state: TrainState, *, weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict of a state (model weights only when ``weights_only``)."""
    payload: dict[str, Any] = {
        "ftrain_format": FORMAT_VERSION,
        "versions": _versions(),
        "weights_only": weights_only,
        "model": _each(state.model, lambda m: unwrap(m).state_dict()),
        "counters": {
            "step": state.step,
            "micro_step": state.micro_step,
            "epoch": state.epoch,
            "batch_idx": state.batch_idx,
            "epoch_length": state.epoch_length,
        },
        "seed": state.seed,
    }
    if not weights_only:
        payload["optimizer"] = _each(state.optimizer, lambda o: o.state_dict())
        payload["classes"] = {
            "optimizer": class_names(state.optimizer),
            "scheduler": class_names(state.scheduler),
        }
        payload["scheduler"] = _each(state.scheduler, lambda s: s.state_dict())
        payload["scaler"] = None if state.scaler is None else state.scaler.state_dict()
        payload["extras"] = dict(state.extras)
        # The global generators, for data code outside the step that draws from them.
        payload["rng"] = rng_states()
        grads = partial_grads(state)
        if grads is not None:
            payload["grads"] = grads
    return payload


def partial_grads(state: TrainState) -> Any:
    """The gradients summed so far inside an accumulation window, or None between windows.

    Inside a window (an interrupt, a mid-window validation) they are part of the state.
    """
    grads = _each(state.model, _grads)
    return grads if (any(grads.values()) if isinstance(state.model, Mapping) else grads) else None


def restore(
    state: TrainState,
    checkpoint: Mapping[str, Any] | str | os.PathLike[str],
    *,
    name: str | None = None,
) -> TrainState:
    """Load a checkpoint into a state's model, optimizer, scheduler and scaler.

    Every part is checked against the state before anything is loaded, so on an
    error the state is exactly as it was. Tensors are copied into the state's
    existing parameters and buffers (they keep their device); counters, seed and
    extras come from the checkpoint.

    Args:
        state: a state with the same architecture.
        checkpoint: a path, or a dict from :func:`load_checkpoint`.
        name: how messages name a dict checkpoint (its file, usually).

    Returns:
        The restored state.

    Raises:
        CheckpointError: the checkpoint does not fit the state (model keys or shapes,
            optimizer class, parameter-group layout or state keys, scheduler class,
            no optimizer state), naming the file and the part.
    """
    path = str(checkpoint) if not isinstance(checkpoint, Mapping) else (name or "<checkpoint>")
    payload = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(path)
    if payload.get("sharded") is not None:
        raise CheckpointError(
            f"{path}: a sharded (FSDP) checkpoint, its weights are in the folder "
            f"{payload['sharded']!r} beside it; resume it with fit(strategy='fsdp')"
        )
    check_restorable(state, payload, path, unwrap)
    weights = payload["model"]
    if isinstance(state.model, nn.Module):
        unwrap(state.model).load_state_dict(weights)
    else:
        for key, module in state.model.items():
            unwrap(module).load_state_dict(weights[key])
    counters = payload["counters"]
    changes: dict[str, Any] = {
        "step": int(counters["step"]),
        "micro_step": int(counters["micro_step"]),
        "epoch": int(counters["epoch"]),
        "batch_idx": int(counters["batch_idx"]),
        "epoch_length": counters.get("epoch_length"),
        "seed": int(payload["seed"]),
    }
    if payload.get("weights_only"):
        return state.replace(**changes)
    if state.optimizer is not None:
        opt_states = payload["optimizer"]
        if isinstance(state.optimizer, Mapping):
            for key, opt in state.optimizer.items():
                opt.load_state_dict(opt_states[key])
        else:
            state.optimizer.load_state_dict(opt_states)
    if int(counters["step"]) > 0:
        # The run's optimizers have stepped; tell torch's scheduler check so that an
        # epoch-end scheduler step right after a resume does not warn.
        for opt in state.optimizers:
            opt._opt_called = True  # type: ignore[attr-defined]
    if state.scheduler is not None and payload.get("scheduler") is not None:
        if isinstance(state.scheduler, Mapping):
            for key, sched in state.scheduler.items():
                sched.load_state_dict(payload["scheduler"][key])
        else:
            state.scheduler.load_state_dict(payload["scheduler"])
    scaler = state.scaler
    if payload.get("scaler") is not None:
        if scaler is None:
            device = next(iter(state.models[0].parameters())).device.type
            scaler = torch.amp.GradScaler(device)
        scaler.load_state_dict(payload["scaler"])
    changes["scaler"] = scaler
    changes["extras"] = dict(payload.get("extras") or {})
    grads = payload.get("grads")
    if isinstance(state.model, nn.Module):
        _load_grads(state.model, grads)
    else:
        for key, module in state.model.items():
            _load_grads(module, None if grads is None else grads.get(key))
    return state.replace(**changes)


def _load_grads(module: nn.Module, grads: Mapping[str, torch.Tensor] | None) -> None:
    for name, param in unwrap(module).named_parameters():
        grad = None if grads is None else grads.get(name)
        param.grad = None if grad is None else grad.to(param.device, param.dtype).clone()


def save_checkpoint(
    state: TrainState,
    path: str | os.PathLike[str],
    *,
    weights_only: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a state to ``path`` atomically (temp file, fsync, rename).

    Args:
        state: the state to save.
        path: the destination file.
        weights_only: save the model weights and counters only.
        extra: more plain entries to store (tensors, numbers, strings, containers).

    Example:
        >>> import tempfile, os, torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> path = os.path.join(tempfile.mkdtemp(), "a.ckpt")
        >>> ft.save_checkpoint(state, path)
        >>> sorted(torch.load(path, weights_only=True)["model"])
        ['bias', 'weight']
    """
    payload = state_payload(state, weights_only=weights_only)
    if extra:
        payload.update(extra)
    atomic_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, verify: bool = False
) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``: it cannot run code).

    Args:
        path: the file.
        map_location: where tensors go (``torch.load``'s argument).
        verify: first check the CRC of every record of the file, so a flipped bit in
            tensor data is caught (reads the file once more).

    Raises:
        CheckpointError: missing, corrupt or truncated file (or a failed ``verify``), a
            directory, torch's legacy format, unsafe content (naming the blocked
            global), not an ftrain checkpoint, or written by a newer format; the
            message names the file.
    """
    return safe_load(path, map_location=map_location, verify=verify)


def write_checkpoints(
    state: TrainState,
    actions: Iterable[Any],
    dirpath: str | os.PathLike[str],
    *,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Carry out a checkpoint policy's decisions: write each ``Save``, remove each ``Delete``.

    The edge of a hand-written loop's checkpointing: the policy (or
    ``ftrain.loop.CheckpointReducer``) decides, this writes. Each file stores the
    state, ``extra`` and the save's ``checkpoint_info`` (what
    ``ftrain.checkpoint.list_checkpoints`` reads back for ``recover``).

    Args:
        state: the state to save.
        actions: ``Save``/``Delete`` values, or ``(index, action)`` pairs as a
            reducer returns them (the index is ignored: one folder).
        dirpath: the folder of the files (a local path or an fsspec URL).
        extra: more plain entries for each written file (e.g. the policy states).

    Returns:
        The paths written.

    Example:
        >>> import tempfile, torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> policy = ft.checkpoint.last()
        >>> _, actions = policy.update(policy.init(), ft.checkpoint.Event("fit_end", step=1, epoch=0))
        >>> [os.path.basename(p) for p in write_checkpoints(state, actions, tempfile.mkdtemp())]
        ['last.ckpt']
    """
    written = []
    for action in actions:
        if isinstance(action, tuple):
            action = action[1]
        path = _fs.join(os.fspath(dirpath), action.name)
        if isinstance(action, Save):
            info = {"checkpoint_info": action.info.to_dict()}
            save_checkpoint(state, path, extra={**(extra or {}), **info})
            written.append(path)
        elif isinstance(action, Delete):
            if _fs.exists(path):
                _fs.remove(path)
        else:
            raise TypeError(f"write_checkpoints: expected Save or Delete, got {action!r}")
    return written
