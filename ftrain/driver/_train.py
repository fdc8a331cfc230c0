"""The training fold of ``fit``: epochs of batches, with validation, logging and checkpoints.

The decisions are the pure loop parts of ``ftrain.loop`` (stop conditions, the
validation interval, batch positions, the checkpoint reducer); ``Run`` carries out
their effects. Between log, validation and checkpoint points a batch costs the step
itself plus integer bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._batch import move_to_device
from .._callbacks._hooks import batch_start
from .._custom import CustomStep
from .._data._loader import TensorLoader, loader_length
from .._data._prefetch import Prefetcher
from .._data._sources import ValidationData
from .._data._stateful import LoaderPosition
from .._errors import note_position
from .._schedulers import step_epoch_schedulers
from .._seed import STEP_HOLD, ambient_epoch
from .._state import TrainState
from .._step import TrainStep
from ..loop import Position, StopConditions, ValInterval, batches, epoch_batches
from ._evaluate import restore_modes
from ._run import LazyFloats, Run
from ._signals import StopSignals
from ._slurm import requeue_signals
from ._validation import ValidationPass, warn_few_batches, warn_no_batches
from ._wiring import BatchSize, DataSource

__all__ = ["TrainLoop"]

_ASK = object()  # val_counted: ask ValInterval.due at each batch


class TrainLoop:
    """One ``fit`` run's fold over its epochs, with the loop state a resume restores."""

    def __init__(
        self,
        run: Run,
        step: Any,
        val_step: Any,
        train: DataSource,
        val: ValidationData,
        stop: StopConditions,
        interval: ValInterval | None,
        train_modes: list[Any],
        resumed_loop: dict[str, Any],
    ) -> None:
        self.run, self.config, self.dist = run, run.config, run.dist
        self.step, self.val_step, self.train, self.val = step, val_step, train, val
        self.stop, self.interval, self.train_modes = stop, interval, train_modes
        self.validation = ValidationPass(run, val_step, val)
        self.fast = self.config.fast_dev_batches
        self.total_batch_idx = int(resumed_loop.get("total_batch_idx", 0))
        run.val_log_step = int(resumed_loop.get("val_log_step", 0))
        self.epoch_done = bool(resumed_loop.get("epoch_done"))
        self.interrupted = False
        self.signal: str | None = None
        self.deferred: list[tuple[str, dict[str, Any]]] = []
        self.next_val = 0.0
        self.batch_size = BatchSize()
        self.warned_few_batches = False
        val.runs = int(resumed_loop.get("val_runs", 0))
        self.position = LoaderPosition()  # a stateful training loader's saved position
        self.position.restore(resumed_loop.get("data"))
        self.requeue_on = requeue_signals(
            self.config.slurm_auto_requeue, self.config.slurm_requeue_signal
        )
        self.iterator: Any = None
        self.val_counted: Any = None  # this epoch's ValInterval.counted (_open_epoch)
        # (epoch, batch index, global step) of the batch in hand, for error notes
        self.at = (0, 0, 0)
        self.max_steps = stop.max_steps  # -1: none (stop.steps_reached, inlined per batch)
        # A built step seeds all it runs: StepHold may keep the generators' states.
        self.holds = type(step) in (TrainStep, CustomStep) and step.randomness == "step"
        # One process and no clock-based decision (max_time, a time val_check_interval):
        # after a batch, only a signal or a stop request can end the run.
        self.solo_untimed = (
            self.dist.world_size == 1
            and stop.max_seconds is None
            and (interval is None or interval.seconds is None)
        )

    # the fold ----------------------------------------------------------------------

    def fit(self, state: TrainState) -> TrainState:
        """Train from ``state`` until a stop condition; the final state."""
        run = self.run
        if self.interval is not None and self.interval.seconds is not None:
            self.next_val = run.elapsed() + self.interval.seconds
        epoch, start = state.epoch, state.batch_idx
        if self.epoch_done:
            epoch, start = epoch + 1, 0
            state = state.replace(epoch=epoch, batch_idx=0)  # as the loop leaves it
        with StopSignals(extra=self.requeue_on) as signals:
            try:
                while True:
                    if self.stop.reached(epoch=epoch, step=state.step):
                        steps = self.stop.steps_reached(state.step)
                        run.end_reason = "max_steps" if steps else None
                        break
                    if self._stop_before_epoch(signals, epoch, state.step):
                        break
                    state, ended = self._epoch(state, epoch, start, signals)
                    start = 0
                    if ended is None:
                        break
                    epoch += 1
                    state = state.replace(epoch=epoch, batch_idx=0)
                    if ended or self.interrupted:
                        break
            except BaseException as exc:
                epoch_at, batch_at, step_at = self.at
                note_position(exc, epoch=epoch_at, batch_idx=batch_at, step=step_at)
                self._close_iterator()
                run.fail(state, exc)
                raise
            self.signal = signals.requested
        return state

    def _stop_before_epoch(self, signals: StopSignals, epoch: int, step: int) -> bool:
        # Every rank agrees here, after the epoch-end callbacks (early stopping);
        # max_time is rank 0's clock.
        run = self.run
        signalled, request, timed_out = self.dist.agree(
            (
                signals.requested is not None,
                run.stop_requested,
                self.dist.is_main and self.stop.out_of_time(run.elapsed()),
            ),
            step,
            now=True,
        )
        if signalled:
            self.interrupted = True
            return True
        if timed_out:
            # max_time is a stop request: min_epochs/min_steps hold it off (Lightning).
            run.stop_requested = request = True
            run.stop_cause = run.stop_cause or "max_time"
        if request and self.stop.may_stop(epochs_done=epoch, step=step):
            run.end_reason = run.stop_cause
            return True
        return False

    def _loader(self, state: TrainState, epoch: int, start: int) -> tuple[Any, int | None]:
        source = self.train.at(epoch)
        if self.config.randomness == "ambient" and not isinstance(source, TensorLoader):
            loader = ambient_epoch(source, epoch, start)
        else:
            loader = self.position.prepare(
                source,
                seed=state.seed,
                epoch=epoch,
                skip_batches=start,
                rank=self.dist.rank,
                world_size=self.dist.world_size if self.config.use_distributed_sampler else 1,
                processes=self.dist.world_size,
            )
        # The length of this rank's shard (the prepared loader's), not the dataset's.
        n = epoch_batches(loader_length(loader), self.config.limit_train_batches, self.fast)
        if n and self.interval is not None:
            self.interval.check_batch(n)  # a bad interval fails before the first batch
        if not self.warned_few_batches and self.run.loggers and self.dist.is_main:
            self.warned_few_batches = warn_few_batches(n, self.config.log_every_n_steps, self.stop)
        return loader, n

    def _open_epoch(
        self, state: TrainState, epoch: int, start: int
    ) -> tuple[TrainState, int | None, bool, bool] | None:
        """Start an epoch: (state, its batches, batches on the device, from a
        TensorLoader's own iterator), or None when it has no batches."""
        run = self.run
        self.at = (epoch, start, state.step)
        loader, n = self._loader(state, epoch, start)
        if n == 0:
            run.end_reason = "no_data"
            return None
        state = state.replace(epoch=epoch, batch_idx=start, epoch_length=n)
        restore_modes(self.train_modes)
        if run.call("on_train_epoch_start", state=state):
            run.stop_requested = True
        run.bar.train_epoch_start(epoch, n)
        prefetch = self.config.prefetch
        tensors = isinstance(loader, TensorLoader)
        # A TensorLoader's batches are slices of its tensors: already on the device.
        on_device = (prefetch and run.device.type == "cuda") or (
            tensors and all(t.device == run.device for t in loader.tensors)
        )
        self.iterator = Prefetcher(loader, run.device, prefetch) if prefetch else iter(loader)
        # Validation after a quiet batch, by count (a sized epoch's interval was
        # checked above; an unsized one asks ValInterval.due each batch).
        iv = self.interval
        self.val_counted = None if iv is None else _ASK if n is None else iv.counted(epoch, n)
        return state, n, on_device, tensors and not prefetch

    def _epoch(
        self, state: TrainState, epoch: int, start: int, signals: StopSignals
    ) -> tuple[TrainState, bool | None]:
        """One epoch; (state, stop after it), or None for "stop now, without its end"."""
        run, profiler = self.run, self.run.profiler
        opened = self._open_epoch(state, epoch, start)
        if opened is None:
            return state, None
        state, n, on_device, tensors = opened
        batch_idx, is_last, stopped, skipped = start, False, False, False
        source = batches(self.iterator, n, start)
        profiling = profiler.enabled
        quiet = self._quiet(profiling)
        # Nothing between quiet TensorLoader steps draws numbers: StepHold saves once.
        hold = STEP_HOLD if quiet and tensors and self.holds else None
        step, bar_end, bar_values = self.step, run.bar.train_batch_end, run.train_bar_values
        try:
            while n is None or batch_idx < n:
                if profiling:
                    profiler.start("data")
                item = next(source, None)
                if item is None:
                    profiler.stop("data")
                    break
                _, batch, is_last = item
                if is_last and n is None:
                    state = state.replace(epoch_length=batch_idx + 1)
                if not on_device:
                    batch = move_to_device(batch, run.device)
                if profiling:
                    profiler.stop("data")
                if run.callbacks:
                    stop, skipped = batch_start(
                        run.callbacks, state=state, batch=batch, batch_idx=batch_idx
                    )
                    run.stop_requested = run.stop_requested or stop
                    if skipped:  # -1: the rest of this epoch is skipped, as Lightning
                        break
                new = None
                if quiet and not is_last:
                    if hold is not None:
                        hold.on = True
                    new, metrics = step(state, batch)
                    if self._nothing_due(new, state.step, (epoch, batch_idx, n), signals):
                        # The after-batch work of a batch where nothing is due.
                        self.batch_size.batch = batch
                        run.train.update(metrics, self.batch_size)
                        run.epoch_fresh = False
                        bar_end(batch_idx, bar_values)
                        self.total_batch_idx += 1
                        state = new
                        batch_idx += 1
                        continue
                if hold is not None:
                    hold.release()  # before any code but the steps runs
                pos = Position(epoch, batch_idx, self.total_batch_idx, n, is_last)
                if new is None:
                    state, stopped = self._batch(state, batch, pos, signals)
                else:  # trained on the short path, and something is due
                    state, stopped = self._after_batch(state, new, metrics, batch, pos, signals)
                batch_idx += 1
                if stopped:
                    break
        except BaseException:
            self.at = (epoch, batch_idx, state.step)  # the batch in hand, for error notes
            raise
        finally:
            if hold is not None:
                hold.release()
        self.at = (epoch, max(batch_idx - 1, start), state.step)
        self._close_iterator()
        if self.interrupted and not is_last:
            return state, None
        if batch_idx == start == 0 and not skipped:
            warn_no_batches(epoch)
            run.end_reason = "no_data"
            return state, None
        # End of the epoch, also when a limit stopped it mid-way (as Lightning): the
        # epoch counts as done and a resume starts the next one.
        return self._end_epoch(state, epoch, batch_idx, whole=not stopped or is_last), stopped

    def _quiet(self, profiling: bool) -> bool:
        """Whether this epoch's batches may take the short path when nothing is due after
        them: one process without clock-based decisions, no callbacks, LR monitor,
        profiler or fast_dev_run, and validation (if any) counted in batches."""
        run = self.run
        return (
            self.solo_untimed
            and not (profiling or run.callbacks or run.lr_monitors or self.fast)
            and not self.interrupted
        )

    def _nothing_due(
        self, new: TrainState, before: int, pos: tuple[int, int, int | None], signals: StopSignals
    ) -> bool:
        """After a batch that is not its epoch's last, in a quiet epoch: whether nothing
        happens but its bookkeeping (no stop, log point, validation or checkpoint), and
        the step advanced the counters as it must."""
        epoch, batch_idx, n = pos
        if new.batch_idx != batch_idx + 1 or not new.micro_step:
            return False  # _after_batch raises
        if signals.requested is not None or self.run.stop_requested:
            return False
        step = new.step
        if step != before:
            run = self.run
            every = run.log_every
            if (every and step % every == 0) or (self.max_steps != -1 and step >= self.max_steps):
                return False
            if run.checkpoints_on and run.writer.may_act_after_step():
                return False
        counted = self.val_counted
        if counted is None:
            return True
        if counted is _ASK:
            at = Position(epoch, batch_idx, self.total_batch_idx, n, False)
            return not self._validation_due(at, False, False)
        k, across = counted
        return (self.total_batch_idx if across else batch_idx) % k != k - 1

    def _batch(
        self, state: TrainState, batch: Any, pos: Position, signals: StopSignals
    ) -> tuple[TrainState, bool]:
        """Train on one batch and act on what is due after it; (state, stop the epoch)."""
        run, profiler = self.run, self.run.profiler
        lrs_used = run.step_learning_rates(state, state.step + 1) if run.lr_monitors else None
        if profiler.enabled:
            profiler.start("step")
            new, metrics = self.step(state, batch)
            profiler.stop("step")
            profiler.step()
        else:
            new, metrics = self.step(state, batch)
        return self._after_batch(state, new, metrics, batch, pos, signals, lrs_used)

    def _after_batch(
        self,
        old: TrainState,
        state: TrainState,
        metrics: Any,
        batch: Any,
        pos: Position,
        signals: StopSignals,
        lrs_used: dict[str, float] | None = None,
    ) -> tuple[TrainState, bool]:
        """Act on what is due after the batch at ``pos`` took ``old`` to ``state``."""
        run = self.run
        before = old.step
        if state.micro_step == 0 or state.batch_idx != pos.batch_idx + 1:
            raise TypeError(
                "fit: the train step did not advance state.micro_step/batch_idx; wrap a "
                "hand-written step with ftrain.custom_step"
            )
        stepped = state.step != before
        self.batch_size.batch = batch
        run.train.update(metrics, self.batch_size)
        run.epoch_fresh = False
        if run.callbacks and run.call(
            "on_train_batch_end",
            state=state,
            metrics=run.plain(metrics),
            batch=batch,
            batch_idx=pos.batch_idx,
        ):
            run.stop_requested = True
        stopping, val_due = self._agree_after_batch(state, pos.epoch, signals)
        log_step = state.step - 1 if stepped else state.step
        if stepped and run.step_log_due(state.step, stopping):
            run.log_step_values(state, pos.epoch, log_step, lrs_used)
            run.bar.log_point(pos.batch_idx, state.step, run.train_bar_values)
        run.bar.train_batch_end(pos.batch_idx, run.train_bar_values)
        self.total_batch_idx += 1
        # A checkpoint due at the epoch's last batch is written after the epoch's end
        # (its logs, callbacks, schedulers): a resume from it then starts the next
        # epoch and never logs the epoch's values twice. Also on an interrupt: the
        # resumed run would log the epoch's values at a step below the one it purges
        # from, beside what this run logged there.
        max_steps = self.max_steps != -1 and state.step >= self.max_steps
        ends_epoch = pos.is_last or (not self.interrupted and (stopping or max_steps))
        if self._validation_due(pos, stopping, val_due):
            self._validate(state, log_step, pos.epoch, defer=ends_epoch)
            restore_modes(self.train_modes)
            # A stop asked for by this validation (early stopping) ends the epoch
            # after this batch, as Lightning's should_stop does. The metrics are
            # reduced across ranks, so every rank decides alike.
            if not stopping and run.stop_requested and self._may_stop(pos.epoch, state):
                stopping = ends_epoch = True
        if stepped and run.checkpoints_on:
            if ends_epoch:
                self.deferred.append(("train_step", run.callback_metrics()))
            elif run.writer.may_act_after_step():  # most steps: nothing can be due
                run.checkpoint("train_step", state, self.payload(state, False))
        if stopping or max_steps:
            run.end_reason = run.stop_cause if stopping else "max_steps"
        return state, stopping or max_steps

    def _close_iterator(self) -> None:
        if isinstance(self.iterator, Prefetcher):
            self.iterator.close()

    def _may_stop(self, epoch: int, state: TrainState) -> bool:
        return self.stop.may_stop(epochs_done=epoch, step=state.step)

    def _agree_after_batch(
        self, state: TrainState, epoch: int, signals: StopSignals
    ) -> tuple[bool, bool]:
        """(stop after this batch, a time-based validation is due), as all ranks agree.

        A stop request (signal, time, callback) ends the run after this batch; across
        processes, after the first batch where the ranks agree on it (every
        agree_every_n_batches batches; max_time is rank 0's clock).
        """
        run = self.run
        if self.solo_untimed and signals.requested is None and not run.stop_requested:
            return self.interrupted, False  # one process, no clock: nothing to agree on
        main = self.dist.is_main
        seconds = None if self.interval is None else self.interval.seconds
        signalled, request, timed_out, val_due = self.dist.agree(
            (
                signals.requested is not None,
                run.stop_requested,
                main and self.stop.out_of_time(run.elapsed()),
                main and seconds is not None and run.elapsed() >= self.next_val,
            ),
            state.micro_step,
        )
        if signalled:
            self.interrupted = True
        if timed_out:
            run.stop_requested = True
            run.stop_cause = run.stop_cause or "max_time"
        stopping = self.interrupted or ((request or timed_out) and self._may_stop(epoch, state))
        if val_due and seconds is not None:
            self.next_val = run.elapsed() + seconds
        return stopping, val_due

    def _validation_due(self, pos: Position, stopping: bool, time_due: bool) -> bool:
        if self.interval is None or self.interrupted:
            return False
        return self.interval.due(pos, stopping=stopping, time_due=time_due)

    def _end_epoch(self, state: TrainState, epoch: int, batch_idx: int, whole: bool) -> TrainState:
        run = self.run
        self.dist.reduce_epoch_values(run.train)  # sync_dist sums and weights, all ranks
        values = run.end_train_epoch(state, epoch)
        metrics = LazyFloats(run.callback_metrics())
        if run.call("on_train_epoch_end", state=state, metrics=metrics):
            run.stop_requested = True
        run.log_callback_values(epoch, max(state.step - 1, 0))
        if whole:
            # Epoch-interval schedulers step only after a whole epoch (Lightning: not
            # when max_steps or a stop request cut the epoch short).
            step_epoch_schedulers(state.schedulers, metrics, epoch)
        run.show_epoch_end(values, state.step)
        state = state.replace(batch_idx=batch_idx)
        run.profiler.start("checkpoint")
        for stage, metrics_then in self.deferred:
            run.checkpoint(stage, state, self.payload(state, True), metrics_then)
        self.deferred.clear()
        run.checkpoint("train_epoch_end", state, self.payload(state, True))
        run.profiler.stop("checkpoint")
        return state

    # validation --------------------------------------------------------------------

    def _validate(self, state: TrainState, log_step: int, epoch: int, defer: bool) -> None:
        run = self.run
        self.validation(state, log_step, epoch)
        if defer:
            if run.checkpoints_on:
                self.deferred.append(("validation_end", run.callback_metrics()))
            return
        run.profiler.start("checkpoint")
        run.checkpoint("validation_end", state, self.payload(state, False))
        run.profiler.stop("checkpoint")

    # checkpoint payload ---------------------------------------------------------------

    def payload(self, state: TrainState, epoch_done: bool) -> Callable[[], dict[str, Any]]:
        """What a checkpoint stores besides the state, built only when one is written."""

        def build() -> dict[str, Any]:
            out = self.run.payload(
                state,
                {
                    "total_batch_idx": self.total_batch_idx,
                    "val_log_step": self.run.val_log_step,
                    "val_runs": self.val.runs,
                    "data": self.position.saved(state.batch_idx, epoch_done),
                    "epoch_done": epoch_done,
                    "run_id": self.run.writer.claim.run_id,
                    "lineage": self.run.writer.lineage,
                },
            )
            self.run.call("on_save_checkpoint", state=state, checkpoint=out)
            return out

        return build
