"""``estimated_stepping_batches``: the optimizer steps a ``fit`` will take."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._config import FitConfig
from .._data._loader import loader_length
from .._schedules import estimated_stepping_batches as estimate
from .._schedules import limit_batches

__all__ = ["estimated_stepping_batches"]


def estimated_stepping_batches(
    train_data: Iterable[Any],
    *,
    world_size: int = 1,
    config: FitConfig | None = None,
    **flags: Any,
) -> float:
    """Optimizer steps ``fit`` will take on ``train_data`` with these flags.

    Lightning's ``trainer.estimated_stepping_batches``, as a function to call before
    ``fit`` (e.g. for ``OneCycleLR(total_steps=...)``): batches per epoch after
    ``limit_train_batches`` and sharding over ``world_size`` processes, divided into
    accumulation windows, times ``max_epochs``, capped by ``max_steps``.

    Returns:
        The number of steps, or ``inf`` for unsized data or an unbounded run.

    Example:
        >>> import torch
        >>> import ftrain
        >>> data = ftrain.TensorLoader(torch.zeros(100, 2), batch_size=10)
        >>> estimated_stepping_batches(data, max_epochs=3, accumulate_grad_batches=4)
        9
    """
    config = (config or FitConfig()).replace(**flags) if flags else (config or FitConfig())
    length = loader_length(train_data)
    if length is not None and world_size > 1:
        length = -(-length // world_size)
    batches = limit_batches(length, config.limit_train_batches)
    if config.fast_dev_batches:
        batches = (
            config.fast_dev_batches if batches is None else min(batches, config.fast_dev_batches)
        )
    return estimate(
        batches,
        config.accumulate_grad_batches,
        config.resolved_max_epochs(),
        config.resolved_max_steps(),
    )
