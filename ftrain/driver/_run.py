"""The impure half of ``fit``: loggers, callbacks, checkpoint writes, the clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .._callbacks._base import EarlyStopping, LearningRateMonitor, drain_logged
from .._callbacks._timer import Timer
from .._config import FitConfig
from .._metrics import Logged, MetricCollector, to_float
from .._state import TrainState
from ._env import DistEnv
from ._profiler import NullProfiler
from ._progress import ProgressBar
from ._writer import CheckpointWriter

__all__ = ["LazyFloats", "Run", "floats_now"]


class LazyFloats(Mapping[str, float]):
    """Metric values converted to floats only when read (each read syncs once)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values
        self._cache: dict[str, float] = {}

    def __getitem__(self, key: str) -> float:
        if key not in self._cache:
            value = self._values[key]
            # Counters stay ints so that templates like {epoch:02d} format them as such.
            self._cache[key] = (
                value if isinstance(value, int) and not isinstance(value, bool) else to_float(value)
            )
        return self._cache[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Run:
    """The impure half of ``fit``: loggers, bar, callbacks, checkpoint writes, the clock."""

    def __init__(
        self,
        config: FitConfig,
        dist: DistEnv,
        device: torch.device,
        loggers: list[Any],
        callbacks: Sequence[Any],
        writer: CheckpointWriter,
        clock: Callable[[], float],
        root: str,
    ) -> None:
        self.config, self.dist, self.device, self.clock = config, dist, device, clock
        self.root = root
        # Read once: step_log_due and checkpoints_on are asked after every batch.
        self.log_every = config.log_every_n_steps or 0
        self._fast = config.fast_dev_batches
        self.checkpoints_on = writer.enabled  # the policies are fixed for the run
        self.loggers = loggers
        self.callbacks = list(callbacks)
        self.writer = writer
        self.elapsed_before = 0.0
        self.started = clock()
        self.train = MetricCollector("train")
        self.val_values: dict[str, Any] = {}
        self.train_epoch_values: dict[str, Any] = {}
        self.callback_logged: dict[str, float] = {}  # what callbacks logged, as floats
        self.epoch_fresh = False  # the epoch values are newer than any step value
        self.bar: Any = ProgressBar.auto(False)
        self.profiler: Any = NullProfiler()
        self.val_log_step = 0  # x of per-batch validation values, across validation runs
        # Validation and epoch values of the run a resume continues, as floats; they
        # count until this run has its own (policies and callbacks see them meanwhile).
        self.restored_metrics: dict[str, dict[str, float]] = {"val": {}, "epoch": {}}
        # Rows logged at the highest step so far: a checkpoint at that step stores them
        # (a resume drops logged rows at steps >= the checkpoint's step, then replays).
        self.log_tail: list[tuple[dict[str, Any], int]] = []
        self.stop_requested = False
        self.stop_cause: str | None = None  # what first asked to stop (FitResult.stop_reason)
        self.end_reason: str | None = None
        self.lr_monitors = [c for c in self.callbacks if isinstance(c, LearningRateMonitor)]
        # prog_bar epoch-level values (train epoch, validation) as floats: they stay on the
        # training bar after the step values, as Lightning shows them, until replaced.
        self.bar_values: dict[str, float] = {}

    # clock --------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.started

    # callbacks ----------------------------------------------------------------------

    def call(self, hook: str, **kwargs: Any) -> bool:
        stop = False
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None and fn(**kwargs) is True:
                stop = True
                if self.stop_cause is None:
                    self.stop_cause = (
                        "early_stopping"
                        if isinstance(cb, EarlyStopping)
                        else "max_time"
                        if isinstance(cb, Timer)
                        else "callback"
                    )
        return stop

    def log_point_values(self, state: TrainState) -> dict[str, Any]:
        """What the callbacks' ``on_log`` hooks add to a step log point."""
        out: dict[str, Any] = {}
        for cb in self.callbacks:
            fn = getattr(cb, "on_log", None)
            if fn is not None:
                out.update(fn(state=state) or {})
        return out

    # metrics ------------------------------------------------------------------------

    def callback_metrics(self) -> dict[str, Any]:
        """Lightning's ``callback_metrics``: each name holds its most recent value.

        A training metric logged per step holds the latest step's value (also as
        ``name_step`` when it is reduced per epoch too); at an epoch's end ``name`` and
        ``name_epoch`` take the epoch value until the next step. Validation values
        appear under ``name`` (and ``name_epoch`` when also logged per step).
        """
        out: dict[str, Any] = {}
        latest = self.train.latest
        for name, spec in self.train.specs.items():
            if spec.on_step and name in latest and not spec.metric_object:
                value = latest[name]
                out[name] = value
                if spec.on_epoch:
                    out[f"{name}_step"] = value
        fresh = self.epoch_fresh
        for key, value in (self.epoch_callback_metrics() or self.restored_metrics["epoch"]).items():
            if fresh or key not in out:
                out[key] = value
        if self.val_values:
            for name, (value, spec) in self.val_values.items():
                out[name] = value
                if name.endswith("_epoch") and spec.on_step:
                    out[name[: -len("_epoch")]] = value
        else:
            out.update(self.restored_metrics["val"])
        out.update(self.callback_logged)
        return out

    def epoch_callback_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (value, spec) in self.train_epoch_values.items():
            out[name] = value
            if name.endswith("_epoch") and spec.on_step:
                out[name[: -len("_epoch")]] = value
        return out

    def metrics_state(self, step: int) -> dict[str, Any]:
        """What a checkpoint at ``step`` stores of the logged values (floats only)."""
        val = {k: v for k, (v, _) in self.val_values.items()}
        return {
            "val": floats_now(val) if val else dict(self.restored_metrics["val"]),
            "epoch": floats_now(self.epoch_callback_metrics())
            or dict(self.restored_metrics["epoch"]),
            "callbacks": dict(self.callback_logged),
            "log_tail": [{"step": s, "values": v} for v, s in self.log_tail if s >= step],
        }

    def log(self, values: Mapping[str, Any], step: int) -> None:
        if not self.loggers or not values or not self.dist.is_main:
            return
        # The loop's epoch counter stays an int (a CSV column of 0, 1, ..., as Lightning's).
        numbers = {k: v if k == "epoch" else to_float(v) for k, v in values.items()}
        if "step" in numbers:
            # A logged ``step`` value is the x-axis of this row, as in Lightning.
            step = int(numbers.pop("step"))
        self.train.warn_nonfinite(numbers)
        for lg in self.loggers:
            lg.log_metrics(numbers, step)
        if self.log_tail and self.log_tail[-1][1] < step:
            self.log_tail.clear()  # steps only grow: no later checkpoint is below ``step``
        self.log_tail.append((numbers, step))

    def log_hparams(self, hparams: Mapping[str, Any]) -> None:
        if self.dist.is_main:
            for lg in self.loggers:
                lg.log_hyperparams(hparams)

    # training steps --------------------------------------------------------------------

    def plain(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """A step's metrics as callbacks receive them: plain values, no ``Logged``
        wrappers, tensors detached (unless logged with ``enable_graph=True``)."""
        out = {}
        for name, value in metrics.items():
            keep_graph = False
            if isinstance(value, Logged):
                value, keep_graph = value.value, value.enable_graph
            if isinstance(value, torch.Tensor) and not keep_graph:
                value = value.detach()
            out[name] = value
        return out

    def step_log_due(self, step: int, stopping: bool) -> bool:
        """Whether the step values are logged after optimizer step ``step``."""
        every = self.log_every
        return bool((every and step % every == 0) or self._fast or stopping)

    def step_learning_rates(self, state: TrainState, step: int) -> dict[str, float] | None:
        """The lr a step-interval LearningRateMonitor logs at ``step``: the one the step
        uses (Lightning reads it before the step); read only if it may log."""
        if not self.lr_monitors or self.lr_monitors[0].interval(state) != "step":
            return None
        every = self.config.log_every_n_steps
        if (every and step % every == 0) or self.config.fast_dev_batches:
            return self.lr_monitors[0].learning_rates(state)
        return None

    def log_step_values(
        self, state: TrainState, epoch: int, step: int, lrs: dict[str, float] | None
    ) -> None:
        self.profiler.start("logging")
        values = self.train.step_values(for_logger=True)
        if self.lr_monitors and self.lr_monitors[0].interval(state) == "step":
            values.update(lrs or self.lr_monitors[0].learning_rates(state))
        if values:
            values = self.dist.reduce_step_values(values, self.train)
        values.update(self.log_point_values(state))
        if values:
            self.log({**values, "epoch": epoch}, step)
        self.profiler.stop("logging")

    def train_bar_values(self) -> dict[str, float]:
        # Called by the bar only when it refreshes: the one place step values sync for it.
        return {**floats_now(self.train.prog_bar_values()), **self.bar_values}

    def end_train_epoch(self, state: TrainState, epoch: int) -> dict[str, Any]:
        """Reduce and log the epoch's training values; they become callback metrics."""
        values = self.train.epoch_values()
        self.train_epoch_values = values
        self.epoch_fresh = True
        logged = {k: v for k, (v, spec) in values.items() if spec.logger}
        if self.lr_monitors and self.lr_monitors[0].interval(state) == "epoch":
            logged.update(self.lr_monitors[0].learning_rates(state))
        if logged:
            self.log({**logged, "epoch": epoch}, max(state.step - 1, 0))
        return values

    def show_epoch_end(self, values: Mapping[str, Any], step: int) -> None:
        if self.bar.shows_metrics:  # a disabled bar must not sync the device for nothing
            shown = {k: to_float(v) for k, (v, spec) in values.items() if spec.prog_bar}
            self.bar_values.update(shown)
            self.bar.train_epoch_end(self.train_bar_values(), step=step)

    # validation ----------------------------------------------------------------------

    def eval_batch_done(self, count: int) -> None:
        # run_eval reports the number of batches done; the bar takes the batch index.
        self.bar.eval_batch_end(count - 1)

    def log_eval_step(self, values: dict[str, Any]) -> None:
        # Per-batch validation values (on_step=True): every batch, on their own counter
        # across validation runs, without an epoch column (Lightning's rule).
        if values:
            self.log(values, self.val_log_step)
        self.val_log_step += 1

    def end_validation(
        self, values: dict[str, Any], numbers: dict[str, float], epoch: int, step: int
    ) -> None:
        """Show and log a validation's values; they become callback metrics."""
        self.val_values = values
        shown = {k: numbers[k] for k, (_, spec) in values.items() if spec.prog_bar}
        self.bar_values.update(shown)
        self.bar.eval_end(shown)
        logged = {k: numbers[k] for k, (_, spec) in values.items() if spec.logger}
        if logged:
            self.log({**logged, "epoch": epoch}, step)

    def log_callback_values(self, epoch: int, step: int) -> None:
        """Carry out what callbacks logged in an epoch-end hook (``Callback.log``)."""
        values: dict[str, Any] = {}
        for cb in self.callbacks:
            values.update(drain_logged(cb))
        if not values:
            return
        collector = MetricCollector("train")
        collector.update(values, _one)
        self.dist.reduce_epoch_values(collector)  # the sync_dist values, across ranks
        logged = {}
        for name, (value, spec) in collector.epoch_values().items():
            number = to_float(value)
            self.callback_logged[name] = number
            if spec.prog_bar:
                self.bar_values[name] = number
            if spec.logger:
                logged[name] = number
        if logged:
            self.log({**logged, "epoch": epoch}, step)

    # checkpoints ---------------------------------------------------------------------

    def checkpoint(
        self,
        stage: str,
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Report ``stage`` to the checkpoint reducer and write what it decides;
        ``metrics``: the values to decide on (default: the current callback metrics)."""
        if not self.writer.enabled:
            return
        if stage != "train_step":  # every rank is here (no per-rank fast path)
            extra = self.dist.with_rank_state(state, extra, self.train.state_dict)
        self.writer.report(
            stage,
            state,
            lambda: LazyFloats(self.callback_metrics() if metrics is None else metrics),
            self.elapsed(),
            extra,
            self.loggers,
            self.bar,
        )

    def payload(self, state: TrainState, counters: Mapping[str, Any]) -> dict[str, Any]:
        """Everything a checkpoint stores besides the state (a resume restores it)."""
        return {
            "loop": {
                **counters,
                "elapsed": self.elapsed(),
                "logger_versions": [str(lg.version) for lg in self.loggers],
                "train_metrics": self.train.state_dict(),
                "metrics": self.metrics_state(state.step),
            },
            "policies": list(self.writer.states),
            "callbacks": {
                f"{type(cb).__name__}{i}": cb.state_dict()
                for i, cb in enumerate(self.callbacks)
                if hasattr(cb, "state_dict")
            },
            "config": self.config.to_dict(),
        }

    def fail(self, state: TrainState, exc: BaseException) -> None:
        """An exception left the loop: tell the callbacks, close loggers, bar, profiler."""
        self.writer.files.abandon(exc)  # the write in flight ends first; its error is kept
        self.writer.claim.release()
        self.call("on_exception", state=state, exception=exc)
        self.call("teardown", stage="fit", state=state)
        for lg in self.loggers:
            lg.finalize("failed")
        self.bar.close()
        self.profiler.close()


def floats_now(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: to_float(v) for k, v in values.items()}


def _one() -> int:
    return 1
