"""Finding the checkpoint a run resumes from, and restoring the run from it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .. import _fs
from .._checkpointing import load_checkpoint
from .._config import FitConfig
from .._seed import set_rng_states
from .._state import TrainState
from ..checkpoint import default_policy
from ._rank_state import own_train_metrics
from ._resume_source import find_checkpoint
from ._run import Run
from ._rundir import lineage_of
from ._slurm import hpc_checkpoints, slurm_detected

__all__ = [
    "checkpoint_dirs",
    "find_ckpt",
    "hpc_ckpt_path",
    "resolve_policies",
    "resume",
    "search_dirs",
]


def resolve_policies(checkpoint: Any, config: FitConfig, enabled: bool) -> list[Any]:
    if not enabled:
        if checkpoint not in (None, False) and not config.fast_dev_run:
            raise ValueError(
                "fit: enable_checkpointing=False but a checkpoint policy was given; use one"
            )
        return []
    if checkpoint is None:
        return [default_policy()]
    if checkpoint is False:
        return []
    if isinstance(checkpoint, (list, tuple)):
        return list(checkpoint)
    return [checkpoint]


def checkpoint_dirs(
    policies: list[Any], root: str, loggers: list[Any], *, sharded: bool = False
) -> list[str]:
    """Each policy's folder. Raises ValueError for a file in the way, or for a URL
    under FSDP (shards are written to a local folder)."""
    dirs = []
    for policy in policies:
        if policy.dirpath is not None:
            dirs.append(os.fspath(policy.dirpath))
        elif loggers and loggers[0].log_dir is not None:
            dirs.append(_fs.join(loggers[0].log_dir, "checkpoints"))
        else:
            dirs.append(_fs.join(root, "checkpoints"))
    for d in dirs:
        if _fs.exists(d) and not _fs.isdir(d):
            raise ValueError(f"checkpoint dirpath {d!r} exists and is a file, not a directory")
        if sharded and _fs.is_url(d):
            raise ValueError(
                f"strategy='fsdp' writes checkpoint shards to a local folder; the checkpoint "
                f"folder {d!r} is a URL. Use a local or mounted dirpath / default_root_dir"
            )
    return dirs


def search_dirs(policies: list[Any], root: str, loggers: list[Any]) -> list[str]:
    """Directories where this run's checkpoints may be, without resolving a logger version."""
    dirs = [os.fspath(p.dirpath) for p in policies if p.dirpath is not None]
    dirs.append(_fs.join(root, "checkpoints"))
    for lg in loggers[:1]:
        save_dir, name = getattr(lg, "save_dir", None), getattr(lg, "name", None)
        base = _fs.join(save_dir, name) if save_dir and name else None
        if base and _fs.isdir(base):
            for version in _fs.listdir(base):
                dirs.append(_fs.join(base, version, "checkpoints"))
    return [d for d in dict.fromkeys(dirs) if _fs.isdir(d)]


def find_ckpt(
    ckpt_path: str, dirs: list[str], policies: list[Any], loggers: Any = ()
) -> str | None:
    """The file a run resumes from: a path, or "last"/"best" found in ``dirs``."""
    lg = loggers[0] if loggers else None
    save_dir, name = getattr(lg, "save_dir", None), getattr(lg, "name", None)
    base = _fs.join(save_dir, name) if save_dir and name else None
    return find_checkpoint(ckpt_path, dirs, policies, base)


def hpc_ckpt_path(ckpt_path: Any, root: str) -> Any:
    """``ckpt_path="hpc"``: the newest ``hpc_ckpt_N.ckpt`` in ``root``, else "last"; a job
    SLURM requeued (``SLURM_RESTART_COUNT`` > 0) resumes from it by itself."""
    restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if ckpt_path == "hpc" or (ckpt_path is None and restarted and slurm_detected()):
        found = hpc_checkpoints(root)
        return found[-1] if found else ("last" if ckpt_path == "hpc" else None)
    return ckpt_path


def resume(
    state: TrainState, path: str, run: Run, device: torch.device
) -> tuple[TrainState, Mapping[str, Any]]:
    """Restore the state, clock, metric accumulators, callbacks and logger versions."""
    payload = load_checkpoint(path, map_location=device)
    if payload.get("weights_only"):
        raise KeyError(
            f"{path}: the checkpoint holds only the model weights (save_weights_only=True); "
            "it cannot resume a run. Load it with ft.restore(state, path) instead"
        )
    state = run.dist.restore(state, payload, path)
    set_rng_states(payload.get("rng"))
    loop = payload.get("loop") or {}
    run.elapsed_before = float(loop.get("elapsed", 0.0))
    run.writer.resumed_from = path
    run.writer.lineage = [*lineage_of(payload), run.writer.claim.run_id]
    run.train.load_state_dict(own_train_metrics(payload, run.dist.rank, run.dist.world_size) or {})
    cb_states = payload.get("callbacks") or {}
    for i, cb in enumerate(run.callbacks):
        key = f"{type(cb).__name__}{i}"
        if key in cb_states and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(cb_states[key])
    run.call("on_load_checkpoint", state=state, checkpoint=payload)
    metrics = loop.get("metrics") or {}
    run.restored_metrics = {
        "val": dict(metrics.get("val") or {}),
        "epoch": dict(metrics.get("epoch") or {}),
    }
    run.callback_logged = dict(metrics.get("callbacks") or {})
    versions = loop.get("logger_versions") or []
    # Logged x values are step indices: the loggers drop what the interrupted run logged
    # at steps >= state.step, and the rows it had logged there before this checkpoint
    # (a validation inside an accumulation window logs at state.step) are written again.
    for lg, version in zip(run.loggers, versions, strict=False):
        lg.resume(_version_value(version), state.step)
    for row in metrics.get("log_tail") or []:
        run.log(row["values"], int(row["step"]))
    return state, payload


def _version_value(version: str) -> int | str:
    return int(version) if version.isdigit() else version
