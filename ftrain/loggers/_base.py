"""The ``Logger`` protocol, versioned log directories, and the ``logger=`` argument.

A logger receives hyperparameters once and metrics at log points, as plain
Python floats, and only on rank 0: the driver does the conversion and the rank
check, so a logger is a small piece of file I/O. TensorBoard and CSV loggers
share the directory layout of Lightning: ``save_dir/name/version_N``.

A ``save_dir`` that is a URL (``s3://bucket/runs``, any fsspec URL) is written
through a local staging folder: the logger writes its files there as it would
locally, and uploads each changed file whole at ``flush`` (the driver flushes before
every checkpoint), at ``finalize`` and at most every :data:`UPLOAD_EVERY_S` seconds
at log points. Object stores cannot append, and a whole-object put is atomic, so a
reader never sees a half-written file.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .. import _fs

__all__ = [
    "UPLOAD_EVERY_S",
    "Logger",
    "VersionedLogger",
    "claim_version",
    "flatten_params",
    "next_version",
    "save_hparams_json",
]

_VERSION_DIR = re.compile(r"version_(\d+)")
_CLAIM_MARKER = ".ftrain-version"
UPLOAD_EVERY_S = 60.0
"""Seconds between uploads at log points when a logger writes to a URL."""
_MEMBERS = (
    "name",
    "version",
    "log_dir",
    "log_hyperparams",
    "log_metrics",
    "resume",
    "flush",
    "finalize",
)


@runtime_checkable
class Logger(Protocol):
    """What the driver calls on a logger; implement it to write your own.

    The driver calls loggers on rank 0 only, and passes metrics as Python floats.
    ``resume`` comes before any other call when a run resumes from a checkpoint.
    ``ftrain.loggers.JSONLinesLogger`` is a complete example in a few lines.
    """

    @property
    def name(self) -> str:
        """Experiment name (the folder under ``save_dir`` for versioned loggers)."""
        ...

    @property
    def version(self) -> int | str:
        """Run version, resolved on first use; checkpoints store it for ``resume``."""
        ...

    @property
    def log_dir(self) -> str | None:
        """Folder the logger writes into, or None if it writes no files."""
        ...

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (nested mappings allowed)."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at ``step``."""
        ...

    def resume(self, version: int | str, step: int) -> None:
        """Continue writing into ``version``, discarding its data at steps >= ``step``."""
        ...

    def flush(self) -> None:
        """Write buffered data to disk."""
        ...

    def finalize(self, status: str) -> None:
        """Flush and close; ``status`` is "success", "failed" or "interrupted". Idempotent."""
        ...


def next_version(root: str) -> int:
    """Return 1 + the largest ``N`` among the ``version_N`` folders of ``root``, or 0.

    Args:
      root: the ``save_dir/name`` folder (a local path or a URL); it need not exist.

    Returns:
      The first free version number.
    """
    if _fs.is_url(root):
        folders = [name for name, is_dir in _fs.entries(root) if is_dir]
    else:
        try:
            entries = os.listdir(root)
        except FileNotFoundError:
            return 0
        folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    found = [int(m.group(1)) for entry in folders if (m := _VERSION_DIR.fullmatch(entry))]
    return max(found, default=-1) + 1


def claim_version(root: str) -> int:
    """Create the first free ``version_N`` folder of ``root`` and return ``N``.

    ``os.mkdir`` fails if the folder exists, so runs started together in one root
    each get their own version: a run that loses the race tries the next number.
    A URL root has no atomic folder creation: the version is the next one a listing
    shows, marked at once with a small ``.ftrain-version`` file (two runs starting
    in the same instant may pick the same version there).

    Args:
      root: the ``save_dir/name`` folder; created if missing.

    Returns:
      The version whose folder this call created.
    """
    if _fs.is_url(root):
        version = next_version(root)
        folder = _fs.join(root, f"version_{version}")
        _fs.makedirs(folder)
        _fs.write_bytes(_fs.join(folder, _CLAIM_MARKER), b"")
        return version
    os.makedirs(root, exist_ok=True)
    version = next_version(root)
    while True:
        try:
            os.mkdir(os.path.join(root, f"version_{version}"))
        except FileExistsError:
            version = max(version + 1, next_version(root))
            continue
        return version


class VersionedLogger:
    """Directory handling shared by loggers writing to ``save_dir/name/version_N``.

    Building a logger writes nothing. The first use of ``version``, ``log_dir`` or
    a write claims the next free ``version_N`` by creating its folder (atomic, so
    concurrent runs never share a version).

    Args:
      save_dir: root folder of all experiments.
      name: experiment folder under ``save_dir``.
      version: ``None`` for the next free ``version_N``; an int ``v`` for
        ``version_{v}``; a string for a folder of exactly that name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str = "ftrain_logs",
        version: int | str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(self).__name__}: name must be a non-empty str, got {name!r}")
        _check_version(type(self).__name__, version)
        self._save_dir = os.fspath(save_dir)
        self._name = name
        self._version = version
        self._remote = _fs.is_url(self._save_dir)
        if self._remote:
            _fs.check_url(self._save_dir, f"{type(self).__name__}: save_dir")
        self._stage: tuple[str, str] | None = None  # (URL log_dir, local staging folder)
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._uploaded_at = time.monotonic()

    @property
    def save_dir(self) -> str:
        """Root folder of all experiments."""
        return self._save_dir

    @property
    def name(self) -> str:
        """Experiment folder under ``save_dir``."""
        return self._name

    @property
    def version(self) -> int | str:
        """Run version; the first access claims the next free ``version_N``."""
        if self._version is None:
            self._version = claim_version(os.path.join(self._save_dir, self._name))
        return self._version

    @property
    def log_dir(self) -> str:
        """``save_dir/name/version_N`` (or ``save_dir/name/<version>`` for a str version)."""
        version = self.version
        folder = version if isinstance(version, str) else f"version_{version}"
        return _fs.join(self._save_dir, self._name, folder)

    def _use_version(self, version: int | str) -> None:
        _check_version(type(self).__name__, version)
        self._version = version

    def _ensure_dir(self) -> str:
        """The folder to write files into: ``log_dir``, or for a URL its staging folder."""
        path = self.log_dir
        if not self._remote:
            os.makedirs(path, exist_ok=True)
            return path
        if self._stage is None or self._stage[0] != path:
            stage = tempfile.mkdtemp(prefix="ftrain-log-")
            weakref.finalize(self, shutil.rmtree, stage, ignore_errors=True)
            self._stage, self._uploaded = (path, stage), {}
        return self._stage[1]

    def _download(self, name: str) -> bool:
        """For a URL ``log_dir``: copy its file ``name`` into the staging folder, if it exists."""
        return _fs.get_file(_fs.join(self.log_dir, name), os.path.join(self._ensure_dir(), name))

    def _upload(self) -> None:
        """For a URL ``log_dir``: upload each staged file changed since its last upload."""
        if self._stage is None:
            return
        url, stage = self._stage
        for name in sorted(os.listdir(stage)):
            local = os.path.join(stage, name)
            if name.endswith(".tmp") or not os.path.isfile(local):
                continue
            info = os.stat(local)
            key = (info.st_size, info.st_mtime_ns)
            if self._uploaded.get(name) != key:
                _fs.put_file(local, _fs.join(url, name))
                self._uploaded[name] = key
        self._uploaded_at = time.monotonic()

    def _upload_due(self) -> bool:
        return self._remote and time.monotonic() - self._uploaded_at >= UPLOAD_EVERY_S


def _check_version(owner: str, version: object) -> None:
    ok = version is None or (isinstance(version, str) and version)
    ok = ok or (isinstance(version, int) and not isinstance(version, bool) and version >= 0)
    if not ok:
        raise ValueError(
            f"{owner}: version must be None, an int >= 0 or a non-empty str, got {version!r}"
        )


def flatten_params(
    params: Mapping[str, Any], sep: str = "/"
) -> dict[str, bool | int | float | str]:
    """Flatten nested mappings into ``"a/b"`` keys with scalar values.

    Args:
      params: hyperparameters, possibly nested.
      sep: separator between nested keys.

    Returns:
      A flat dict whose values are bool, int, float or str; anything else
      (lists, None, objects) is stringified.

    >>> flatten_params({"optim": {"lr": 0.1, "betas": (0.9, 0.99)}, "seed": 0})
    {'optim/lr': 0.1, 'optim/betas': '(0.9, 0.99)', 'seed': 0}
    """
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_params(value, sep).items():
                flat[f"{key}{sep}{sub_key}"] = sub_value
        elif isinstance(value, (bool, str)):
            flat[str(key)] = value
        elif isinstance(value, numbers.Integral):
            flat[str(key)] = int(value)
        elif isinstance(value, numbers.Real):
            flat[str(key)] = float(value)
        else:
            flat[str(key)] = str(value)
    return flat


def save_hparams_json(log_dir: str, params: Mapping[str, Any]) -> None:
    """Write ``params`` to ``log_dir/hparams.json`` and ``hparams.yaml`` (Lightning's file).

    Values JSON cannot hold are stringified. The YAML is written without a YAML
    library: every scalar as a JSON scalar (valid YAML), mappings nested by indent.
    """
    path = os.path.join(log_dir, "hparams.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(params, f, indent=2, default=str)
        f.write("\n")
    with open(os.path.join(log_dir, "hparams.yaml"), "w", encoding="utf-8") as f:
        f.write("\n".join(_yaml_lines(params, 0)) + "\n" if params else "{}\n")


def _yaml_lines(params: Mapping[str, Any], indent: int) -> list[str]:
    lines = []
    pad = "  " * indent
    for key, value in params.items():
        name = json.dumps(str(key))
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{name}:")
            lines.extend(_yaml_lines(value, indent + 1))
        else:
            lines.append(f"{pad}{name}: {json.dumps(value, default=str)}")
    return lines
