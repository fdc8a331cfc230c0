"""Graceful stop on SIGINT/SIGTERM (and SLURM's requeue signal): finish the step, save,
flush, return."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopSignals"]


class StopSignals:
    """Context manager turning SIGINT/SIGTERM into a stop request checked after each batch.

    The first SIGINT or SIGTERM (or one of ``extra``) sets ``requested`` to its name; a
    second SIGINT raises ``KeyboardInterrupt`` at once (abort). Handlers are installed
    only in the main thread, and the previous handlers are restored on exit.
    """

    def __init__(self, enabled: bool = True, extra: tuple[signal.Signals, ...] = ()) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signals = (signal.SIGINT, signal.SIGTERM, *extra)
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
