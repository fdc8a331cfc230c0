"""Which loggers a run writes to: ``fit(logger=...)`` resolved to a list of loggers."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence

from .._warn import user_stacklevel
from ._base import _MEMBERS, Logger
from ._csv import CSVLogger
from ._tensorboard import TensorBoardLogger, tensorboard_available

__all__ = ["as_loggers"]


def _missing_members(obj: object) -> list[str]:
    # getattr_static: looking a property up must not run it (a lazy version
    # would be resolved, or a user's property could raise).
    missing = []
    for member in _MEMBERS:
        try:
            inspect.getattr_static(obj, member)
        except AttributeError:
            missing.append(member)
    return missing


def as_loggers(
    logger: bool | Logger | Sequence[Logger] | None, default_root_dir: str | os.PathLike[str]
) -> list[Logger]:
    """Normalise the ``logger=`` argument of ``fit`` into a list of loggers.

    Args:
      logger: True or None for a ``TensorBoardLogger`` under ``default_root_dir``
        (a ``CSVLogger``, with a warning, when tensorboard is not installed);
        False for none; one logger; or a sequence of loggers.
      default_root_dir: ``save_dir`` of the default logger.

    Returns:
      The loggers, in the given order.

    Raises:
      TypeError: if ``logger`` or one of its items does not implement ``Logger``.

    >>> [type(x).__name__ for x in as_loggers(True, "runs")]
    ['TensorBoardLogger']
    >>> as_loggers(False, "runs")
    []
    """
    if logger is None or logger is True:
        if tensorboard_available():
            return [TensorBoardLogger(default_root_dir)]
        warnings.warn(
            "logger=True: tensorboard is not installed, logging to CSV instead "
            "(pip install tensorboard for the TensorBoard logger)",
            stacklevel=user_stacklevel(),
        )
        return [CSVLogger(default_root_dir)]
    if logger is False:
        return []
    if not _missing_members(logger):
        return [logger]  # type: ignore[list-item]
    if isinstance(logger, Sequence) and not isinstance(logger, (str, bytes)):
        items = list(logger)
        for i, item in enumerate(items):
            missing = _missing_members(item)
            if missing:
                raise TypeError(
                    f"logger[{i}] must implement ftrain.loggers.Logger, got "
                    f"{type(item).__name__} (missing: {', '.join(missing)})"
                )
        return items
    raise TypeError(
        "logger must be True, False, None, a ftrain.loggers.Logger or a sequence of "
        f"them, got {type(logger).__name__} (missing: {', '.join(_missing_members(logger))})"
    )
