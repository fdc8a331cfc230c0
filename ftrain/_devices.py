"""Accelerator and devices flags, resolved as Lightning resolves them."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["parse_devices", "resolve_accelerator", "resolve_devices"]


def parse_devices(value: Any) -> int | list[int] | str:
    """Normalise the ``devices`` flag without looking at the machine.

    int N -> N (a count; -1 = all), list -> indices, "2" -> 2, "1,3" or "1," -> [1, 3] / [1],
    "-1" -> -1, "auto" -> "auto".

    Raises:
        ValueError: 0, "0", [], duplicates, negative indices. TypeError: other types.

    Example:
        >>> parse_devices("1,3"), parse_devices("2"), parse_devices(-1)
        ([1, 3], 2, -1)
    """
    accepted = "an int >= 1, -1 (all), a list of indices, a string like '2' or '1,3', or 'auto'"
    if isinstance(value, bool):
        raise TypeError(f"devices must be {accepted}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text == "auto":
            return "auto"
        if "," in text:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            try:
                return parse_devices([int(p) for p in parts])
            except ValueError:
                raise ValueError(f"devices must be {accepted}, got {value!r}") from None
        try:
            return parse_devices(int(text))
        except ValueError:
            raise ValueError(f"devices must be {accepted}, got {value!r}") from None
    if isinstance(value, int):
        if value == 0 or value < -1:
            raise ValueError(f"devices must be {accepted}, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"devices must be {accepted}, got an empty list")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
            raise ValueError(f"devices: indices must be ints >= 0, got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"devices: duplicate indices in {value!r}")
        return list(value)
    raise TypeError(f"devices must be {accepted}, got {type(value).__name__}")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_accelerator(value: str) -> str:
    """Pick the accelerator: "auto" prefers CUDA, then MPS, then CPU; "gpu" = CUDA or MPS.

    Raises:
        ValueError: an unknown or unavailable accelerator, naming what is available.
    """
    available = (
        ["cpu"]
        + (["cuda"] if torch.cuda.is_available() else [])
        + (["mps"] if _mps_available() else [])
    )
    if value == "auto":
        return "cuda" if "cuda" in available else "mps" if "mps" in available else "cpu"
    if value == "gpu":
        if "cuda" in available:
            return "cuda"
        if "mps" in available:
            return "mps"
        raise ValueError(f"accelerator='gpu' but no GPU is available; available: {available}")
    if value in ("cpu", "cuda", "mps"):
        if value not in available:
            raise ValueError(
                f"accelerator={value!r} is not available on this machine; available: {available}"
            )
        return value
    raise ValueError(
        f"accelerator: unknown value {value!r}; accepted: 'cpu', 'gpu', 'cuda', 'mps', 'auto'"
    )


def resolve_devices(accelerator: str, devices: Any) -> list[int]:
    """The device indices (or CPU process slots) to run on.

    On CPU, ``devices`` is the number of processes ("auto" = 1). On CUDA, a count
    takes the first N GPUs, -1 or "auto" all of them, a list those indices.

    Raises:
        ValueError: more devices than the machine has, or an unavailable index.
    """
    parsed = parse_devices(devices)
    if accelerator == "cpu":
        if parsed == "auto":
            return [0]
        if isinstance(parsed, list):
            return list(range(len(parsed)))
        if parsed == -1:
            return [0]
        return list(range(int(parsed)))
    count = torch.cuda.device_count() if accelerator == "cuda" else 1
    if parsed in ("auto", -1):
        return list(range(count))
    if isinstance(parsed, list):
        bad = [i for i in parsed if i >= count]
        if bad:
            raise ValueError(
                f"devices={parsed!r}: indices {bad} unavailable; this machine has {count} {accelerator} device(s)"
            )
        return parsed
    if int(parsed) > count:
        raise ValueError(
            f"devices={parsed!r}: this machine has only {count} {accelerator} device(s)"
        )
    return list(range(int(parsed)))
