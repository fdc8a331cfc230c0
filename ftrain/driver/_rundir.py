"""A run's own place on disk: claimed folders, a lock held while it lives, no clobbering.

Runs started together in one ``default_root_dir`` never share a file: a logger
claims its ``version_N`` folder with ``os.mkdir`` (see ``loggers.claim_version``),
and each run holds an advisory lock file ``.ftrain-run-<id>.lock`` in every
checkpoint folder it writes, so a resume can tell a crashed run's files from those
of a run that is still going. A fresh run treats every file already in a folder as
foreign: its own files get ``-v1`` names beside them, and it never replaces or
deletes them. Locks use ``fcntl.flock`` (released by the kernel when the process
dies); where there is no ``fcntl`` (Windows) every run counts as finished.

A new checkpoint name is reserved when the run decides to save it, before the file
is written (in the background, by default): a hidden marker
``.<name>.reserved`` holding the run's id, created under a lock on the folder, tells
other runs the name is taken until the file commits and the marker goes. A marker
whose run died (kill -9 between decision and commit) is reclaimed by the next run that
wants the name, so it never blocks a name nor shows up as a checkpoint.

A URL folder (``s3://``, ``memory://``: ``ftrain._fs``) has no locks nor
reservations: object stores cannot lock or create a file only if absent, so there
every run counts as finished, and names are versioned against what a listing shows
(no guard against a run that starts at the same moment in the same folder).
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .. import _fs
from .._warn import user_stacklevel
from ..checkpoint._io import CheckpointError, safe_load

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "NameTaken",
    "RunClaim",
    "check_root",
    "checkpoint_names",
    "claim_dirs",
    "drop_stale_reservations",
    "fresh_policy_state",
    "is_live",
    "lineage_of",
    "lock_name",
    "others_alive",
    "owned_names",
    "release_name",
    "reservation_marker",
    "reserve_name",
    "split_by_lineage",
    "with_foreign",
    "writable_dir",
]

_LOCK_PREFIX = ".ftrain-run-"
_LOCK_SUFFIX = ".lock"
_EXT = ".ckpt"
_RESERVED = ".reserved"


class NameTaken(Exception):
    """A checkpoint name the policy chose was created on disk by another run meanwhile."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def lock_name(run_id: str) -> str:
    """The lock file's name of run ``run_id`` inside a checkpoint folder."""
    return f"{_LOCK_PREFIX}{run_id}{_LOCK_SUFFIX}"


def writable_dir(path: str, flag: str) -> None:
    """Create ``path`` if needed and check that files can be created in it.

    Raises:
        ValueError: the path is a file, or is under one; or it cannot be created or
            written; the message names ``flag`` (the argument that chose the path).
        ImportError: a URL whose file system is not installed (see ``_fs.check_url``).
    """
    if _fs.is_url(path):
        _fs.writable(path, flag)
        return
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{flag}: {path!r} is not a directory (a file is in the way)") from None
    except OSError as err:
        raise ValueError(f"{flag}: cannot create {path!r} ({err.strerror})") from None
    if not os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is not a directory")
    probe = os.path.join(path, f".ftrain-probe-{uuid.uuid4().hex[:12]}")
    try:
        with open(probe, "xb"):
            pass
    except OSError as err:
        raise ValueError(f"{flag}: cannot write into {path!r} ({err.strerror})") from None
    os.unlink(probe)


def is_live(dirpath: str, run_id: object) -> bool:
    """Whether the run ``run_id`` still holds its lock in ``dirpath`` (it is running).

    A lock file left by a run that died is removed on the way.
    """
    if fcntl is None or not isinstance(run_id, str) or not run_id or _fs.is_url(dirpath):
        return False
    path = os.path.join(dirpath, lock_name(run_id))
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        # Its run is gone, and run ids are never reused: nobody can want this file.
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False
    finally:
        os.close(fd)


class RunClaim:
    """The locks one ``fit`` run holds, one per checkpoint folder, until :meth:`release`.

    Args:
        run_id: the run's id (stored in its checkpoints); a fresh one by default.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self._held: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, _close_all, self._held)

    def hold(self, dirpath: str, flag: str) -> None:
        """Create ``dirpath`` (checked writable) and hold this run's lock in it.

        Raises:
            ValueError: the folder cannot be created or written (names ``flag``).
        """
        writable_dir(dirpath, flag)
        if fcntl is None or dirpath in self._held or _fs.is_url(dirpath):
            return
        path = os.path.join(dirpath, lock_name(self.run_id))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[dirpath] = fd

    def release(self) -> None:
        """Drop every lock and remove the lock files; idempotent."""
        for dirpath in list(self._held):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirpath, lock_name(self.run_id)))
        _close_all(self._held)


def _close_all(held: dict[str, int]) -> None:
    for fd in held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    held.clear()


def checkpoint_names(dirpath: str) -> list[str]:
    """The committed checkpoint files of a folder (no temp or hidden files)."""
    if _fs.is_url(dirpath):
        return [
            name
            for name, is_dir in _fs.entries(dirpath)
            if not is_dir and name.endswith(_EXT) and not name.startswith(".")
        ]
    try:
        entries = os.listdir(dirpath)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        e
        for e in entries
        if e.endswith(_EXT)
        and not e.startswith(".")
        and os.path.exists(os.path.join(dirpath, e))  # not a link whose target is gone
    )


def fresh_policy_state(policy: Any, dirpath: str, *, warn: bool = True) -> dict[str, Any]:
    """The state of a fresh run's policy: every file already in ``dirpath`` is foreign.

    Foreign files are never replaced or deleted; the policy versions its own names
    against them (``last-v1.ckpt``). Warns (if ``warn``) when the folder holds checkpoints.
    """
    existing = checkpoint_names(dirpath)
    if existing and warn:
        warnings.warn(
            f"checkpoint folder {dirpath!r} is not empty ({len(existing)} checkpoint files); "
            "this run keeps them and names its own files beside them (-v1, -v2, ...)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return policy.recover(None, [], existing=existing)  # type: ignore[no-any-return]


def with_foreign(pstate: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``pstate`` with ``names`` added to the files the policy must not touch."""
    return {**pstate, "foreign": sorted(set(pstate.get("foreign", [])) | set(names))}


def owned_names(pstate: Mapping[str, Any]) -> set[str]:
    """The file names a policy state owns (it may replace or delete them)."""
    return {f["name"] for part in pstate.get("parts", []) for f in part.get("files", [])}


def check_root(root: str, loggers: Iterable[Any], policies: Iterable[Any]) -> None:
    """Check ``default_root_dir`` before training when a logger or a policy writes there.

    Raises:
        ValueError: it is a file, or cannot be created or written (names the flag).
    """
    uses_root = any(getattr(p, "dirpath", None) is None for p in policies) or any(
        _same_folder(os.fspath(getattr(lg, "save_dir", "") or ""), root) for lg in loggers
    )
    if uses_root:
        writable_dir(root, "default_root_dir")


def _same_folder(a: str, b: str) -> bool:
    if _fs.is_url(a) or _fs.is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(a) == os.path.abspath(b)


def claim_dirs(
    claim: RunClaim, policies: Iterable[Any], dirs: Iterable[str], *, hold: bool
) -> None:
    """Check every checkpoint folder writable and hold the run's lock in it (if ``hold``).

    Raises:
        ValueError: a folder cannot be created or written; names the policy's
            ``dirpath`` or ``default_root_dir``, whichever chose it.
    """
    if not hold:
        return
    for policy, dirpath in zip(policies, dirs, strict=True):
        flag = "default_root_dir" if policy.dirpath is None else "checkpoint dirpath"
        claim.hold(dirpath, flag)


def lineage_of(payload: Mapping[str, Any]) -> list[str]:
    """The run ids of a checkpoint's chain of runs (each resume adds one)."""
    loop = payload.get("loop")
    if not isinstance(loop, Mapping):
        return []
    lineage = loop.get("lineage")
    if isinstance(lineage, list):
        return [str(x) for x in lineage]
    run_id = loop.get("run_id")
    return [str(run_id)] if run_id else []


def split_by_lineage(
    dirpath: str, infos: list[Any], lineage: list[str]
) -> tuple[list[Any], list[str]]:
    """Split a folder's checkpoint infos into this chain of runs' and the others' names.

    A resumed run adopts only files written by its own chain (its policies may then
    replace or delete them); files of other runs sharing the folder stay foreign.
    Files without a run id (older ftrain) count as the chain's.
    """
    if not lineage:
        return infos, []
    own, foreign = [], []
    for info in infos:
        try:
            payload = safe_load(os.path.join(dirpath, info.name), mmap=True)
        except CheckpointError:
            foreign.append(info.name)
            continue
        ids = lineage_of(payload)
        if not ids or ids[-1] in lineage:
            own.append(info)
        else:
            foreign.append(info.name)
    return own, foreign


def others_alive(dirpath: str, run_id: str) -> bool:
    """Whether a run other than ``run_id`` holds its lock in ``dirpath`` now."""
    if _fs.is_url(dirpath):
        return False  # no locks on URL folders
    try:
        entries = os.listdir(dirpath)
    except OSError:
        return False
    ids = [
        e[len(_LOCK_PREFIX) : -len(_LOCK_SUFFIX)]
        for e in entries
        if e.startswith(_LOCK_PREFIX) and e.endswith(_LOCK_SUFFIX)
    ]
    return any(is_live(dirpath, other) for other in ids if other != run_id)


def reservation_marker(path: str) -> str:
    """The hidden marker that reserves the new checkpoint file ``path``."""
    dirpath, name = os.path.split(path)
    return os.path.join(dirpath, f".{name}{_RESERVED}")


@contextlib.contextmanager
def _names_locked(dirpath: str) -> Iterator[None]:
    """Hold the folder's lock on reservations (``flock`` on the folder itself)."""
    if fcntl is None:
        yield
        return
    fd = os.open(dirpath, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _owner(marker: str) -> str | None:
    try:
        with open(marker, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def reserve_name(path: str, run_id: str) -> str | None:
    """Reserve the new checkpoint file ``path`` for run ``run_id`` until it commits.

    Other runs' :func:`reserve_name` then refuse the name, so a write that commits
    later (in the background) finds it free. A marker left by a run that is gone is
    reclaimed, and so is a link whose target is gone when no other run is alive.
    Release the reservation with :func:`release_name` once the file is
    committed (after it exists, so that the name is never free in between) or the
    save is dropped.

    Returns:
        The marker's path; None for a URL (no reservations: only checked absent).

    Raises:
        NameTaken: ``path`` exists, or a live run (or this one) has reserved it.
    """
    if _fs.is_url(path):
        if _fs.exists(path):
            raise NameTaken(path.rsplit("/", 1)[-1])
        return None
    dirpath, name = os.path.split(path)
    marker = reservation_marker(path)
    with _names_locked(dirpath):
        owner = _owner(marker)
        if owner is not None:
            # An empty marker: its run died while writing it (writes hold the lock).
            if owner == run_id or (owner and is_live(dirpath, owner)):
                raise NameTaken(name)
            os.unlink(marker)  # its run died between deciding and committing the file
        if os.path.lexists(path):
            # A link whose target is gone is debris (never resumed from), unless a
            # live run might still own it.
            if os.path.exists(path) or others_alive(dirpath, run_id):
                raise NameTaken(name)
            os.unlink(path)
        with open(marker, "x", encoding="utf-8") as f:
            f.write(run_id)
    return marker


def release_name(marker: str | None) -> None:
    """Drop a reservation made by :func:`reserve_name` (a no-op if it is gone)."""
    if marker is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)


def drop_stale_reservations(dirpath: str) -> list[str]:
    """Remove the reservation markers of runs that are gone; returns their paths."""
    if _fs.is_url(dirpath):
        return []
    try:
        entries = sorted(os.listdir(dirpath))
    except OSError:
        return []
    removed = []
    with _names_locked(dirpath):
        for entry in entries:
            if not (entry.startswith(".") and entry.endswith(_RESERVED)):
                continue
            marker = os.path.join(dirpath, entry)
            owner = _owner(marker)
            if owner is not None and not (owner and is_live(dirpath, owner)):
                release_name(marker)
                removed.append(marker)
    return removed
