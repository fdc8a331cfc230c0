"""``Timer``: Lightning's timer callback, wall time per stage and an optional time limit."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._config import parse_max_time

__all__ = ["Timer"]

_STAGES = ("train", "validate", "test", "predict")


class Timer:
    """Measure the time of each stage; optionally stop training after ``duration``.

    ``time_elapsed(stage)`` and ``time_remaining(stage)`` answer while the stage runs
    and after it; "train" covers training from its start to its end, the validation
    runs inside it included (as Lightning). The elapsed training time is saved in
    checkpoints, so it keeps counting across a resume.

    Args:
        duration: stop training once this much training time passed:
            ``"DD:HH:MM:SS"``, a dict of timedelta keywords, a timedelta, or None.
        interval: check the time after every batch ("step") or epoch ("epoch").
        verbose: print a line when the time is up.
        clock: seconds (injectable in tests).

    Raises:
        ValueError: a bad ``duration`` or ``interval``.

    Example:
        >>> t = Timer("00:00:01:30", clock=iter([0.0, 20.0, 20.0]).__next__)
        >>> t.on_train_start(state=None)
        >>> t.time_elapsed("train"), t.time_remaining("train")
        (20.0, 70.0)
    """

    def __init__(
        self,
        duration: str | Mapping[str, int] | datetime.timedelta | None = None,
        interval: str = "step",
        verbose: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval not in ("step", "epoch"):
            raise ValueError(f"Timer: interval must be 'step' or 'epoch', got {interval!r}")
        try:
            delta = parse_max_time(duration)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Timer: duration: {err}") from None
        self.duration = None if delta is None else delta.total_seconds()
        self.interval = interval
        self.verbose = verbose
        self._clock = clock
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}
        self._offset = 0.0  # training time of the run a resume continues

    def start_time(self, stage: str = "train") -> float | None:
        """The clock when ``stage`` last started, or None."""
        return self._start.get(_check(stage))

    def end_time(self, stage: str = "train") -> float | None:
        """The clock when ``stage`` last ended, or None while it runs."""
        return self._end.get(_check(stage))

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds ``stage`` has run (training: across resumes)."""
        start = self._start.get(_check(stage))
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        end = self._end.get(stage)
        return offset + (self._clock() if end is None else end) - start

    def time_remaining(self, stage: str = "train") -> float | None:
        """Seconds left of ``duration`` (None without one)."""
        if self.duration is None:
            return None
        return self.duration - self.time_elapsed(stage)

    def _begin(self, stage: str) -> None:
        self._start[stage] = self._clock()
        self._end.pop(stage, None)

    def _finish(self, stage: str) -> None:
        self._end[stage] = self._clock()

    def _time_is_up(self) -> bool:
        if self.duration is None or self.time_elapsed("train") < self.duration:
            return False
        if self.verbose:
            print(f"Timer: the time is up ({datetime.timedelta(seconds=self.duration)})")
        return True

    # hooks ------------------------------------------------------------------------------

    def on_train_start(self, state: Any) -> None:
        self._begin("train")

    def on_train_end(self, state: Any) -> None:
        self._finish("train")

    def on_validation_start(self, state: Any) -> None:
        self._begin("validate")

    def on_validation_end(self, state: Any, metrics: Any = None) -> None:
        self._finish("validate")

    def on_test_start(self, state: Any) -> None:
        self._begin("test")

    def on_test_end(self, state: Any, metrics: Any = None) -> None:
        self._finish("test")

    def on_predict_start(self, state: Any) -> None:
        self._begin("predict")

    def on_predict_end(self, state: Any) -> None:
        self._finish("predict")

    def on_train_batch_end(self, **_: Any) -> bool:
        return self.interval == "step" and self._time_is_up()

    def on_train_epoch_end(self, **_: Any) -> bool:
        return self.interval == "epoch" and self._time_is_up()

    def state_dict(self) -> dict[str, Any]:
        """The elapsed time of each stage (a checkpoint stores it)."""
        return {"time_elapsed": {s: self.time_elapsed(s) for s in _STAGES}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the training time of the checkpoint's run."""
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))


def _check(stage: str) -> str:
    if stage not in _STAGES:
        raise ValueError(f"Timer: stage must be one of {_STAGES}, got {stage!r}")
    return stage
