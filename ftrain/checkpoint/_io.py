"""Checkpoint files: atomic writes and safe reads.

A checkpoint is a dict written with ``torch.save``. It appears under its final
name only when complete: the bytes go to a hidden temp file in the same folder
(``.<name>.<random>.tmp``), are flushed and fsynced, then ``os.replace`` renames
the temp file over the target and the folder is fsynced. A crash at any point
leaves either the old file or the new one, never a partial file; stray temp files
are removed by :func:`clean_temp_files`.

Reading always uses ``torch.load(weights_only=True)``: a file holding anything
other than tensors, numbers, strings and containers is refused before any of its
code can run. Every reading failure is a :class:`CheckpointError` naming the file.

A URL path (``s3://``, ``memory://``, any fsspec URL) goes through ``ftrain._fs``:
the file is serialized in memory and written whole (one put on object stores, a
temp name then a move elsewhere) and read back into memory (``mmap`` does not apply).

Each file carries ``"ftrain_format"`` (:data:`FORMAT_VERSION`) and, when the
driver writes it for a policy, ``"checkpoint_info"``
(:meth:`CheckpointInfo.to_dict`), which :func:`list_checkpoints` reads back for
``policy.recover``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import re
import uuid
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from .. import _fs
from .._warn import user_stacklevel
from ._events import CheckpointInfo
from ._payload import UnloadableValueError, check_payload

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_save",
    "atomic_write_obj",
    "clean_temp_files",
    "link_checkpoint",
    "list_checkpoints",
    "safe_load",
    "verify_zip",
]

FORMAT_VERSION = 1
"""Version of the checkpoint layout this ftrain writes and reads (or older)."""

_TMP_SUFFIX = ".tmp"
_EXT = ".ckpt"


class CheckpointError(Exception):
    """A checkpoint file is missing, corrupt, unsafe or not ftrain's; the message names it."""


def _check_dir(dirpath: str) -> None:
    """Refuse a folder path that is, or is under, an existing file."""
    probe = dirpath
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe and not os.path.isdir(probe):
        raise NotADirectoryError(
            f"checkpoint directory {dirpath!r} cannot be created: {probe!r} is a file"
        )


def _fsync_dir(dirpath: str) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(dirpath, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what it was raised from) is a full disk or quota."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    # torch's zip writer reports a short write without the OSError behind it.
    return "unexpected pos" in str(err) and isinstance(err, RuntimeError)


def _write_temp(obj: Any, tmp: str) -> None:
    with open(tmp, "xb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _commit(tmp: str, target: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; without ``overwrite``, fail if ``target`` exists.

    Raises:
        FileExistsError: ``overwrite`` is False and ``target`` exists (a file another
            run wrote under that name meanwhile); ``tmp`` is left for the caller.
    """
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        # A hard link never replaces a file: the check and the rename are one step.
        # (Of a symbolic link, the link itself: no following.)
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except (OSError, NotImplementedError):
        # No hard links on this filesystem: check, then rename (a tiny window).
        if os.path.exists(target):
            raise FileExistsError(errno.EEXIST, "file exists", target) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def atomic_write_obj(obj: Any, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write any object with ``torch.save`` atomically (temp file, fsync, rename).

    :func:`atomic_save` is this for checkpoints; use this for other artefacts
    (e.g. saved predictions). Same guarantees and errors as :func:`atomic_save`.
    """
    if _fs.is_url(os.fspath(path)):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        _fs.write_bytes(os.fspath(path), buffer.getvalue(), overwrite=overwrite)
        return
    target = os.path.abspath(os.fspath(path))
    dirpath = os.path.dirname(target)
    _check_dir(dirpath)
    os.makedirs(dirpath, exist_ok=True)
    tmp = os.path.join(dirpath, f".{os.path.basename(target)}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    try:
        _write_temp(obj, tmp)
        _commit(tmp, target, overwrite)
    except BaseException as err:
        # Also on KeyboardInterrupt: the target is still the old file.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, Exception) and _disk_full(err):
            raise CheckpointError(
                f"cannot write {target!r}: no space left on device (the previous files "
                "are intact; free some space or choose another dirpath)"
            ) from err
        raise
    _fsync_dir(dirpath)


def atomic_save(
    obj: Mapping[str, Any], path: str | os.PathLike[str], *, overwrite: bool = True
) -> None:
    """Write ``obj`` with ``torch.save`` so that ``path`` is never seen half-written.

    Adds ``"ftrain_format": FORMAT_VERSION`` unless ``obj`` has that key; ``obj``
    itself is not changed. Creates the folder if needed. Before writing, checks that
    :func:`safe_load` will be able to read every value back.

    Args:
        obj: the payload; tensors, numbers, strings, None and containers only.
        path: the target file, or an fsspec URL (``s3://bucket/run/a.ckpt``);
            replaced if it exists (see ``overwrite``).
        overwrite: False to never replace an existing file (``FileExistsError``).

    Raises:
        CheckpointError: a value ``torch.load(weights_only=True)`` would refuse (the
            message names its key path and type), or the disk is full ("no space left
            on device"); nothing is written and the old file is intact.
        NotADirectoryError: the folder path is, or is under, an existing file.
        FileExistsError: ``overwrite=False`` and ``path`` exists.
        Exception: whatever writing raised; the old file is then untouched and no
            temp file remains.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> atomic_save({"step": 3}, os.path.join(d, "a.ckpt"))
        >>> safe_load(os.path.join(d, "a.ckpt"))["step"]
        3
    """
    payload = dict(obj)
    payload.setdefault("ftrain_format", FORMAT_VERSION)
    try:
        check_payload(payload)
    except UnloadableValueError as err:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} not written: {err}") from None
    atomic_write_obj(payload, path, overwrite=overwrite)


def link_checkpoint(
    target: str | os.PathLike[str], path: str | os.PathLike[str], *, overwrite: bool = True
) -> bool:
    """Make ``path`` a symbolic link to ``target`` (a file in the same folder), atomically.

    The link is made under a temp name and renamed over ``path``, so ``path`` is
    always the old file or the new link. The link is relative (``last.ckpt ->
    epoch=1-step=8.ckpt``): the folder can be moved or copied as a whole.

    Args:
        target: the checkpoint linked to.
        path: the link.
        overwrite: False to never replace an existing file (``FileExistsError``).

    Returns:
        True if the link exists now; False where the platform or file system cannot
        make links, and for URLs (the caller then writes a full file).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> atomic_save({"step": 3}, os.path.join(d, "a.ckpt"))
        >>> link_checkpoint(os.path.join(d, "a.ckpt"), os.path.join(d, "last.ckpt"))
        True
        >>> os.readlink(os.path.join(d, "last.ckpt")), safe_load(os.path.join(d, "last.ckpt"))["step"]
        ('a.ckpt', 3)
    """
    if _fs.is_url(os.fspath(path)):
        return False  # object stores have no links
    target, link = os.path.abspath(os.fspath(target)), os.path.abspath(os.fspath(path))
    dirpath = os.path.dirname(link)
    if os.path.dirname(target) != dirpath:
        raise ValueError(f"link_checkpoint: {target!r} is not in the folder of {link!r}")
    tmp = os.path.join(dirpath, f".{os.path.basename(link)}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    try:
        os.symlink(os.path.basename(target), tmp)
    except (OSError, NotImplementedError):
        return False  # e.g. Windows without the privilege, a file system without links
    try:
        _commit(tmp, link, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dirpath)
    return True


def _weights_only_reason(err: BaseException) -> str:
    text = str(err)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return f"it holds a {blocked.group(1)}, a global the safe loader does not allow"
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0].strip()
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


# ``torch.save(..., _use_new_zipfile_serialization=False)``: a pickle whose first
# value is torch's legacy magic number.
_LEGACY_HEAD = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _not_zip_reason(source: str | io.BytesIO) -> str:
    if isinstance(source, io.BytesIO):
        head = source.getvalue()[: len(_LEGACY_HEAD)]
    else:
        with open(source, "rb") as f:
            head = f.read(len(_LEGACY_HEAD))
    if head == _LEGACY_HEAD:
        return (
            "is in torch's legacy (pre-1.6, non-zip) format, which ftrain does not read; "
            "convert it with torch.save(torch.load(path, weights_only=True), path) once"
        )
    return "is corrupt or truncated (not a complete torch zip file)"


def verify_zip(path: str | os.PathLike[str]) -> None:
    """Check every record's CRC in a checkpoint's zip (reads the whole file).

    Raises:
        CheckpointError: a record whose bytes changed since it was written (a flipped
            bit in tensor data), naming the file and the record.
    """
    name = os.fspath(path)
    _verify(_url_source(name) if _fs.is_url(name) else name, name)


def _verify(source: str | io.BytesIO, name: str) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {name!r} is corrupt ({err})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {name!r} is corrupt: record {bad!r} fails its CRC check")


def safe_load(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    verify: bool = False,
    mmap: bool = False,
) -> dict[str, Any]:
    """Load an ftrain checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the file, or an fsspec URL (read whole into memory).
        map_location: passed to ``torch.load``.
        verify: first check the CRC of every record (reads the file once more).
        mmap: map tensors from the file instead of reading them (cheap metadata peeks);
            ignored for a URL, which is read whole.

    Returns:
        The payload dict.

    Raises:
        CheckpointError: the file is missing, a directory, corrupt or truncated (or
            fails ``verify``), in torch's legacy format, holds objects that are not
            plain tensors/containers (refused for safety, none of its code runs; the
            blocked global is named), is not an ftrain checkpoint, or was written by a
            newer ftrain.
    """
    name = os.fspath(path)
    source: str | io.BytesIO = name
    if _fs.is_url(name):
        source, mmap = _url_source(name), False
    elif os.path.isdir(name):
        raise CheckpointError(
            f"checkpoint {name!r} is a directory; name a checkpoint file inside it"
        )
    elif not os.path.isfile(name):
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    # ftrain writes only the zip format; anything else (a cut-off file, random
    # bytes) would send torch into its legacy pickle reader with murkier errors.
    if not zipfile.is_zipfile(source):
        raise CheckpointError(f"checkpoint {name!r} {_not_zip_reason(source)}")
    if verify:
        _verify(source, name)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {name!r} contains objects that are not plain tensors/containers "
            f"and was refused for safety ({_weights_only_reason(err)}; none of its code "
            "ran); load it with torch.load(weights_only=False) only if you trust where it "
            "came from"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {name!r} is corrupt or truncated ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        ) from None
    if not isinstance(payload, dict) or "ftrain_format" not in payload:
        raise CheckpointError(f"checkpoint {name!r} is not an ftrain checkpoint (no ftrain_format)")
    version = payload["ftrain_format"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"checkpoint {name!r} is not an ftrain checkpoint (ftrain_format={version!r})"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name!r} was written by a newer ftrain (format {version}), "
            f"this is format {FORMAT_VERSION}; upgrade ftrain to load it"
        )
    return payload


def _url_source(name: str) -> io.BytesIO:
    """The bytes of the checkpoint at URL ``name``, in memory."""
    try:
        return io.BytesIO(_fs.read_bytes(name))
    except (FileNotFoundError, IsADirectoryError):
        if _fs.isdir(name):
            raise CheckpointError(
                f"checkpoint {name!r} is a directory; name a checkpoint file inside it"
            ) from None
        raise CheckpointError(f"checkpoint {name!r} does not exist") from None


def clean_temp_files(dirpath: str | os.PathLike[str]) -> list[str]:
    """Remove temp files left by interrupted :func:`atomic_save` calls, and
    checkpoint links whose target is gone.

    Args:
        dirpath: the checkpoint folder; a missing folder has none.

    Returns:
        The paths removed, sorted.
    """
    folder = os.fspath(dirpath)
    if _fs.is_url(folder):
        return _clean_url_temp_files(folder)
    if not os.path.isdir(folder):
        return []
    removed = []
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        stale_tmp = entry.startswith(".") and entry.endswith(_TMP_SUFFIX)
        dangling = os.path.islink(full) and not os.path.exists(full)
        if (stale_tmp and (os.path.isfile(full) or dangling)) or (
            entry.endswith(_EXT) and dangling
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
                removed.append(full)
    return removed


def _clean_url_temp_files(folder: str) -> list[str]:
    stale = [
        _fs.join(folder, name)
        for name, is_dir in _fs.entries(folder)
        if not is_dir and name.startswith(".") and name.endswith(_TMP_SUFFIX)
    ]
    for url in stale:
        _fs.remove(url)
    return stale


def _checkpoint_files(folder: str) -> list[tuple[str, str, bool]]:
    """``(name, path, is_link)`` of the ``*.ckpt`` files of a folder (a URL or local)."""
    if _fs.is_url(folder):
        return [
            (name, _fs.join(folder, name), False)
            for name, is_dir in _fs.entries(folder)
            if not is_dir and not name.startswith(".") and name.endswith(_EXT)
        ]
    if not os.path.isdir(folder):
        return []
    found = []
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        if entry.startswith(".") or not entry.endswith(_EXT) or not os.path.isfile(full):
            continue
        found.append((entry, full, os.path.islink(full)))
    return found


def list_checkpoints(dirpath: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Read the metadata of every committed ``*.ckpt`` file in a folder.

    Loads each file in full (with :func:`safe_load`); a file that cannot be read or
    has no ``"checkpoint_info"`` is skipped with a warning. The returned names are
    the files' actual names, even if a file was renamed after it was written. A
    symbolic link (``save_last="link"``) is of kind ``"last"``, with its target's
    step and metrics.

    Args:
        dirpath: the checkpoint folder (a local path or a URL); a missing folder
            has none.

    Returns:
        Infos sorted by file name, ready for ``policy.recover``.
    """
    infos = []
    for entry, full, is_link in _checkpoint_files(os.fspath(dirpath)):
        try:
            raw = safe_load(full)["checkpoint_info"]
            info = CheckpointInfo.from_dict(raw)
        except (CheckpointError, KeyError, ValueError, TypeError, AttributeError) as err:
            warnings.warn(
                f"skipping checkpoint {full!r}: {err}", UserWarning, stacklevel=user_stacklevel()
            )
            continue
        if is_link:
            info = attrs.evolve(info, kind="last")
        infos.append(attrs.evolve(info, name=entry))
    return infos
