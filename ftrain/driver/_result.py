"""What ``fit`` returns."""

from __future__ import annotations

import attrs

from .._state import TrainState

__all__ = ["FitResult"]


@attrs.frozen(slots=True)
class FitResult:
    """What ``fit`` returns.

    Attributes:
        state: the final state.
        metrics: the last value of every logged metric as Python floats (Lightning's
            ``callback_metrics``), read by checkpoint policies and early stopping.
        best_checkpoint: path of the best checkpoint (the newest when nothing is
            monitored), or None without checkpointing.
        best_model_score: the monitored value of ``best_checkpoint`` (Lightning's
            ``best_model_score``), or None when nothing is monitored.
        last_checkpoint: path of the newest checkpoint written, or None.
        interrupted: the run was stopped by SIGINT or SIGTERM and ended cleanly
            (a resumable checkpoint was written when checkpointing is on).
        stop_reason: why training ended: "max_epochs", "max_steps", "max_time",
            "early_stopping" (an ``EarlyStopping`` callback; a ``Timer`` counts as
            "max_time"), "callback" (another callback's stop request), "interrupted" (SIGINT/SIGTERM) or "no_data"
            (an epoch without batches).
        log_dir: the first logger's version directory, if any.
        profile: per-phase timings when ``profiler="simple"``.
    """

    state: TrainState
    metrics: dict[str, float]
    best_checkpoint: str | None = None
    best_model_score: float | None = None
    last_checkpoint: str | None = None
    interrupted: bool = False
    stop_reason: str = "max_epochs"
    log_dir: str | None = None
    profile: dict[str, dict[str, float]] | None = None
