"""URL paths (``s3://``, ``gs://``, ``memory://``, ``file://``, ...) through fsspec.

Local paths keep their own code everywhere: callers test :func:`is_url` and only URLs
come here, so a local run does exactly what it did before (locks, hard links, fsync,
rename). A URL goes to the fsspec file system of its protocol, imported on first use
(the ``fsspec`` extra; S3 also needs ``s3fs``, GCS ``gcsfs``). Credentials and
endpoints come from fsspec's configuration (``fsspec.config.conf[protocol]``, or
variables such as ``FSSPEC_S3_ENDPOINT_URL`` read when fsspec is imported) and the
backend's own (``AWS_ACCESS_KEY_ID``...).

A whole file is written atomically where the backend allows it: on object stores
(S3, GCS, Azure, ``memory://``) with one put of the whole object, which readers see
complete or not at all; on other file systems under a hidden temp name, then moved
over the target. Object stores have no atomic "create if absent": a write that must
not replace a file checks first (a small window) and there are no run locks.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import posixpath
import re
import uuid
from typing import Any, TypeGuard

__all__ = [
    "INSTALL_HINT",
    "check_url",
    "entries",
    "exists",
    "get_file",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "makedirs",
    "mtime",
    "put_file",
    "read_bytes",
    "remove",
    "writable",
    "write_bytes",
]

INSTALL_HINT = "pip install 'torch-ftrain[fsspec]'"

# ``proto://`` or fsspec's chained ``cache::proto://``; two letters at least, so a
# Windows drive (``C:/``) is never taken for a protocol.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+(?:::[A-Za-z][A-Za-z0-9+.-]+)*://")

# Object stores: a put of a whole object is atomic, and (but for memory://, which
# keeps pseudo-folders) there are no folders to make.
_WHOLE_PUT = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"}
)
_NO_FOLDERS = _WHOLE_PUT - {"memory"}
_TMP_SUFFIX = ".tmp"


def is_url(path: object) -> TypeGuard[str]:
    """Whether ``path`` is a string naming a URL (``proto://...``) rather than a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def _fsspec(url: str, flag: str) -> Any:
    try:
        return importlib.import_module("fsspec")
    except ImportError:
        raise ImportError(
            f"{flag}={url!r} is a URL; reading and writing URLs needs fsspec: {INSTALL_HINT}"
        ) from None


def check_url(url: str, flag: str) -> None:
    """Check that fsspec can resolve ``url``'s protocol(s) (imports, connects to nothing).

    Raises:
        ImportError: fsspec, or the package of the protocol's file system (``s3fs``
            for ``s3://``), is not installed; names ``flag`` and what to install.
        ValueError: fsspec does not know the protocol; names ``flag``.
    """
    fsspec = _fsspec(url, flag)
    for protocol in url.split("://", 1)[0].split("::"):
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise ValueError(
                f"{flag}={url!r}: fsspec cannot resolve the protocol {protocol!r} "
                "(fsspec.available_protocols() lists the known ones); use a local path "
                "or a URL such as 's3://bucket/run'"
            ) from None
        except ImportError as err:
            raise ImportError(
                f"{flag}={url!r}: the {protocol!r} file system needs a package that is "
                f"not installed ({err})"
            ) from None


def _resolve(url: str) -> tuple[Any, str]:
    try:
        fs, path = _fsspec(url, "path").core.url_to_fs(url)
    except (ValueError, ImportError):
        check_url(url, "path")  # the clear message, when the protocol is the cause
        raise
    return fs, path


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _whole_put(fs: Any) -> bool:
    return bool(_protocols(fs) & _WHOLE_PUT)


def join(path: str, *names: str) -> str:
    """``path`` with ``names`` appended: ``/``-separated for a URL on every platform,
    ``os.path.join`` for a local path."""
    return posixpath.join(path, *names) if is_url(path) else os.path.join(path, *names)


def read_bytes(url: str) -> bytes:
    """The whole content of the file at ``url``.

    Raises:
        FileNotFoundError: there is no such file.
    """
    fs, path = _resolve(url)
    return bytes(fs.cat_file(path))


def write_bytes(url: str, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` as the file ``url``, never leaving a partial file under that name.

    Args:
        url: the target.
        data: the whole content.
        overwrite: False to refuse an existing file (checked just before writing:
            object stores cannot create only-if-absent in one step).

    Raises:
        FileExistsError: ``overwrite`` is False and the file exists.
    """
    fs, path = _resolve(url)
    if not overwrite and fs.exists(path):
        raise FileExistsError(errno.EEXIST, "file exists", url)
    if _whole_put(fs):
        fs.pipe_file(path, data)
        return
    parent, name = posixpath.split(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm_file(tmp)
        raise


def put_file(local: str, url: str) -> None:
    """Upload the local file ``local`` as ``url`` (one put on object stores)."""
    fs, path = _resolve(url)
    if not _protocols(fs) & _NO_FOLDERS:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.put_file(local, path)


def get_file(url: str, local: str) -> bool:
    """Download ``url`` to the local file ``local``; False if ``url`` does not exist."""
    fs, path = _resolve(url)
    try:
        fs.get_file(path, local)
    except FileNotFoundError:
        return False
    return True


def entries(url: str) -> list[tuple[str, bool]]:
    """``(name, is_folder)`` of each entry of the folder ``url``, sorted; [] if it has none."""
    fs, path = _resolve(url)
    fs.invalidate_cache(path)  # another process may have written since the last listing
    try:
        found = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    own = path.rstrip("/")
    out = []
    for entry in found:
        name = str(entry["name"]).rstrip("/")
        if name != own:  # listing a file names the file itself
            out.append((posixpath.basename(name), entry.get("type") == "directory"))
    return sorted(out)


def listdir(path: str) -> list[str]:
    """The names in the folder ``path`` (a URL or a local path), sorted; [] if it is missing."""
    if not is_url(path):
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
    return [name for name, _ in entries(path)]


def exists(path: str) -> bool:
    """Whether ``path`` (a URL or a local path, a file or a folder) exists."""
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _resolve(path)
    return bool(fs.exists(p))


def isdir(path: str) -> bool:
    """Whether ``path`` is a folder; on object stores: whether anything is under it."""
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _resolve(path)
    return bool(fs.isdir(p))


def isfile(path: str) -> bool:
    """Whether ``path`` (a URL or a local path) is a file."""
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = _resolve(path)
    return bool(fs.isfile(p))


def remove(path: str) -> None:
    """Delete the file ``path`` (a URL or a local path); a missing file is no error."""
    if not is_url(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    fs, p = _resolve(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)


def makedirs(url: str) -> None:
    """Create the folder ``url`` and its parents (nothing to do on object stores)."""
    fs, path = _resolve(url)
    if not _protocols(fs) & _NO_FOLDERS:
        fs.makedirs(path, exist_ok=True)


def mtime(path: str) -> float:
    """Modification time of a file in seconds since the epoch; 0.0 where a store has none."""
    if not is_url(path):
        return os.path.getmtime(path)
    fs, p = _resolve(path)
    try:
        return float(fs.modified(p).timestamp())
    except (NotImplementedError, KeyError, AttributeError, OSError, ValueError):
        return 0.0


def writable(url: str, flag: str) -> None:
    """Check that files can be written under the folder ``url`` (writes and deletes a probe).

    Raises:
        ImportError, ValueError: as :func:`check_url`.
        ValueError: ``url`` is a file, or writing fails (no such bucket, no
            permission...); the message names ``flag``.
    """
    check_url(url, flag)
    fs, path = _resolve(url)
    try:
        if fs.isfile(path):
            raise ValueError(f"{flag}: {url!r} is a file, not a folder")
        makedirs(url)
        probe = posixpath.join(path, f".ftrain-probe-{uuid.uuid4().hex[:12]}")
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except (OSError, RuntimeError) as err:
        raise ValueError(
            f"{flag}: cannot write into {url!r} ({type(err).__name__}: {err})"
        ) from None
