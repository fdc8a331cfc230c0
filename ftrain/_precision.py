"""Numeric precision as a value: autocast, loss scaling, or true low-precision weights."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch

from ._batch import cast_floats as cast_floats

__all__ = ["PRECISIONS", "Precision", "cast_floats", "parse_precision"]

_ALIASES: dict[Any, str] = {
    64: "64-true",
    "64": "64-true",
    "64-true": "64-true",
    32: "32-true",
    "32": "32-true",
    "32-true": "32-true",
    16: "16-mixed",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
}

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


@attrs.frozen(slots=True)
class Precision:
    """A resolved precision setting.

    Attributes:
        name: the canonical name, one of ``PRECISIONS``.
        autocast_dtype: dtype for ``torch.autocast`` (mixed precision), else None.
        param_dtype: dtype the model's floating parameters and inputs are cast to
            (``*-true`` precisions other than 32), else None.
        scaled: whether the loss is scaled with a ``GradScaler`` (``16-mixed``).
    """

    name: str
    autocast_dtype: torch.dtype | None
    param_dtype: torch.dtype | None
    scaled: bool

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """The forward-pass context for this precision on ``device_type``."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def make_scaler(self, device_type: str) -> Any:
        """A new ``GradScaler`` for ``16-mixed`` on ``device_type``, else None.

        Raises:
            RuntimeError: this torch cannot scale gradients on that device.
        """
        if not self.scaled:
            return None
        try:
            return torch.amp.GradScaler(device_type)
        except Exception as exc:  # torch names the unsupported device itself
            raise RuntimeError(
                f"precision='16-mixed' needs a GradScaler on {device_type!r}, which this torch "
                f"cannot provide ({exc}); use precision='bf16-mixed' there"
            ) from exc


def parse_precision(value: Any) -> Precision:
    """Resolve a precision flag (Lightning's names and short forms) to a ``Precision``.

    Args:
        value: "64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
            or an alias: 64, 32, 16, "64", "32", "16", "bf16".

    Raises:
        ValueError: an unknown value, naming the accepted ones.

    Example:
        >>> parse_precision("bf16").name
        'bf16-mixed'
    """
    if isinstance(value, Precision):
        return value
    try:
        name = _ALIASES[value]
    except (KeyError, TypeError):
        accepted = ", ".join(repr(p) for p in PRECISIONS)
        raise ValueError(
            f"precision: unknown value {value!r}; accepted: {accepted} "
            "(or the short forms 64, 32, 16, '64', '32', '16', 'bf16')"
        ) from None
    if name == "64-true":
        return Precision(name, None, torch.float64, False)
    if name == "32-true":
        return Precision(name, None, None, False)
    if name == "16-mixed":
        return Precision(name, torch.float16, None, True)
    if name == "bf16-mixed":
        return Precision(name, torch.bfloat16, None, False)
    if name == "16-true":
        return Precision(name, None, torch.float16, False)
    return Precision(name, None, torch.bfloat16, False)
