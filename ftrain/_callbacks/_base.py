"""Callbacks for user code, and early stopping as a pure policy.

A callback is any object with some of the hook methods below (subclassing
``Callback`` is optional). Hooks receive the state and metrics; treat them as
read-only. A hook that returns True asks the loop to stop (it stops once
``min_epochs``/``min_steps`` allow, as Lightning's ``should_stop``). A callback
with ``state_dict``/``load_state_dict`` has its state saved in checkpoints.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._metrics import Logged, log
from .._warn import user_stacklevel

__all__ = [
    "HOOKS",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "drain_logged",
    "early_stopping_update",
]

_LOGGED = "_ftrain_logged"


def drain_logged(callback: Any) -> dict[str, Logged]:
    """What ``callback`` logged since the last call (and forget it)."""
    state = getattr(callback, "__dict__", None)
    return state.pop(_LOGGED, {}) if state is not None else {}


HOOKS = (
    "setup",
    "on_fit_start",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_test_start",
    "on_test_epoch_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_test_epoch_end",
    "on_test_end",
    "on_predict_start",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_predict_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
    "on_train_end",
    "on_fit_end",
    "on_exception",
    "teardown",
)
"""Every hook name, in the order a fit with validation calls them first."""


class Callback:
    """Base class with every hook as a no-op; override what you need.

    Hooks and their keyword arguments:
        setup(stage, state) and teardown(stage, state) around fit/validate/test/predict
        (stage "fit", "validate", "test", "predict"; teardown also after an error),
        on_fit_start(state), on_sanity_check_start(state), on_sanity_check_end(state),
        on_train_start(state), on_train_epoch_start(state),
        on_train_batch_start(state, batch, batch_idx) (return -1 to skip the rest of
        the epoch, as Lightning), on_train_batch_end(state, metrics, batch, batch_idx)
        (the step's values, detached unless logged with
        ``enable_graph=True``; tensors stay on the device), on_train_epoch_end(state, metrics),
        on_validation_start(state), on_validation_epoch_start(state),
        on_validation_batch_start(state, batch, batch_idx, dataloader_idx),
        on_validation_batch_end(state, metrics, batch, batch_idx, dataloader_idx),
        on_validation_epoch_end(state, metrics), on_validation_end(state, metrics), the
        same six for test (``on_test_*``), on_predict_start(state),
        on_predict_batch_start(state, batch, batch_idx),
        on_predict_batch_end(state, outputs, batch, batch_idx), on_predict_end(state),
        on_save_checkpoint(state, checkpoint) (keys added to ``checkpoint`` are saved;
        plain values only), on_load_checkpoint(state, checkpoint) (the loaded dict),
        on_train_end(state), on_fit_end(state, result), on_exception(state, exception).
        on_log(state): at each step log point; the ``{name: float}`` it returns is logged
        with the step metrics (``ThroughputMonitor`` uses it).
        resolve(config): once before ``fit`` trains, with the run's ``FitConfig``, to
        settle defaults that depend on the flags (``EarlyStopping`` decides when it
        checks).

    From ``on_train_epoch_end``, ``on_validation_epoch_end`` and ``on_validation_end``
    a callback logs values with :meth:`log`, as Lightning's ``self.log``: they go to
    the loggers, the progress bar and the metrics later hooks and checkpoint
    policies read.
    """

    def setup(self, stage: str, state: Any) -> Any: ...
    def teardown(self, stage: str, state: Any) -> Any: ...
    def resolve(self, config: Any) -> Any: ...

    def log(self, name: str, value: Any, **options: Any) -> None:
        """Log ``value`` under ``name`` from an epoch-end hook (Lightning's ``self.log``).

        Args:
            name: the metric name.
            value: a number or a one-element tensor.
            **options: :func:`ftrain.log`'s options (``prog_bar``, ``logger``,
                ``sync_dist``, ``reduce_fx``, ...); ``on_epoch`` is implied.

        Raises:
            ValueError: ``on_step=True`` (an epoch-end hook has no step to log at), or
                an option :func:`ftrain.log` refuses.
        """
        if options.get("on_step"):
            raise ValueError(
                f"{type(self).__name__}.log({name!r}): on_step=True cannot be used from an "
                "epoch-end hook; log it from the step instead"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(self).__name__}.log: name must be a non-empty str")
        logged = log(value, **{**options, "on_step": False, "on_epoch": True})
        self.__dict__.setdefault(_LOGGED, {})[name] = logged

    def on_fit_start(self, state: Any) -> Any: ...
    def on_train_start(self, state: Any) -> Any: ...
    def on_train_epoch_start(self, state: Any) -> Any: ...
    def on_train_batch_start(self, state: Any, batch: Any, batch_idx: int) -> Any: ...
    def on_train_batch_end(
        self, state: Any, metrics: Mapping[str, Any], batch: Any, batch_idx: int
    ) -> Any: ...
    def on_train_epoch_end(self, state: Any, metrics: Mapping[str, float]) -> Any: ...
    def on_sanity_check_start(self, state: Any) -> Any: ...
    def on_sanity_check_end(self, state: Any) -> Any: ...
    def on_validation_start(self, state: Any) -> Any: ...
    def on_validation_epoch_start(self, state: Any) -> Any: ...
    def on_validation_batch_start(
        self, state: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> Any: ...
    def on_validation_batch_end(
        self,
        state: Any,
        metrics: Mapping[str, Any],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> Any: ...
    def on_validation_epoch_end(self, state: Any, metrics: Mapping[str, float]) -> Any: ...
    def on_validation_end(self, state: Any, metrics: Mapping[str, float]) -> Any: ...
    def on_test_start(self, state: Any) -> Any: ...
    def on_test_epoch_start(self, state: Any) -> Any: ...
    def on_test_batch_start(
        self, state: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> Any: ...
    def on_test_batch_end(
        self,
        state: Any,
        metrics: Mapping[str, Any],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> Any: ...
    def on_test_epoch_end(self, state: Any, metrics: Mapping[str, float]) -> Any: ...
    def on_test_end(self, state: Any, metrics: Mapping[str, float]) -> Any: ...
    def on_predict_start(self, state: Any) -> Any: ...
    def on_predict_batch_start(self, state: Any, batch: Any, batch_idx: int) -> Any: ...
    def on_predict_batch_end(self, state: Any, outputs: Any, batch: Any, batch_idx: int) -> Any: ...
    def on_predict_end(self, state: Any) -> Any: ...
    def on_save_checkpoint(self, state: Any, checkpoint: dict[str, Any]) -> Any: ...
    def on_load_checkpoint(self, state: Any, checkpoint: Mapping[str, Any]) -> Any: ...
    def on_train_end(self, state: Any) -> Any: ...
    def on_fit_end(self, state: Any, result: Any) -> Any: ...
    def on_exception(self, state: Any, exception: BaseException) -> Any: ...
    def on_log(self, state: Any) -> Mapping[str, float] | None: ...


@attrs.frozen(slots=True)
class EarlyStoppingState:
    """What early stopping remembers: the best score and the epochs without improvement."""

    best: float | None = None
    wait: int = 0
    stopped: bool = False


def early_stopping_update(
    state: EarlyStoppingState,
    score: float,
    *,
    mode: str,
    patience: int,
    min_delta: float,
    stopping_threshold: float | None = None,
    divergence_threshold: float | None = None,
) -> tuple[EarlyStoppingState, bool]:
    """One pure early-stopping decision: ``(state, score) -> (state, stop)``.

    An improvement is ``score < best - min_delta`` (mode "min") or
    ``score > best + min_delta`` ("max"); after ``patience`` checks without one, stop.
    A non-finite score stops at once (as Lightning's ``check_finite``).

    Example:
        >>> s = EarlyStoppingState()
        >>> stops = []
        >>> for v in [1.0, 0.9, 0.95, 0.97]:
        ...     s, stop = early_stopping_update(s, v, mode="min", patience=2, min_delta=0.0)
        ...     stops.append(stop)
        >>> stops
        [False, False, False, True]
    """
    if not math.isfinite(score):
        return attrs.evolve(state, stopped=True), True
    sign = 1.0 if mode == "min" else -1.0
    # Strict comparisons, as Lightning's monitor_op (torch.lt / torch.gt).
    if stopping_threshold is not None and sign * score < sign * stopping_threshold:
        return attrs.evolve(state, stopped=True), True
    if divergence_threshold is not None and sign * score > sign * divergence_threshold:
        return attrs.evolve(state, stopped=True), True
    delta = abs(min_delta)
    improved = state.best is None or (
        score + delta < state.best if mode == "min" else score - delta > state.best
    )
    if improved:
        return EarlyStoppingState(best=score, wait=0), False
    wait = state.wait + 1
    stop = wait >= patience
    return EarlyStoppingState(best=state.best, wait=wait, stopped=stop), stop


class EarlyStopping(Callback):
    """Stop when a monitored validation metric stops improving (Lightning's names).

    Args:
        monitor: the logged metric to watch.
        min_delta: the smallest change that counts as an improvement.
        patience: validation checks without improvement before stopping.
        mode: "min" or "max".
        strict: a missing monitor is an error (True) or a warning (False).
        check_on_train_epoch_end: decide at the training epoch's end instead of after
            validation; None (default) resolves as Lightning does: at the epoch's end
            when validation runs once per epoch at its end or not at all
            (``val_check_interval`` 1.0 and ``check_val_every_n_epoch`` 1), else after
            each validation. A metric that never appears is warned about at the end.
        stopping_threshold: stop once the metric is better than this.
        divergence_threshold: stop once the metric is worse than this.
        verbose: print each check's outcome (improved, or checks without improvement).
            The message that it stops is printed whatever ``verbose`` says.

    Attributes (Lightning's names, read them after ``fit``):
        best_score: the best monitored value so far (``inf``/``-inf`` before any).
        wait_count: checks since the last improvement.
        stopped_epoch: the epoch in which it asked to stop, 0 if it did not.
        stop_message: why it stopped, or None.

    Raises:
        ValueError: a bad mode or patience.

    Example:
        >>> es = EarlyStopping("val_loss", patience=1)
        >>> [es.on_validation_end(None, {"val_loss": v}) for v in (1.0, 0.5, 0.7)]
        EarlyStopping: val_loss did not improve for 1 check (best 0.5); stopping.
        [False, False, True]
        >>> es.best_score, es.wait_count
        (0.5, 1)
    """

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        mode: str = "min",
        strict: bool = True,
        check_on_train_epoch_end: bool | None = None,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        verbose: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"EarlyStopping: monitor must be a metric name, got {monitor!r}")
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.patience = patience
        self.mode = mode
        self.strict = strict
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.verbose = bool(verbose)
        self.state = EarlyStoppingState()
        self.stopped_epoch = 0
        self.stop_message: str | None = None
        self._seen = False  # a check ran this run (the metric was looked for)

    @property
    def best_score(self) -> float:
        """The best monitored value so far; ``inf`` ("min") or ``-inf`` ("max") before any."""
        if self.state.best is not None:
            return self.state.best
        return math.inf if self.mode == "min" else -math.inf

    @property
    def wait_count(self) -> int:
        """Checks since the last improvement."""
        return self.state.wait

    def _check(self, state: Any, metrics: Mapping[str, float]) -> bool:
        self._seen = True  # a missing metric is reported here (error or warning)
        if self.monitor not in metrics:
            message = (
                f"EarlyStopping: monitored metric {self.monitor!r} was not logged; "
                f"logged: {sorted(metrics)}"
            )
            if self.strict:
                raise ValueError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=user_stacklevel())
            return False
        before = self.state
        score = float(metrics[self.monitor])
        self.state, stop = early_stopping_update(
            self.state,
            score,
            mode=self.mode,
            patience=self.patience,
            min_delta=self.min_delta,
            stopping_threshold=self.stopping_threshold,
            divergence_threshold=self.divergence_threshold,
        )
        main = getattr(state, "rank", 0) == 0
        if stop:
            self.stopped_epoch = int(getattr(state, "epoch", 0))
            self.stop_message = self._why(before, score)
            if main:
                print(f"EarlyStopping: {self.stop_message}; stopping.", flush=True)
        elif self.verbose and main:
            print(f"EarlyStopping: {self._progress(before, score)}", flush=True)
        return stop

    def _why(self, before: EarlyStoppingState, score: float) -> str:
        m = self.monitor
        if not math.isfinite(score):
            return f"{m} = {score} is not finite"
        low = self.mode == "min"
        stop_at, diverge_at = self.stopping_threshold, self.divergence_threshold
        if stop_at is not None and (score < stop_at) == low:
            return (
                f"{m} = {score:.6g} is {'below' if low else 'above'} stopping_threshold={stop_at}"
            )
        if diverge_at is not None and (score > diverge_at) == low:
            side = "above" if low else "below"
            return f"{m} = {score:.6g} is {side} divergence_threshold={diverge_at}"
        checks = "check" if self.state.wait == 1 else "checks"
        return f"{m} did not improve for {self.state.wait} {checks} (best {self.best_score:.6g})"

    def _progress(self, before: EarlyStoppingState, score: float) -> str:
        if self.state.wait == 0:
            was = "" if before.best is None else f" from {before.best:.6g}"
            return f"{self.monitor} improved{was} to {score:.6g}"
        return (
            f"{self.monitor} = {score:.6g} did not improve on {self.best_score:.6g} "
            f"({self.state.wait}/{self.patience} checks)"
        )

    def resolve(self, config: Any) -> None:
        self._seen = False
        if self.check_on_train_epoch_end is None:
            # Lightning's rule: validation several times per epoch, or not every epoch,
            # is checked after each validation; otherwise at the training epoch's end.
            interval = getattr(config, "val_check_interval", None)
            every_n = getattr(config, "check_val_every_n_epoch", 1)
            self._on_epoch_end = interval in (None, 1.0) and every_n == 1
        else:
            self._on_epoch_end = bool(self.check_on_train_epoch_end)

    def _at_epoch_end(self) -> bool:
        resolved = getattr(self, "_on_epoch_end", None)
        return bool(self.check_on_train_epoch_end) if resolved is None else resolved

    def on_validation_end(self, state: Any, metrics: Mapping[str, float]) -> bool:
        return False if self._at_epoch_end() else self._check(state, metrics)

    def on_train_epoch_end(self, state: Any, metrics: Mapping[str, float]) -> bool:
        return self._check(state, metrics) if self._at_epoch_end() else False

    def on_train_end(self, state: Any) -> None:
        if not self._seen and getattr(state, "rank", 0) == 0:
            where = "training epoch's end" if self._at_epoch_end() else "validation's end"
            warnings.warn(
                f"EarlyStopping: it never checked {self.monitor!r}: the {where} never came "
                "(no validation ran?); set check_on_train_epoch_end=True to check the "
                "training metrics",
                UserWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.state.best,
            "wait": self.state.wait,
            "stopped": self.state.stopped,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = EarlyStoppingState(state["best"], int(state["wait"]), bool(state["stopped"]))
        self.stopped_epoch = int(state.get("stopped_epoch", 0))

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience})"
        )


class LearningRateMonitor(Callback):
    """Log each optimizer's learning rate (``lr-<Optimizer>``, per param group if several).

    Args:
        logging_interval: "step" (at each log point), "epoch" (each epoch's end) or
            None (follow the schedulers' intervals: "epoch" unless one steps per step).
    """

    def __init__(self, logging_interval: str | None = None) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(
                f"LearningRateMonitor: logging_interval must be None, 'step' or 'epoch', got {logging_interval!r}"
            )
        self.logging_interval = logging_interval

    def learning_rates(self, state: Any) -> dict[str, float]:
        """``{name: lr}`` for every optimizer and param group of ``state``."""
        out: dict[str, float] = {}
        optimizers: Sequence[Any] = state.optimizers
        counts: dict[str, int] = {}
        for opt in optimizers:
            base = f"lr-{type(opt).__name__}"
            counts[base] = counts.get(base, 0) + 1
            name = base if counts[base] == 1 else f"{base}-{counts[base] - 1}"
            groups = opt.param_groups
            for i, group in enumerate(groups):
                out[name if len(groups) == 1 else f"{name}/pg{i + 1}"] = float(group["lr"])
        return out

    def interval(self, state: Any) -> str:
        """The resolved logging interval."""
        if self.logging_interval is not None:
            return self.logging_interval
        return "step" if any(s.interval == "step" for s in state.schedulers) else "epoch"
