"""Validation passes inside ``fit`` (at an interval, the sanity check before it), and
the warnings about the training data's epochs."""

from __future__ import annotations

import warnings
from typing import Any

from .._callbacks._hooks import eval_batch_hooks
from .._data._loader import loader_length
from .._data._sources import ValidationData
from .._schedules import limit_batches
from .._seed import rng_states, set_rng_states
from .._state import TrainState
from .._warn import user_stacklevel
from ..loop import StopConditions
from ._evaluate import eval_sources, floats, run_eval
from ._run import LazyFloats, Run

__all__ = ["ValidationPass", "warn_few_batches", "warn_no_batches"]


class ValidationPass:
    """Runs ``val_step`` over the validation data, with its hooks, logs and bar."""

    def __init__(self, run: Run, val_step: Any, val: ValidationData) -> None:
        self.run, self.config, self.dist = run, run.config, run.dist
        self.val_step, self.val = val_step, val
        self.fast = self.config.fast_dev_batches

    def _total(self, data: Any) -> int | None:
        total = (
            None
            if eval_sources(data) is not None
            else limit_batches(
                loader_length(data), self.config.limit_val_batches, "limit_val_batches"
            )
        )
        if self.fast:
            total = self.fast if total is None else min(total, self.fast)
        return total

    def _settings(self, state: TrainState) -> dict[str, Any]:
        # What every validation pass of the run passes to run_eval.
        return {
            "stage": "validate",
            "limit": self.config.limit_val_batches,
            "device": self.run.device,
            "seed": state.seed,
            "rank": self.dist.rank,
            "world_size": self.dist.world_size,
            "on_batch": self.run.eval_batch_done,
            "use_sampler": self.config.use_distributed_sampler,
        }

    def __call__(self, state: TrainState, log_step: int, epoch: int) -> None:
        """One validation after training at ``epoch``; its values logged at ``log_step``."""
        run = self.run
        run.call("on_validation_start", state=state)
        run.profiler.start("validation")
        data = self.val.get(epoch)
        run.bar.eval_start("Validation", self._total(data))
        run.call("on_validation_epoch_start", state=state)
        values, _, _ = run_eval(
            state,
            self.val_step,
            data,
            epoch=epoch,
            max_batches=self.fast or None,
            reduce=self.dist.reduce_epoch_values,
            on_step_values=run.log_eval_step if run.loggers else None,
            hooks=eval_batch_hooks(run.callbacks, "validation"),
            **self._settings(state),
        )
        run.profiler.stop("validation")
        numbers = floats(values) if values else {}
        run.call("on_validation_epoch_end", state=state, metrics=dict(numbers))
        run.end_validation(values, numbers, epoch, log_step)
        if run.call("on_validation_end", state=state, metrics=LazyFloats(run.callback_metrics())):
            run.stop_requested = True
        run.log_callback_values(epoch, log_step)

    def sanity_check(self, state: TrainState, steps: int) -> None:
        """Lightning's sanity validation: ``steps`` batches (-1: all), results dropped."""
        run = self.run
        # A pass a hand loop does not have takes nothing from the user's random streams.
        ambient = rng_states()
        data = self.val.get(state.epoch, sanity=True)
        run.call("on_sanity_check_start", state=state)
        run.bar.eval_start("Sanity check", None if steps < 0 else steps)
        run_eval(
            state,
            self.val_step,
            data,
            max_batches=None if steps < 0 else steps,
            **self._settings(state),
        )
        set_rng_states(ambient)
        run.bar.eval_end(None)
        run.call("on_sanity_check_end", state=state)


def warn_few_batches(n: int | None, log_every: int, stop: StopConditions) -> bool:
    """Warn when an epoch of ``n`` batches is shorter than the log interval (without
    max_steps: then the epochs' lengths are chosen on purpose); whether it warned."""
    if n is None or not 0 < n < log_every or stop.max_steps != -1:
        return False
    warnings.warn(
        f"log_every_n_steps={log_every} is more than the {n} training batches of an "
        "epoch: step metrics are logged rarely; set a lower value",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
    return True


def warn_no_batches(epoch: int) -> None:
    """Warn that the training data yielded no batch in ``epoch`` (the run stops)."""
    # Without the stop, an exhausted one-shot iterator would spin through empty
    # epochs until max_epochs (forever with max_steps alone).
    warnings.warn(
        f"fit: the training data yielded no batches in epoch {epoch}; stopping. "
        "A one-shot iterator (e.g. a generator) is exhausted after one pass: "
        "pass a re-iterable object, or a factory epoch -> iterable",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
