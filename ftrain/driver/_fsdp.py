"""``strategy="fsdp"``: FSDP2 (``fully_shard``) and sharded checkpoints.

Sharding: each submodule the policy names (default: the top-level children that
hold parameters) is sharded on its own, then the root; a mapping of models (a GAN's
``{"gen": G, "disc": D}``) has each of its models sharded so, each its own root. The
optimizers keep their identity (LR schedulers hold them) and their param groups are
pointed at the sharded parameters.

Checkpoints: every rank writes its shard of the model and optimizer with
``torch.distributed.checkpoint`` into ``<file>.<token>.dcp/``; then rank 0 commits
``<file>`` (the ordinary ``.ckpt`` file with counters, loop, policies and
``"sharded": <folder name>``), so the checkpoint policies, ``ckpt_path="last"`` and
the atomic-commit rule work unchanged. The models of a mapping are saved as one
``ModuleDict`` of them (keys ``"gen.<param>"``), with all optimizers in one state dict. Since every rank takes part in a save, the
ranks carry out rank 0's decisions: one small broadcast per checkpoint event (per
optimizer step with checkpointing on), a cost DDP runs do not have.

At the end of ``fit`` the modules are made plain again (full parameters, their own
classes, no FSDP hooks), so the returned state works without a process group.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .. import _fs
from .._checkpointing import restore, state_payload
from .._state import TrainState
from .._warn import user_stacklevel
from ..checkpoint._io import CheckpointError, atomic_save

__all__ = ["load_sharded", "save_sharded", "shard", "share_actions", "unshard"]


def _model(state: TrainState) -> nn.Module:
    """The model, or a ``ModuleDict`` holding the models of a mapping (not copies)."""
    if isinstance(state.model, nn.Module):
        return state.model
    for name in state.model:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                "strategy='fsdp': the names of a mapping of models must be non-empty "
                f"strings without '.' (they prefix the checkpoint's keys), got {name!r}"
            )
    return nn.ModuleDict(dict(state.model))


def _default_targets(module: nn.Module) -> list[nn.Module]:
    return [c for c in module.children() if next(c.parameters(), None) is not None]


def shard(state: TrainState, step: Any, env: Any) -> TrainState:
    """Apply ``fully_shard`` and point the optimizer at the sharded parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    _model(state)  # a mapping's names are checked before anything is sharded
    mesh = init_device_mesh(env.accelerator, (env.world_size,))
    policy = env.fsdp_policy or _default_targets
    new_of: dict[int, nn.Parameter] = {}
    for model in state.models:
        before = dict(model.named_parameters())
        for sub in policy(model):
            if sub is not model:
                fully_shard(sub, mesh=mesh)
        fully_shard(model, mesh=mesh)
        after = dict(model.named_parameters())
        new_of.update({id(p): after[name] for name, p in before.items()})
    for opt in state.optimizers:
        for group in opt.param_groups:
            group["params"] = [new_of.get(id(p), p) for p in group["params"]]
        for old in list(opt.state):
            new = new_of.get(id(old))
            if new is None:
                continue
            opt.state[new] = {
                k: distribute_tensor(v.to(new.device), mesh, new.placements)  # type: ignore[attr-defined]
                if isinstance(v, torch.Tensor) and v.shape == old.shape and v.dim() > 0
                else v
                for k, v in opt.state.pop(old).items()
            }
    cache = getattr(step, "_cache", None)
    if cache is not None:
        # The step's cached parameter list names the unsharded parameters: rebuild it.
        cache.__init__()
    return state


def share_actions(actions: list[Any], env: Any) -> list[Any]:
    """Rank 0's checkpoint actions on every rank (a one-int broadcast when there are none)."""
    import torch.distributed as dist

    count = torch.tensor([len(actions) if env.is_main else 0], dtype=torch.int64)
    dist.broadcast(count, src=0, group=env._ctl)
    if not int(count.item()):
        return []
    mine = (actions, uuid.uuid4().hex[:8]) if env.is_main else None
    shared, env.token = env._broadcast(mine)
    return list(shared)


def _content(state: TrainState, weights_only: bool) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(_model(state), state.optimizers)
    return {"model": model_sd} if weights_only else {"model": model_sd, "optimizer": optim_sd}


def save_sharded(
    state: TrainState,
    path: str,
    extra: Callable[[], dict[str, Any]],
    *,
    weights_only: bool,
    env: Any,
    overwrite: bool = True,
) -> None:
    """Every rank writes its shard; then rank 0 commits the ``.ckpt`` file naming them
    (``overwrite=False``: ``FileExistsError`` rather than replace a file)."""
    import torch.distributed.checkpoint as dcp

    if _fs.is_url(path):
        raise ValueError(
            f"strategy='fsdp': sharded checkpoints are written with "
            f"torch.distributed.checkpoint to a local folder; {path!r} is a URL. Use a "
            "local (or mounted) checkpoint dirpath / default_root_dir"
        )
    shards = f"{path}.{env.token}.dcp"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    dcp.save(_content(state, weights_only), checkpoint_id=shards, process_group=env._ctl)
    env.barrier()  # every shard is on disk before the file that names them commits
    if not env.is_main:
        return
    payload = state_payload(state.replace(model=nn.Module(), optimizer=None))
    payload.update(weights_only=weights_only, sharded=os.path.basename(shards))
    del payload["model"]
    payload.pop("optimizer", None)
    payload.update(extra())
    atomic_save(payload, path, overwrite=overwrite)
    for old in glob.glob(glob.escape(path) + ".*.dcp"):
        if old != shards:
            shutil.rmtree(old, ignore_errors=True)


def load_sharded(state: TrainState, payload: Mapping[str, Any], path: str, env: Any) -> TrainState:
    """Load a sharded checkpoint into the sharded state (every rank reads its shard)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    shards = os.path.join(os.path.dirname(path), str(payload["sharded"]))
    if not os.path.isdir(shards):
        raise CheckpointError(f"{path}: its shard folder {shards!r} is missing")
    content = _content(state, bool(payload.get("weights_only")))
    dcp.load(content, checkpoint_id=shards, process_group=env._ctl)
    set_state_dict(
        _model(state),
        state.optimizers,
        model_state_dict=content["model"],
        optim_state_dict=content.get("optimizer", {}),
    )
    # The rest (counters, schedulers, scaler, extras) as for any checkpoint.
    rest = {k: v for k, v in payload.items() if k not in ("sharded", "model", "grads")}
    bare = state.replace(model=nn.Module(), optimizer=None)
    restored = restore(bare, {**rest, "model": {}})
    if restored.step > 0:
        for opt in state.optimizers:
            opt._opt_called = True  # type: ignore[attr-defined]
    return restored.replace(model=state.model, optimizer=state.optimizer)


def unshard(state: TrainState) -> TrainState:
    """Turn the sharded model back into a plain one with full parameters (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    model = _model(state)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    old_params = dict(model.named_parameters())
    optim_states = [
        {
            id(p): {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in s.items()}
            for p, s in opt.state.items()
        }
        for opt in state.optimizers
    ]
    try:
        for module in model.modules():
            if isinstance(module, FSDPModule):
                fsdp_state = module._get_fsdp_state()
                fsdp_state._pre_forward_hook_handle.remove()
                fsdp_state._post_forward_hook_handle.remove()
                cls = type(module)
                module.__class__ = cls.__mro__[cls._orig_cls_mro_index]
    except (AttributeError, IndexError) as exc:  # FSDP internals changed
        warnings.warn(
            f"fit(strategy='fsdp'): could not unshard the model ({exc}); the returned state "
            "holds the sharded model",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
        return state
    new_of: dict[int, nn.Parameter] = {}
    for name, old in old_params.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        new = nn.Parameter(full[name].detach().clone(), requires_grad=old.requires_grad)  # type: ignore[union-attr]
        owner._parameters[leaf] = new
        new_of[id(old)] = new
    for opt, states in zip(state.optimizers, optim_states, strict=True):
        opt.state.clear()
        for group in opt.param_groups:
            group["params"] = [new_of.get(id(p), p) for p in group["params"]]
        for old_id, s in states.items():
            adopted = new_of.get(old_id)
            if adopted is not None:
                opt.state[adopted] = s
    return state
