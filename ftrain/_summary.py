"""A model summary: top-level modules with trainable and frozen parameter counts."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["model_summary"]


def _count(module: nn.Module) -> tuple[int, int]:
    trainable = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def _human(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def model_summary(model: Any) -> str:
    """A table of the model's top-level modules with parameter counts, and totals.

    Args:
        model: a module, or a mapping of name -> module.

    Returns:
        The table as text.

    The name column holds each child's name; for a bare ``nn.Sequential``, whose
    children are named by their index, it holds each layer's arguments instead.

    Example:
        >>> import torch
        >>> print(model_summary(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())))
          | Layer                                    | Type   | Params | Frozen
        -----------------------------------------------------------------------
        0 | in_features=2, out_features=3, bias=True | Linear | 9      | 0
        1 |                                          | ReLU   | 0      | 0
        -----------------------------------------------------------------------
        9 trainable params
        0 non-trainable params
        9 total params
    """
    while isinstance(getattr(model, "module", None), nn.Module):  # unwrap DDP
        model = model.module
    named = (
        list(model.items()) if not isinstance(model, nn.Module) else list(model.named_children())
    )
    if not named and isinstance(model, nn.Module):
        named = [("(root)", model)]
    # A bare nn.Sequential names its children "0", "1", ...: the name column would repeat
    # the index, so it shows each layer's arguments instead.
    indexed = all(name == str(i) for i, (name, _) in enumerate(named))
    rows = [("", "Layer" if indexed else "Name", "Type", "Params", "Frozen")]
    total_t = total_f = 0
    for i, (name, module) in enumerate(named):
        t, f = _count(module)
        label = _short(module.extra_repr()) if indexed else name
        rows.append((str(i), label, type(module).__name__, _human(t), _human(f)))
    modules = [model] if isinstance(model, nn.Module) else list(model.values())
    for m in modules:
        t, f = _count(m)
        total_t += t
        total_f += f
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = [" | ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    lines.append(f"{_human(total_t)} trainable params")
    lines.append(f"{_human(total_f)} non-trainable params")
    lines.append(f"{_human(total_t + total_f)} total params")
    return "\n".join(lines)
