"""Graceful stop on SIGINT/SIGTERM (and SLURM's requeue signal): finish the step, save,
flush, return."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["StopSignals"]


class StopSignals:
    """Context manager turning SIGINT/SIGTERM into a stop request checked after each batch.

    The first SIGINT or SIGTERM (or one of ``extra``) sets ``requested`` to its name; a
    second SIGINT raises ``KeyboardInterrupt`` at once (abort). Handlers are installed
    only in the main thread, and the previous handlers are restored on exit.

    A process that has not stopped ``grace`` seconds after the first signal (a rank
    hung in a collective, a step that never returns) writes every thread's stack to
    stderr with ``faulthandler`` and exits with status 1, so the log shows where it
    hung before a launcher kills it (torchrun sends SIGKILL 30 s after SIGTERM). The
    default is 25 s, or ``FTRAIN_STOP_GRACE_S`` from the environment; None: wait.
    """

    def __init__(
        self,
        enabled: bool = True,
        extra: tuple[signal.Signals, ...] = (),
        grace: float | None = -1.0,
    ) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signals = (signal.SIGINT, signal.SIGTERM, *extra)
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}
        if grace == -1.0:
            grace = float(os.environ.get("FTRAIN_STOP_GRACE_S", "25"))
        self.grace = grace
        self._watchdog = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        """After ``grace`` s without stopping: every thread's stack to stderr, exit 1."""
        if self.grace is None or self.grace <= 0 or self._watchdog:
            return
        try:
            faulthandler.dump_traceback_later(self.grace, exit=True, file=sys.stderr)
        except (ValueError, AttributeError, OSError, RuntimeError):
            return  # stderr is not a real file (captured): nothing to dump into
        self._watchdog = True

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watchdog:
            with contextlib.suppress(Exception):
                faulthandler.cancel_dump_traceback_later()
            self._watchdog = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
