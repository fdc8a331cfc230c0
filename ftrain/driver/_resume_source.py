"""Which file a resume reads: ``ckpt_path`` as "last", "best", a version, a folder or a file.

"last" and "best" look through every folder this run's checkpoints may be in and
prefer files of runs that are not alive (their lock is free): a run that crashed
while another one trains in the same root resumes its own file. Candidates are
read lazily (``mmap``) for their counters, then verified (zip CRCs) from the
newest down; a file that fails verification never wins.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _fs
from .._warn import user_stacklevel
from ..checkpoint._io import CheckpointError, safe_load
from ._rundir import checkpoint_names, is_live

__all__ = ["describe", "find_checkpoint", "newest_checkpoint"]


def _loop(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    loop = payload.get("loop")
    return loop if isinstance(loop, Mapping) else {}


def _rank_key(path: str) -> tuple[bool, int, int, float] | None:
    try:
        payload = safe_load(path, mmap=True)
    except CheckpointError:
        return None  # an unreadable file never wins
    info = payload.get("checkpoint_info") or {}
    counters = payload.get("counters") or {}
    finished = not is_live(os.path.dirname(path), _loop(payload).get("run_id"))
    # Batches consumed break ties between files of one optimizer step (a validation
    # inside an accumulation window saves after the step's own checkpoint).
    return (
        finished,
        int(info.get("step", counters.get("step", -1))),
        int(counters.get("micro_step", -1)),
        _fs.mtime(path),
    )


def newest_checkpoint(dirs: Sequence[str]) -> str | None:
    """The newest verified checkpoint in ``dirs``, preferring runs no longer alive.

    Warns when every candidate belongs to a run that is still going.
    """
    keyed = []
    for d in dirs:
        for name in checkpoint_names(d):
            path = _fs.join(d, name)
            key = _rank_key(path)
            if key is not None:
                keyed.append((key, path))
    keyed.sort(reverse=True)
    for key, path in keyed:
        try:
            safe_load(path, verify=True, mmap=True)
        except CheckpointError as err:
            warnings.warn(f"skipping {path!r}: {err}", RuntimeWarning, stacklevel=user_stacklevel())
            continue
        if not key[0]:
            warnings.warn(
                f"resuming from {path!r}, written by a run that is still running "
                "(every checkpoint found belongs to a live run)",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return path
    return None


def _folder_checkpoint(folder: str, ckpt_path: str) -> str:
    sub = _fs.join(folder, "checkpoints")
    path = newest_checkpoint([sub] if _fs.isdir(sub) else [folder])
    if path is None:
        raise CheckpointError(
            f"fit: ckpt_path {ckpt_path!r} is a directory with no checkpoint (*.ckpt) files; "
            "name a file, a run folder holding checkpoints/, 'last' or 'best'"
        )
    return path


def find_checkpoint(
    ckpt_path: str, dirs: Sequence[str], policies: Sequence[Any], version_base: str | None
) -> str | None:
    """The file ``ckpt_path`` names, or None for "last" when there is none (warns).

    Args:
        ckpt_path: "last", "best", a logger version folder name (``"version_3"``), a
            run folder, or a file; folders and files may be fsspec URLs.
        dirs: the folders "last" and "best" search.
        policies: the run's policies ("best" asks them which file is best).
        version_base: ``save_dir/name`` of the first logger, where versions live.

    Raises:
        ValueError: "best" with no best checkpoint.
        CheckpointError: a folder without checkpoints.
        FileNotFoundError: nothing of that name exists.
    """
    if _fs.is_url(ckpt_path):
        _fs.check_url(ckpt_path, "fit: ckpt_path")
    if ckpt_path == "last":
        path = newest_checkpoint(dirs)
        if path is None:
            warnings.warn(
                "fit(ckpt_path='last'): no checkpoint found; starting from scratch",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return path
    if ckpt_path == "best":
        newest = newest_checkpoint(dirs)
        if newest is not None:
            saved = safe_load(newest).get("policies") or []
            for policy, pstate in zip(policies, saved, strict=False):
                name = policy.best(pstate)
                if name is not None:
                    return _fs.join(os.path.dirname(newest), name)
        raise ValueError(
            "fit(ckpt_path='best'): there is no best checkpoint in "
            + (", ".join(dirs) or "any checkpoint directory")
        )
    if _fs.isdir(ckpt_path):
        return _folder_checkpoint(ckpt_path, ckpt_path)
    if version_base is not None and os.sep not in ckpt_path and not _fs.is_url(ckpt_path):
        folder = _fs.join(version_base, ckpt_path)
        if _fs.isdir(folder):
            return _folder_checkpoint(folder, ckpt_path)
    if not _fs.exists(ckpt_path):
        raise FileNotFoundError(f"fit: ckpt_path {ckpt_path!r} does not exist")
    return ckpt_path


def describe(path: str, payload: Mapping[str, Any]) -> str:
    """The line ``fit`` prints on resume: ``Resuming from <path> (version 1, epoch 2, step 40)``."""
    loop = _loop(payload)
    info = payload.get("checkpoint_info") or {}
    counters = payload.get("counters") or {}
    parts = []
    versions = loop.get("logger_versions") or []
    if versions:
        parts.append(f"version {versions[0]}")
    elif loop.get("run_id"):
        parts.append(f"run {loop['run_id']}")
    parts.append(f"epoch {info.get('epoch', counters.get('epoch'))}")
    parts.append(f"step {info.get('step', counters.get('step'))}")
    return f"Resuming from {path} ({', '.join(parts)})"
