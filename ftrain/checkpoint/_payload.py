"""What a checkpoint may hold: the ``torch.load(weights_only=True)`` allowlist, checked on write.

A checkpoint must load with ``weights_only=True``; a ``pathlib.Path``, a
``datetime`` or a numpy value would be written without complaint and refused on
every read. :func:`check_payload` walks the payload before anything is written
and names the first value the safe loader would refuse, with its key path.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["UnloadableValueError", "check_payload"]

# The exact types torch's weights-only unpickler rebuilds (subclasses such as
# numpy.float64, a float, or IntEnum members pickle as their own class and are refused).
_SCALARS: frozenset[type] = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray}
)
_TORCH: frozenset[type] = frozenset({torch.Size, torch.dtype, torch.device, torch.layout})
_MAPPINGS: frozenset[type] = frozenset({dict, collections.OrderedDict})
_SEQUENCES: frozenset[type] = frozenset({list, tuple, set})


class UnloadableValueError(TypeError):
    """A value ``torch.load(weights_only=True)`` would refuse; names its key path and type."""


def _hint(value: object) -> str:
    module = type(value).__module__
    if module.startswith("pathlib"):
        return "store str(path) and rebuild the Path when loading"
    if module == "datetime":
        return "store value.isoformat() (or a timestamp) and parse it when loading"
    if module.startswith("numpy"):
        if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
            return "store torch.from_numpy(value) (or value.tolist())"
        return "store value.item() (a Python number)"
    return (
        "store tensors, numbers, strings, None, dicts, lists, tuples or sets, or register "
        "the class with torch.serialization.add_safe_globals"
    )


def _key(key: object) -> str:
    return f"[{key!r}]"


def _unsafe(value: object, path: str) -> Iterator[tuple[str, object]]:
    kind = type(value)
    if kind in _SCALARS or kind in _TORCH or isinstance(value, torch.Tensor):
        return
    if kind in _MAPPINGS:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) not in _SCALARS and type(key) not in _TORCH:
                yield f"{path} (key {key!r})", key
            yield from _unsafe(item, f"{path}{_key(key)}")
        return
    if kind in _SEQUENCES:
        for i, item in enumerate(value):  # type: ignore[call-overload,arg-type]
            yield from _unsafe(item, f"{path}[{i}]")
        return
    if kind in torch.serialization.get_safe_globals():
        return  # the user allowed it for the safe loader
    yield path, value


def check_payload(payload: Any) -> None:
    """Refuse a payload ``torch.load(weights_only=True)`` could not read back.

    Args:
        payload: the checkpoint dict (or any value) about to be written.

    Raises:
        UnloadableValueError: the first offending value, by key path and type, e.g.
            ``callbacks['MyCallback0']['root']: PosixPath``, with how to store it.

    Example:
        >>> import pathlib
        >>> check_payload({"model": {}, "note": "ok", "n": 3})
        >>> check_payload({"extra": {"root": pathlib.PurePosixPath("/data")}})
        Traceback (most recent call last):
        ...
        ftrain.checkpoint._payload.UnloadableValueError: extra['root']: PurePosixPath ...
    """
    if type(payload) in _MAPPINGS:
        items: Any = (
            (str(k), v) if isinstance(k, str) else (_key(k), v) for k, v in payload.items()
        )
    else:
        items = [("<payload>", payload)]
    for head, value in items:
        for path, bad in _unsafe(value, head):
            raise UnloadableValueError(
                f"{path}: {type(bad).__name__} cannot be read back with "
                f"torch.load(weights_only=True); {_hint(bad)}"
            )
