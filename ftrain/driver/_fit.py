"""``fit``: the training fold with Lightning's Trainer controls, and its thin driver.

The fold is ``state, metrics = step(state, batch)`` over the epochs' batches. The
questions "validate now?", "stop now?", "log now?" are answered by the pure
functions of ``_schedules``; everything impure (devices, data order, loggers,
progress bar, checkpoint files, signals, the clock) is held by ``Run`` and done at
log, validation and checkpoint points only. Between those points a step costs the
step itself plus integer bookkeeping.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch

from .._config import FitConfig, flag_name_error
from .._data._sources import ValidationData, check_eval_data, check_train_data
from .._devices import resolve_accelerator, resolve_devices
from .._seed import set_deterministic
from .._state import TrainState
from .._summary import model_summary
from .._warn import user_stacklevel
from ..loggers import as_loggers
from ..loop import CheckpointReducer, StopConditions, ValInterval, stop_conditions, val_interval
from ..tune._auto import check_fit_tuning, tune_for_fit
from ._distributed import DistEnv, setup_distributed
from ._evaluate import eval_with_precision, model_modes
from ._profiler import make_profiler
from ._progress import ProgressBar
from ._result import FitResult
from ._resume import (
    checkpoint_dirs,
    find_ckpt,
    hpc_ckpt_path,
    resolve_policies,
    resume,
    search_dirs,
)
from ._resume_source import describe
from ._run import LazyFloats, Run
from ._rundir import check_root, claim_dirs
from ._slurm import requeue_and_exit
from ._train import TrainLoop
from ._wiring import DataSource, build_step, move_state
from ._writer import CheckpointWriter, announce

__all__ = ["FitResult", "fit"]


def fit(
    state: TrainState,
    train_step: Any,
    train_data: Iterable[Any] | Callable[[int], Iterable[Any]],
    *,
    val_step: Any = None,
    val_data: Iterable[Any] | Callable[[int], Iterable[Any]] | None = None,
    ckpt_path: str | os.PathLike[str] | None = None,
    checkpoint: Any = None,
    logger: Any = True,
    callbacks: Sequence[Any] = (),
    hparams: Mapping[str, Any] | None = None,
    config: FitConfig | None = None,
    clock: Callable[[], float] = time.monotonic,
    **flags: Any,
) -> FitResult:
    """Train: fold ``train_step`` over ``train_data`` with Lightning's Trainer controls.

    Args:
        state: the initial state (consumed: use the returned one).
        train_step: ``(state, batch) -> (state, metrics)``, e.g. from ``train_step``.
        train_data: an iterable of batches (a DataLoader, a ``TensorLoader``, any
            iterable), or a factory ``epoch -> iterable`` (re-called every
            ``reload_dataloaders_every_n_epochs`` epochs).
        val_step: ``eval_step(fn)`` or ``(state, batch) -> (state, metrics)``.
        val_data: validation batches, or a factory.
        ckpt_path: resume from a path, "last" or "best".
        checkpoint: a checkpoint policy (``ft.checkpoint.ModelCheckpoint``, ``top_k``,
            ...), a list of them, or None for the default (newest epoch kept).
        logger: True (TensorBoard), False, a logger, or a list of loggers.
        callbacks: objects with hook methods (``ft.Callback``), e.g. ``EarlyStopping``.
        hparams: hyperparameters recorded by the loggers.
        config: a ``FitConfig``; ``**flags`` override its fields.
        clock: seconds, for ``max_time`` (injectable in tests).
        **flags: any ``FitConfig`` field: ``max_epochs``, ``max_steps``, ``max_time``,
            ``val_check_interval``, ``accumulate_grad_batches``, ``precision``, ...

    Returns:
        A ``FitResult``.

    Raises:
        ValueError, TypeError: a bad flag or combination, before anything runs.
    """
    message = flag_name_error(flags, FitConfig.flag_names(), "fit")
    if message:
        raise TypeError(message)
    config = (config or FitConfig()).replace(**flags) if flags else (config or FitConfig())
    if not isinstance(state, TrainState):
        raise TypeError(f"fit: state must be a TrainState, got {type(state).__name__}")
    if not callable(train_step):
        raise TypeError(f"fit: train_step must be callable, got {type(train_step).__name__}")
    if val_step is None and val_data is not None:
        raise ValueError("fit: val_data was given without val_step")
    check_train_data(train_data, scale_batch_size=config.auto_scale_batch_size not in (None, False))
    if val_data is not None:
        check_eval_data("val_data", val_data, factories=True)

    dist = setup_distributed(config)
    if dist.launched_here:
        return dist.launch(
            fit,
            state,
            train_step,
            train_data,
            val_step=val_step,
            val_data=val_data,
            ckpt_path=ckpt_path,
            checkpoint=checkpoint,
            logger=logger,
            callbacks=callbacks,
            hparams=hparams,
            config=config,
            clock=clock,
        )
    if config.barebones:
        if logger not in (True, False, None):
            raise ValueError("fit: barebones=True runs without loggers; do not pass logger=")
        config = config.replace(
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        logger = False
    anomaly = torch.is_anomaly_enabled()
    if config.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)
    try:
        return _fit(
            state,
            train_step,
            train_data,
            val_step,
            val_data,
            ckpt_path,
            checkpoint,
            logger,
            callbacks,
            hparams,
            config,
            clock,
            dist,
        )
    finally:
        torch.autograd.set_detect_anomaly(anomaly)
        dist.teardown()


def _fit(
    state: TrainState,
    train_step: Any,
    train_data: Any,
    val_step: Any,
    val_data: Any,
    ckpt_path: Any,
    checkpoint: Any,
    logger: Any,
    callbacks: Sequence[Any],
    hparams: Mapping[str, Any] | None,
    config: FitConfig,
    clock: Callable[[], float],
    dist: DistEnv,
) -> FitResult:
    """``fit`` in one process: the loop parts composed, their effects carried out."""
    check_fit_tuning(config, train_data, dist.world_size)
    step_fn = build_step(train_step, config)
    val_fn = (
        eval_with_precision(val_step, config.resolved_precision) if val_step is not None else None
    )
    set_deterministic(config.deterministic, config.benchmark)
    validating = val_fn is not None and val_data is not None and config.limit_val_batches != 0
    interval = val_interval(config.val_check_interval, config.check_val_every_n_epoch)
    run = _make_run(config, dist, logger, checkpoint, callbacks, clock, interval, validating)
    run.call("setup", stage="fit", state=state)
    state = state.replace(seed=config.seed if config.seed is not None else state.seed)
    state, modes, resumed = _start(state.replace(rank=dist.rank), step_fn, ckpt_path, run)
    if config.auto_lr_find or config.auto_scale_batch_size not in (None, False):
        say = run.bar.print if run.bar.enabled else print
        train_data = tune_for_fit(
            state, step_fn, train_data, config, resumed=resumed is not None, say=say
        )
    log_dir = run.loggers[0].log_dir if run.loggers else None
    run.profiler = make_profiler(config.profiler, log_dir or run.root)
    if hparams and dist.is_main:
        run.log_hparams({**hparams})
    run.call("resolve", config=config)
    run.call("on_fit_start", state=state)
    every = config.reload_dataloaders_every_n_epochs
    loop = TrainLoop(
        run,
        step_fn,
        val_fn,
        DataSource(train_data, every),
        ValidationData(val_data, state.seed, every),
        _stop_conditions(config, dist),
        _fast_dev_interval(interval, config) if validating else None,
        modes,
        resumed or {},
    )
    sanity = config.num_sanity_val_steps
    if validating and sanity != 0 and resumed is None and not config.fast_dev_batches:
        loop.validation.sanity_check(state, sanity)
    # max_time counts from here, as Lightning's Timer: setup and the sanity check are free.
    run.started = clock()
    run.call("on_train_start", state=state)
    return _finish(loop.fit(state), loop, run)


def _make_run(
    config: FitConfig,
    dist: DistEnv,
    logger: Any,
    checkpoint: Any,
    callbacks: Sequence[Any],
    clock: Callable[[], float],
    interval: ValInterval,
    validating: bool,
) -> Run:
    """The driver's side of the run: device, loggers, checkpoint writer, bar."""
    accelerator = resolve_accelerator(config.accelerator)
    resolve_devices(accelerator, config.devices)
    root = os.fspath(config.default_root_dir or os.getcwd())
    fast = config.fast_dev_batches
    # Ranks other than 0 get mirrors: rank 0's folders, no writes.
    loggers = [] if fast else dist.loggers(as_loggers(logger, root))
    policies = resolve_policies(checkpoint, config, config.enable_checkpointing and not fast)
    # Lightning's rule for epoch-triggered saves: at the training epoch's end unless
    # validation runs on another rhythm than once per epoch.
    reducer = CheckpointReducer(policies).resolve(not validating or interval.at_epoch_end)
    writer = CheckpointWriter(reducer, dist, background=config.async_checkpointing)
    run = Run(config, dist, dist.device(accelerator), loggers, callbacks, writer, clock, root)
    run.bar = ProgressBar.auto(config.enable_progress_bar and dist.is_main)
    return run


def _fast_dev_interval(interval: ValInterval, config: FitConfig) -> ValInterval:
    # fast_dev_run validates at the end of its one short epoch (a count-based interval).
    if config.fast_dev_batches and interval.seconds is None:
        return val_interval(None, config.check_val_every_n_epoch)
    return interval


def _stop_conditions(config: FitConfig, dist: DistEnv) -> StopConditions:
    stop = stop_conditions(config=config)
    if config.max_epochs is None and stop.max_epochs == 1000 and dist.is_main:
        warnings.warn(
            "fit: max_epochs was not set, so training stops after 1000 epochs (Lightning's "
            "default); set max_epochs=-1 to train without an end",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return stop


def _start(
    state: TrainState, step: Any, ckpt_path: Any, run: Run
) -> tuple[TrainState, list[tuple[torch.nn.Module, bool]], dict[str, Any] | None]:
    """The state on its device, wrapped, resumed: (state, train modes, resumed loop)."""
    config, dist, bar = run.config, run.dist, run.bar
    move_state(state, run.device)
    if dist.is_main and config.enable_model_summary and not config.fast_dev_batches:
        announce(bar, model_summary(state.model))
    # Wrapped before the resume: an FSDP model loads its shards once sharded.
    state = dist.wrap(state, step)
    # Each module trains in the mode it had when fit began (a submodule the user froze
    # with .eval() stays so), as Lightning >= 2.2; evaluation runs restore these modes.
    modes = model_modes(state)
    if ckpt_path is None and dist.restarted:
        ckpt_path = "last"  # a worker group restarted by torchrun resumes by itself
    ckpt_path = hpc_ckpt_path(ckpt_path, run.root)
    payload: Mapping[str, Any] | None = None
    policies = list(run.writer.reducer.policies)
    if ckpt_path is not None:
        dirs = search_dirs(policies, run.root, run.loggers)
        # Rank 0 picks the file; every rank loads it.
        path = dist.share(lambda: find_ckpt(os.fspath(ckpt_path), dirs, policies, run.loggers))
        if path is not None:
            state, payload = resume(state, path, run, run.device)
            if dist.is_main:
                announce(bar, describe(path, payload))
            if os.fspath(ckpt_path) in ("last", "best"):
                # Found by the policies' own rules, the file stays under them (a top-k
                # file resumed from is evicted when k better ones exist, as without the
                # restart); only a file named by the user is never deleted.
                run.writer.resumed_from = None
    if dist.is_main and (run.loggers or policies):
        check_root(run.root, run.loggers, policies)
    dist.share_logger_dirs(run.loggers)
    sharded = bool(getattr(dist, "sharded", False))
    run.writer.dirs = checkpoint_dirs(policies, run.root, run.loggers, sharded=sharded)
    claim_dirs(run.writer.claim, policies, run.writer.dirs, hold=dist.is_main)
    if payload is None:
        run.writer.start_fresh(warn=dist.is_main)
        return state, modes, None
    run.writer.recover(payload.get("policies"))
    return state, modes, dict(payload.get("loop") or {})


def _finish(state: TrainState, loop: TrainLoop, run: Run) -> FitResult:
    """The last checkpoint event, loggers and bar closed, the result."""
    dist, bar, profiler, interrupted = run.dist, run.bar, run.profiler, loop.interrupted
    try:
        if interrupted:
            if dist.is_main:
                announce(bar, f"Detected {loop.signal}: stopping after the current step and saving")
            run.checkpoint("interrupt", state, loop.payload(state, False))
        else:
            run.call("on_train_end", state=state)
            run.checkpoint("fit_end", state, loop.payload(state, False))
    except BaseException as exc:
        run.writer.files.abandon(exc)
        run.writer.claim.release()
        raise
    run.writer.files.close()  # every file is on disk before fit returns
    run.writer.claim.release()
    bar.close()
    profiler.close()
    for lg in run.loggers:
        lg.finalize("interrupted" if interrupted else "success")
    if interrupted and loop.requeue_on:
        _requeue(state, loop, run)
    best, best_score, last = run.writer.best_and_last()
    result = FitResult(
        state=dist.unwrap(state),
        metrics=dict(LazyFloats(run.callback_metrics()).items()),
        best_checkpoint=best,
        best_model_score=best_score,
        last_checkpoint=last,
        interrupted=interrupted,
        stop_reason="interrupted" if interrupted else run.end_reason or "max_epochs",
        log_dir=run.loggers[0].log_dir if run.loggers else None,
        profile=profiler.summary() if profiler.enabled else None,
    )
    if profiler.enabled and dist.is_main:
        announce(bar, profiler.report())
    run.call("on_fit_end", state=result.state, result=result)
    run.call("teardown", stage="fit", state=result.state)
    return result


def _requeue(state: TrainState, loop: TrainLoop, run: Run) -> None:
    """SLURM: a requeue signal saves ``hpc_ckpt_N.ckpt``, requeues the job and exits."""
    requeue = loop.signal in {s.name for s in loop.requeue_on}
    if run.dist.agree((requeue,), state.micro_step, now=True)[0]:
        save = partial(
            run.dist.save_checkpoint, state, extra=loop.payload(state, False), weights_only=False
        )
        requeue_and_exit(save, run.root, run.dist.is_main, say=partial(announce, run.bar))
