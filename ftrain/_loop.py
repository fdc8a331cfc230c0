"""``fit``: the training fold with Lightning's Trainer controls, and its thin driver.

The fold is ``state, metrics = step(state, batch)`` over the epochs' batches. The
questions "validate now?", "stop now?", "log now?" are answered by the pure
functions of ``_schedules``; everything impure (devices, data order, loggers,
progress bar, checkpoint files, signals, the clock) is held by ``_Run`` and done at
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

import attrs
import torch

from ._callbacks import EarlyStopping, LearningRateMonitor
from ._combinators import apply_fit_flags, clip_grad_norm, clip_grad_value
from ._config import FitConfig, flag_name_error
from ._data import TensorLoader, batch_size_of, loader_length, move_to_device
from ._devices import resolve_accelerator, resolve_devices
from ._distributed import DistEnv, setup_distributed
from ._errors import note_position
from ._evaluate import eval_sources, floats, run_eval
from ._hooks import batch_start, eval_batch_hooks
from ._metrics import MetricCollector, to_float
from ._prefetch import Prefetcher
from ._profiler import make_profiler
from ._resume_source import describe, find_checkpoint
from ._rundir import (
    NameTaken,
    RunClaim,
    check_root,
    claim_dirs,
    fresh_policy_state,
    lineage_of,
    others_alive,
    owned_names,
    split_by_lineage,
    with_foreign,
)
from ._schedules import (
    can_stop_early,
    is_max_reached,
    limit_batches,
    should_validate,
    val_check_batch,
)
from ._seed import ambient_epoch, rng_states, set_deterministic, set_rng_states
from ._signals import StopSignals
from ._slurm import hpc_checkpoints, requeue_and_exit, requeue_signals, slurm_detected
from ._sources import ValidationData, check_eval_data, check_train_data
from ._state import TrainState
from ._stateful import LoaderPosition
from ._step import EvalStep, _number
from ._summary import model_summary
from ._timer import Timer
from ._warn import user_stacklevel

__all__ = ["FitResult", "fit"]


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
            "max_time"), "callback" (another
            callback's stop request), "interrupted" (SIGINT/SIGTERM) or "no_data"
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


def _is_factory(data: Any) -> bool:
    return callable(data) and not hasattr(data, "__iter__")


def _build_step(step: Any, config: FitConfig) -> Any:
    """Apply the accumulate/clip/precision/randomness flags to the step (never twice)."""
    clip_val = config.gradient_clip_val
    clip = None
    if clip_val is not None and clip_val > 0:
        value = _number("gradient_clip_val", clip_val)
        clip = (
            clip_grad_norm(value) if config.clip_algorithm() == "norm" else clip_grad_value(value)
        )
    return apply_fit_flags(
        step, config.accumulate_grad_batches, clip, config.precision, config.randomness
    )


def _eval_with_precision(step: Any, config: FitConfig) -> Any:
    from ._precision import parse_precision

    precision = parse_precision(config.precision)
    if (
        isinstance(step, EvalStep)
        and step.precision.name == "32-true"
        and precision.name != "32-true"
    ):
        return step.with_(precision=precision)
    return step


def _move_state(state: TrainState, device: torch.device) -> None:
    for model in state.models:
        model.to(device)
    for opt in state.optimizers:
        for per_param in opt.state.values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and key != "step" and value.device != device:
                    per_param[key] = value.to(device)


class _LazyFloats(Mapping[str, float]):
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


class _Run:
    """The impure half of ``fit``: devices, loggers, bar, checkpoints, callbacks, clock."""

    def __init__(
        self,
        config: FitConfig,
        dist: DistEnv,
        device: torch.device,
        loggers: list[Any],
        callbacks: Sequence[Any],
        policies: list[Any],
        clock: Callable[[], float],
        root: str,
    ) -> None:
        self.config = config
        self.dist = dist
        self.device = device
        self.loggers = loggers
        self.callbacks = list(callbacks)
        self.policies = policies
        self.policy_states: list[Any] = [p.init() for p in policies]
        self.policy_dirs: list[str] = []
        self.clock = clock
        self.root = root
        self.elapsed_before = 0.0
        self.started = clock()
        self.train = MetricCollector("train")
        self.val_values: dict[str, Any] = {}
        self.train_epoch_values: dict[str, Any] = {}
        self.epoch_fresh = False  # the epoch values are newer than any step value
        self.bar: Any = None  # set once the progress bar exists (verbose checkpoint messages)
        self.resumed_from: str | None = None  # a path the user named is never deleted
        self.val_log_step = 0  # x of per-batch validation values, across validation runs
        # Validation and epoch values of the run a resume continues, as floats; they
        # count until this run has its own (policies and callbacks see them meanwhile).
        self.restored_metrics: dict[str, dict[str, float]] = {"val": {}, "epoch": {}}
        # Rows logged at the highest step so far: a checkpoint at that step stores them
        # (a resume drops logged rows at steps >= the checkpoint's step, then replays).
        self.log_tail: list[tuple[dict[str, Any], int]] = []
        self.last_saved: str | None = None
        self.created: set[str] = set()  # checkpoint paths this run wrote
        self.claim = RunClaim()  # this run's locks in its checkpoint folders
        self.lineage = [self.claim.run_id]  # this run's id after those it continues
        self.stop_requested = False
        self.stop_cause: str | None = None  # what first asked to stop (FitResult.stop_reason)
        self.end_reason: str | None = None
        self.logged_hparams = False
        self.lr_monitors = [c for c in self.callbacks if isinstance(c, LearningRateMonitor)]
        self.warned_few_batches = False
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

    def callback_values(self, state: Any) -> dict[str, Any]:
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

    # checkpoints --------------------------------------------------------------------

    def checkpoint_event(
        self,
        stage: str,
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Fold one event through the policies; ``metrics``: the values to decide on
        (default: the current ``callback_metrics``)."""
        if not self.policies:
            return
        if stage == "train_step" and not any(
            p.may_act(s, stage) for p, s in zip(self.policies, self.policy_states, strict=True)
        ):
            return  # the per-step fast path: no event, no metric mapping built
        from .checkpoint import Event

        # One epoch convention throughout: the epoch of the last trained batch (at an
        # epoch boundary the counters already point at the next epoch).
        epoch = state.epoch - 1 if state.batch_idx == 0 and state.epoch > 0 else state.epoch
        event = Event(
            stage=stage,
            step=state.step,
            epoch=epoch,
            batch_idx=state.batch_idx,
            elapsed=self.elapsed(),
            metrics=_LazyFloats(
                {
                    **(self.callback_metrics() if metrics is None else metrics),
                    "epoch": epoch,
                    "step": state.step,
                }
            ),
        )
        if stage != "train_step":  # every rank is here (no per-rank fast path)
            extra = self.dist.with_rank_state(state, extra)
        for i, policy in enumerate(self.policies):
            while True:
                before = self.policy_states[i]
                self.policy_states[i], actions = policy.update(before, event)
                try:
                    self.apply_actions(i, actions, state, extra, owned_names(before))
                    break
                except NameTaken as taken:  # another run wrote that name meanwhile
                    self.policy_states[i] = with_foreign(before, [taken.name])

    def apply_actions(
        self,
        i: int,
        actions: Sequence[Any],
        state: TrainState,
        extra: Callable[[], dict[str, Any]],
        owned: set[str],
    ) -> None:
        from .checkpoint import Delete, Save

        # Under FSDP every rank writes its shard, so every rank carries out rank 0's
        # decision; otherwise rank 0 alone writes and no collective is needed.
        actions = self.dist.share_actions(list(actions))
        dirpath = self.policy_dirs[i]
        saves = [a for a in actions if isinstance(a, Save)]
        deletes = [a for a in actions if isinstance(a, Delete)]
        if saves and self.dist.is_main:
            # A resume keeps the logged rows below the checkpoint's step and replays the
            # rest, so everything logged so far must be on disk before the file commits.
            for lg in self.loggers:
                lg.flush()
        for action in saves:
            path = os.path.join(dirpath, action.name)
            linked = action.link_to is not None and self.dist.link_checkpoint(
                os.path.join(dirpath, action.link_to), path
            )
            if not linked:
                # A name this run does not own yet is a new file: never replace one on disk.
                mine = action.name in owned or path in self.created
                try:
                    self.dist.save_checkpoint(
                        state,
                        path,
                        partial(_with_info, extra, action.info),
                        weights_only=self.policies[i].save_weights_only,
                        overwrite=mine,
                    )
                except FileExistsError:
                    raise NameTaken(action.name) from None
            self.created.add(path)
            self.last_saved = path
            if self.policies[i].verbose and self.dist.is_main:
                info = action.info
                score = "" if info.score is None else f" (score {info.score:.6g})"
                _say(self.bar, f"Epoch {info.epoch}, global step {info.step}: saving {path}{score}")
        for deletion in deletes:
            path = os.path.join(dirpath, deletion.name)
            if path != self.resumed_from:
                self.dist.remove_checkpoint(path)

    def best_and_last(self) -> tuple[str | None, float | None, str | None]:
        """The first policy's best file and score, and the newest file written."""
        for i, policy in enumerate(self.policies):
            name = policy.best(self.policy_states[i])
            if name is not None:
                score = policy.best_score(self.policy_states[i])
                return os.path.join(self.policy_dirs[i], name), score, self.last_saved
        return None, None, self.last_saved


def _with_info(extra: Callable[[], dict[str, Any]], info: Any) -> dict[str, Any]:
    return {**extra(), "checkpoint_info": info.to_dict()}


def _resolve_policies(checkpoint: Any, config: FitConfig, enabled: bool) -> list[Any]:
    if not enabled:
        if checkpoint not in (None, False) and not config.fast_dev_run:
            raise ValueError(
                "fit: enable_checkpointing=False but a checkpoint policy was given; use one"
            )
        return []
    from .checkpoint import default_policy

    if checkpoint is None:
        return [default_policy()]
    if checkpoint is False:
        return []
    if isinstance(checkpoint, (list, tuple)):
        return list(checkpoint)
    return [checkpoint]


def _checkpoint_dirs(policies: list[Any], root: str, loggers: list[Any]) -> list[str]:
    dirs = []
    for policy in policies:
        if policy.dirpath is not None:
            dirs.append(os.fspath(policy.dirpath))
        elif loggers and loggers[0].log_dir is not None:
            dirs.append(os.path.join(loggers[0].log_dir, "checkpoints"))
        else:
            dirs.append(os.path.join(root, "checkpoints"))
    for d in dirs:
        if os.path.exists(d) and not os.path.isdir(d):
            raise ValueError(f"checkpoint dirpath {d!r} exists and is a file, not a directory")
    return dirs


def _search_dirs(policies: list[Any], root: str, loggers: list[Any]) -> list[str]:
    """Directories where this run's checkpoints may be, without resolving a logger version."""
    dirs = [os.fspath(p.dirpath) for p in policies if p.dirpath is not None]
    dirs.append(os.path.join(root, "checkpoints"))
    for lg in loggers[:1]:
        save_dir, name = getattr(lg, "save_dir", None), getattr(lg, "name", None)
        base = os.path.join(save_dir, name) if save_dir and name else None
        if base and os.path.isdir(base):
            for version in sorted(os.listdir(base)):
                dirs.append(os.path.join(base, version, "checkpoints"))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _find_ckpt(
    ckpt_path: str, dirs: list[str], policies: list[Any], loggers: Any = ()
) -> str | None:
    lg = loggers[0] if loggers else None
    save_dir, name = getattr(lg, "save_dir", None), getattr(lg, "name", None)
    base = os.path.join(save_dir, name) if save_dir and name else None
    return find_checkpoint(ckpt_path, dirs, policies, base)


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
        train_data: an iterable of batches (a DataLoader, a ``TensorLoader``,
            ``RandomWindows``, any re-iterable object), ``per_epoch(fn)`` (or a bare
            ``fn``) with ``fn(epoch) -> iterable`` re-called every
            ``reload_dataloaders_every_n_epochs`` epochs, or with
            ``auto_scale_batch_size`` ``per_batch_size(fn)``.
        val_step: ``eval_step(fn)`` or ``(state, batch) -> (state, metrics)``.
        val_data: validation batches, several sets (``{name: loader}`` or a list of
            loaders), ``per_epoch(fn)``, or ``per_validation(fn)`` with
            ``fn(seed) -> data`` called at every validation run.
        ckpt_path: resume from a path, "last", "best", or "hpc" (the newest
            ``hpc_ckpt_N.ckpt`` a SLURM requeue saved in ``default_root_dir``, else "last").
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
    from .tune._auto import check_fit_tuning, tune_for_fit

    check_fit_tuning(config, train_data, dist.world_size)
    step_fn = _build_step(train_step, config)
    val_fn = _eval_with_precision(val_step, config) if val_step is not None else None
    set_deterministic(config.deterministic, config.benchmark)
    accelerator = resolve_accelerator(config.accelerator)
    resolve_devices(accelerator, config.devices)
    device = dist.device(accelerator)
    root = os.fspath(config.default_root_dir or os.getcwd())
    fast = config.fast_dev_batches
    seed = config.seed if config.seed is not None else state.seed
    state = state.replace(seed=seed, rank=dist.rank)

    from .loggers import as_loggers

    # Ranks other than 0 get mirrors: rank 0's folders, no writes.
    loggers = [] if fast else dist.loggers(as_loggers(logger, root))
    policies = _resolve_policies(checkpoint, config, config.enable_checkpointing and not fast)
    validating = val_fn is not None and val_data is not None and config.limit_val_batches != 0
    # Lightning's rule for epoch-triggered saves: at the training epoch's end unless
    # validation runs on another rhythm than once per epoch.
    if not validating:
        on_epoch_end = True
    elif config.check_val_every_n_epoch != 1:
        on_epoch_end = False
    else:
        on_epoch_end = config.val_check_interval in (None, 1.0)
    policies = [p.resolve(save_on_train_epoch_end=on_epoch_end) for p in policies]
    run = _Run(config, dist, device, loggers, callbacks, policies, clock, root)
    run.call("setup", stage="fit", state=state)

    from ._progress import ProgressBar

    bar = ProgressBar.auto(config.enable_progress_bar and dist.is_main)
    run.bar = bar

    # Device and resume, before anything resolves a logger's version directory ---------
    _move_state(state, device)
    if dist.is_main and config.enable_model_summary and not fast:
        _say(bar, model_summary(state.model))
    # Wrapped before the resume: an FSDP model loads its shards once sharded.
    state = dist.wrap(state, step_fn)
    # Each module trains in the mode it had when fit began (a submodule the user froze
    # with .eval() stays so), as Lightning >= 2.2; evaluation runs restore these modes.
    train_modes = [(m, m.training) for model in state.models for m in model.modules()]
    resumed = False
    extra_loop: Mapping[str, Any] = {}
    payload: Mapping[str, Any] = {}
    if ckpt_path is None and dist.restarted:
        ckpt_path = "last"  # a worker group restarted by torchrun resumes by itself
    ckpt_path = _hpc_ckpt_path(ckpt_path, root)
    if ckpt_path is not None:
        dirs = _search_dirs(policies, root, loggers)
        # Rank 0 picks the file; every rank loads it.
        path = dist.share(lambda: _find_ckpt(os.fspath(ckpt_path), dirs, policies, loggers))
        if path is not None:
            state, payload = _resume(state, path, run, device)
            if dist.is_main:
                _say(bar, describe(path, payload))
            if os.fspath(ckpt_path) in ("last", "best"):
                # Found by the policies' own rules, the file stays under them (a top-k
                # file resumed from is evicted when k better ones exist, as without the
                # restart); only a file named by the user is never deleted.
                run.resumed_from = None
            extra_loop = payload.get("loop") or {}
            resumed = True
    if dist.is_main and (loggers or policies):
        check_root(root, loggers, policies)
    dist.share_logger_dirs(loggers)
    run.policy_dirs = _checkpoint_dirs(policies, root, loggers)
    claim_dirs(run.claim, policies, run.policy_dirs, hold=dist.is_main)
    if resumed:
        _recover_policies(run, payload)
    else:
        run.policy_states = [
            fresh_policy_state(p, d, warn=dist.is_main)
            for p, d in zip(policies, run.policy_dirs, strict=True)
        ]
    if config.auto_lr_find or config.auto_scale_batch_size not in (None, False):
        say = bar.print if bar.enabled else print
        train_data = tune_for_fit(state, step_fn, train_data, config, resumed=resumed, say=say)
    profiler = make_profiler(
        config.profiler, loggers[0].log_dir if loggers and loggers[0].log_dir else root
    )

    max_epochs = config.resolved_max_epochs()
    if config.max_epochs is None and max_epochs == 1000 and dist.is_main:
        warnings.warn(
            "fit: max_epochs was not set, so training stops after 1000 epochs (Lightning's "
            "default); set max_epochs=-1 to train without an end",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    max_steps = config.resolved_max_steps()
    min_epochs = config.resolved_min_epochs()
    max_seconds = config.max_time_seconds()
    val_seconds = config.val_check_seconds()  # a time-based val_check_interval

    if hparams and dist.is_main:
        run.log_hparams({**hparams})
    run.call("resolve", config=config)
    run.call("on_fit_start", state=state)

    interrupted = False
    total_batch_idx = int(extra_loop.get("total_batch_idx", 0))
    run.val_log_step = int(extra_loop.get("val_log_step", 0))
    last_reload = -1
    train_loader_src: Any = None

    val_source = ValidationData(val_data, seed, config.reload_dataloaders_every_n_epochs)
    val_source.runs = int(extra_loop.get("val_runs", 0))
    position = LoaderPosition()  # a stateful training loader's saved position
    position.restore(extra_loop.get("data"))

    def loop_extra(st: TrainState, epoch_done: bool) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            out = {
                "loop": {
                    "total_batch_idx": total_batch_idx,
                    "val_log_step": run.val_log_step,
                    "val_runs": val_source.runs,
                    "data": position.saved(st.batch_idx, epoch_done),
                    "elapsed": run.elapsed(),
                    "epoch_done": epoch_done,
                    "logger_versions": [str(lg.version) for lg in loggers],
                    "run_id": run.claim.run_id,
                    "lineage": run.lineage,
                    "train_metrics": run.train.state_dict(),
                    "metrics": run.metrics_state(st.step),
                },
                "policies": list(run.policy_states),
                "callbacks": {
                    f"{type(cb).__name__}{i}": cb.state_dict()
                    for i, cb in enumerate(run.callbacks)
                    if hasattr(cb, "state_dict")
                },
                "config": config.to_dict(),
            }
            run.call("on_save_checkpoint", state=st, checkpoint=out)
            return out

        return build

    def log_eval_step(values: dict[str, Any]) -> None:
        # Per-batch validation values (on_step=True): every batch, on their own counter
        # across validation runs, without an epoch column (Lightning's rule).
        if values:
            run.log(values, run.val_log_step)
        run.val_log_step += 1

    def eval_batch_done(count: int) -> None:
        # run_eval reports the number of batches done; the bar takes the batch index.
        bar.eval_batch_end(count - 1)

    def train_bar_values() -> dict[str, float]:
        # Called by the bar only when it refreshes: the one place step values sync for it.
        return {**floats_now(run.train.prog_bar_values()), **run.bar_values}

    # Checkpoint events of an epoch's last batch, made after the epoch's end (see below).
    deferred: list[tuple[str, dict[str, Any]]] = []

    def validate(st: TrainState, log_step: int, epoch: int, defer: bool = False) -> None:
        run.call("on_validation_start", state=st)
        profiler.start("validation")
        data = val_source.get(epoch)
        total = (
            None
            if eval_sources(data) is not None
            else limit_batches(loader_length(data), config.limit_val_batches, "limit_val_batches")
        )
        if fast:
            total = fast if total is None else min(total, fast)
        bar.eval_start("Validation", total)
        run.call("on_validation_epoch_start", state=st)
        values, _, _ = run_eval(
            st,
            val_fn,
            data,
            stage="validate",
            limit=config.limit_val_batches,
            device=device,
            seed=seed,
            epoch=epoch,
            rank=dist.rank,
            world_size=dist.world_size,
            max_batches=fast or None,
            on_batch=eval_batch_done,
            reduce=dist.reduce_epoch_values,
            use_sampler=config.use_distributed_sampler,
            on_step_values=log_eval_step if loggers else None,
            hooks=eval_batch_hooks(run.callbacks, "validation"),
        )
        profiler.stop("validation")
        run.val_values = values
        numbers = floats(values) if values else {}
        run.call("on_validation_epoch_end", state=st, metrics=dict(numbers))
        shown = {k: numbers[k] for k, (_, spec) in values.items() if spec.prog_bar}
        run.bar_values.update(shown)
        bar.eval_end(shown)
        logged = {k: numbers[k] for k, (_, spec) in values.items() if spec.logger}
        if logged:
            run.log({**logged, "epoch": epoch}, log_step)
        if run.call("on_validation_end", state=st, metrics=_LazyFloats(run.callback_metrics())):
            run.stop_requested = True
        for sched in st.schedulers:
            if (
                isinstance(sched.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
                and sched.interval == "epoch"
            ):
                pass  # plateau schedulers are stepped at the epoch's end with the monitor
        if defer:
            if run.policies:
                deferred.append(("validation_end", run.callback_metrics()))
            return
        profiler.start("checkpoint")
        run.checkpoint_event("validation_end", st, loop_extra(st, False))
        profiler.stop("checkpoint")

    # Sanity check --------------------------------------------------------------------
    sanity = config.num_sanity_val_steps
    if validating and sanity != 0 and not resumed and not fast:
        # A pass a hand loop does not have takes nothing from the user's random streams.
        ambient = rng_states()
        data = val_source.get(state.epoch, sanity=True)
        run.call("on_sanity_check_start", state=state)
        bar.eval_start("Sanity check", None if sanity < 0 else sanity)
        run_eval(
            state,
            val_fn,
            data,
            stage="validate",
            limit=config.limit_val_batches,
            device=device,
            seed=seed,
            rank=dist.rank,
            world_size=dist.world_size,
            max_batches=None if sanity < 0 else sanity,
            on_batch=eval_batch_done,
            use_sampler=config.use_distributed_sampler,
        )
        set_rng_states(ambient)
        bar.eval_end(None)
        run.call("on_sanity_check_end", state=state)

    # max_time counts from here, as Lightning's Timer: setup and the sanity check are free.
    run.started = clock()
    next_val = run.elapsed() + val_seconds if val_seconds is not None else 0.0
    run.call("on_train_start", state=state)
    profiling = profiler.enabled
    batch_size = _BatchSize()
    log_every = config.log_every_n_steps
    epoch = state.epoch
    start_batch = state.batch_idx
    if extra_loop.get("epoch_done"):
        epoch, start_batch = epoch + 1, 0
    batch_idx = start_batch

    iterator: Any = None
    requeue_on = requeue_signals(config.slurm_auto_requeue, config.slurm_requeue_signal)
    with StopSignals(extra=requeue_on) as signals:
        try:
            while True:
                if is_max_reached(epoch, max_epochs) or is_max_reached(state.step, max_steps):
                    run.end_reason = "max_steps" if is_max_reached(state.step, max_steps) else None
                    break
                # Every rank agrees here, after the epoch-end callbacks (early stopping);
                # max_time is rank 0's clock.
                signalled, request, timed_out = dist.agree(
                    (
                        signals.requested is not None,
                        run.stop_requested,
                        dist.is_main and max_seconds is not None and run.elapsed() >= max_seconds,
                    ),
                    state.micro_step,
                    now=True,
                )
                if signalled:
                    interrupted = True
                    break
                if timed_out:
                    # max_time is a stop request: min_epochs/min_steps hold it off (Lightning).
                    run.stop_requested = request = True
                    run.stop_cause = run.stop_cause or "max_time"
                if request and can_stop_early(
                    epochs_done=epoch,
                    step=state.step,
                    min_epochs=min_epochs,
                    min_steps=config.min_steps,
                ):
                    run.end_reason = run.stop_cause
                    break
                # Data for this epoch.
                if _is_factory(train_data):
                    n_reload = config.reload_dataloaders_every_n_epochs
                    if train_loader_src is None or (n_reload and epoch - last_reload >= n_reload):
                        train_loader_src = train_data(epoch)
                        last_reload = epoch
                    source = train_loader_src
                else:
                    source = train_data
                if config.randomness == "ambient" and not isinstance(source, TensorLoader):
                    loader = ambient_epoch(source, epoch, start_batch)
                else:
                    loader = position.prepare(
                        source,
                        seed=seed,
                        epoch=epoch,
                        skip_batches=start_batch,
                        rank=dist.rank,
                        world_size=dist.world_size if config.use_distributed_sampler else 1,
                        processes=dist.world_size,
                    )
                # The length of this rank's shard (the prepared loader's), not the dataset's.
                length = loader_length(loader)
                epoch_batches = limit_batches(length, config.limit_train_batches)
                if fast:
                    epoch_batches = fast if epoch_batches is None else min(epoch_batches, fast)
                if epoch_batches == 0:
                    run.end_reason = "no_data"
                    break
                if validating and val_seconds is None:
                    check_batch = val_check_batch(
                        epoch_batches, config.val_check_interval, config.check_val_every_n_epoch
                    )
                    if fast:
                        check_batch = None
                elif validating:
                    check_batch = None  # time-based: validation follows the clock below
                else:
                    check_batch = None
                if (
                    not run.warned_few_batches
                    and epoch_batches is not None
                    and loggers
                    and dist.is_main
                    and 0 < epoch_batches < log_every
                    and max_steps == -1
                ):
                    run.warned_few_batches = True
                    warnings.warn(
                        f"log_every_n_steps={log_every} is more than the {epoch_batches} training "
                        "batches of an epoch: step metrics are logged rarely; set a lower value",
                        RuntimeWarning,
                        stacklevel=user_stacklevel(),
                    )
                state = state.replace(
                    epoch=epoch, batch_idx=start_batch, epoch_length=epoch_batches
                )
                _restore_modes(train_modes)
                if run.call("on_train_epoch_start", state=state):
                    run.stop_requested = True
                bar.train_epoch_start(epoch, epoch_batches)
                batch_idx = start_batch
                first_batch = batch_idx
                start_batch = 0
                iterator = (
                    Prefetcher(loader, device, config.prefetch) if config.prefetch else iter(loader)
                )
                # A TensorLoader's batches are slices of its tensors: already on the device.
                batches_on_device = (config.prefetch and device.type == "cuda") or (
                    isinstance(loader, TensorLoader)
                    and all(t.device == device for t in loader.tensors)
                )
                lookahead = epoch_batches is None
                pending: Any = _NOTHING
                if lookahead:
                    pending = next(iterator, _NOTHING)
                epoch_stop = False
                skipped_rest = False
                is_last = False
                while True:
                    if epoch_batches is not None and batch_idx >= epoch_batches:
                        break
                    if profiling:
                        profiler.start("data")
                    if lookahead:
                        batch = pending
                        if batch is _NOTHING:
                            profiler.stop("data")
                            break
                        pending = next(iterator, _NOTHING)
                        is_last = pending is _NOTHING
                        if is_last:
                            state = state.replace(epoch_length=batch_idx + 1)
                    else:
                        batch = next(iterator, _NOTHING)
                        if batch is _NOTHING:
                            profiler.stop("data")
                            break
                        is_last = batch_idx + 1 == epoch_batches
                    if not batches_on_device:
                        batch = move_to_device(batch, device)
                    if profiling:
                        profiler.stop("data")
                    if run.callbacks:
                        stop, skip = batch_start(
                            run.callbacks, state=state, batch=batch, batch_idx=batch_idx
                        )
                        run.stop_requested = run.stop_requested or stop
                        if skip:  # -1: the rest of this epoch is skipped, as Lightning
                            skipped_rest = True
                            break
                    before = state.step
                    # The lr a step-interval LearningRateMonitor logs is the one this step
                    # uses (Lightning reads it before the step); read only if it may log.
                    lrs_used = (
                        run.lr_monitors[0].learning_rates(state)
                        if run.lr_monitors
                        and ((log_every and (before + 1) % log_every == 0) or fast)
                        and run.lr_monitors[0].interval(state) == "step"
                        else None
                    )
                    if profiling:
                        profiler.start("step")
                        state, metrics = step_fn(state, batch)
                        profiler.stop("step")
                        profiler.step()
                    else:
                        state, metrics = step_fn(state, batch)
                    if state.micro_step == 0 or state.batch_idx != batch_idx + 1:
                        raise TypeError(
                            "fit: the train step did not advance state.micro_step/batch_idx; wrap a "
                            "hand-written step with ftrain.custom_step"
                        )
                    stepped = state.step != before
                    batch_size.batch = batch
                    run.train.update(metrics, batch_size)
                    run.epoch_fresh = False
                    if run.callbacks and run.call(
                        "on_train_batch_end",
                        state=state,
                        metrics=metrics,
                        batch=batch,
                        batch_idx=batch_idx,
                    ):
                        run.stop_requested = True
                    # A stop request (signal, time, callback) ends the run after this batch;
                    # across processes, after the first batch where the ranks agree on it
                    # (every agree_every_n_batches batches; max_time is rank 0's clock).
                    signalled, request, timed_out, val_due = dist.agree(
                        (
                            signals.requested is not None,
                            run.stop_requested,
                            dist.is_main
                            and max_seconds is not None
                            and run.elapsed() >= max_seconds,
                            dist.is_main and val_seconds is not None and run.elapsed() >= next_val,
                        ),
                        state.micro_step,
                    )
                    if signalled:
                        interrupted = True
                    request = request or timed_out
                    stopping = interrupted or (
                        request
                        and can_stop_early(
                            epochs_done=epoch,
                            step=state.step,
                            min_epochs=min_epochs,
                            min_steps=config.min_steps,
                        )
                    )
                    if timed_out:
                        run.stop_requested = True
                        run.stop_cause = run.stop_cause or "max_time"
                    log_step = state.step - 1 if stepped else state.step
                    if stepped and (
                        (log_every and state.step % log_every == 0) or fast or stopping
                    ):
                        profiler.start("logging")
                        values = run.train.step_values(for_logger=True)
                        if run.lr_monitors and run.lr_monitors[0].interval(state) == "step":
                            values.update(lrs_used or run.lr_monitors[0].learning_rates(state))
                        if values:
                            values = dist.reduce_step_values(values, run.train)
                        values.update(run.callback_values(state))
                        if values:
                            run.log({**values, "epoch": epoch}, log_step)
                        profiler.stop("logging")
                        bar.log_point(batch_idx, state.step, train_bar_values)
                    bar.train_batch_end(batch_idx, train_bar_values)
                    total_batch_idx += 1
                    # A checkpoint due at the epoch's last batch is written after the
                    # epoch's end (its logs, callbacks, schedulers): a resume from it then
                    # starts the next epoch and never logs the epoch's values twice.
                    ends_epoch = not interrupted and (
                        is_last or stopping or is_max_reached(state.step, max_steps)
                    )
                    if val_seconds is not None:
                        wants_val = validating and not interrupted and (val_due or stopping)
                        if val_due:
                            next_val = run.elapsed() + val_seconds
                    else:
                        wants_val = (
                            validating
                            and not interrupted
                            and should_validate(
                                epoch=epoch,
                                batch_idx=batch_idx,
                                total_batch_idx=total_batch_idx - 1,
                                is_last_batch=is_last,
                                check_batch=check_batch,
                                check_val_every_n_epoch=config.check_val_every_n_epoch,
                                stopping=stopping,
                            )
                        )
                    if wants_val:
                        validate(state, log_step, epoch, defer=ends_epoch)
                        _restore_modes(train_modes)
                        # A stop asked for by this validation (early stopping) ends the
                        # epoch after this batch, as Lightning's should_stop does. The
                        # metrics are reduced across ranks, so every rank decides alike.
                        if (
                            not stopping
                            and run.stop_requested
                            and can_stop_early(
                                epochs_done=epoch,
                                step=state.step,
                                min_epochs=min_epochs,
                                min_steps=config.min_steps,
                            )
                        ):
                            stopping = ends_epoch = True
                    if stepped and ends_epoch:
                        if run.policies:
                            deferred.append(("train_step", run.callback_metrics()))
                    elif stepped and run.policies:
                        profiler.start("checkpoint")
                        run.checkpoint_event("train_step", state, loop_extra(state, False))
                        profiler.stop("checkpoint")
                    batch_idx += 1
                    if stopping or is_max_reached(state.step, max_steps):
                        epoch_stop = True
                        run.end_reason = run.stop_cause if stopping else "max_steps"
                        break
                if isinstance(iterator, Prefetcher):
                    iterator.close()
                # End of the epoch, also when a limit stopped it mid-way (as Lightning):
                # the epoch counts as done and a resume starts the next one.
                if interrupted:
                    break
                if batch_idx == first_batch == 0 and not skipped_rest:
                    # Without this, an exhausted one-shot iterator would spin through
                    # empty epochs until max_epochs (forever with max_steps alone).
                    warnings.warn(
                        f"fit: the training data yielded no batches in epoch {epoch}; stopping. "
                        "A one-shot iterator (e.g. a generator) is exhausted after one pass: "
                        "pass a re-iterable object, or a factory epoch -> iterable",
                        RuntimeWarning,
                        stacklevel=user_stacklevel(),
                    )
                    run.end_reason = "no_data"
                    break
                dist.reduce_epoch_values(run.train)  # sync_dist sums and weights, all ranks
                epoch_values = run.train.epoch_values()
                run.train_epoch_values = epoch_values
                run.epoch_fresh = True
                end_log_step = max(state.step - 1, 0)
                logged = {k: v for k, (v, spec) in epoch_values.items() if spec.logger}
                if run.lr_monitors and run.lr_monitors[0].interval(state) == "epoch":
                    logged.update(run.lr_monitors[0].learning_rates(state))
                if logged:
                    run.log({**logged, "epoch": epoch}, end_log_step)
                cb_numbers = _LazyFloats(run.callback_metrics())
                if run.call("on_train_epoch_end", state=state, metrics=cb_numbers):
                    run.stop_requested = True
                if not epoch_stop or is_last:
                    # Epoch-interval schedulers step only after a whole epoch (Lightning:
                    # not when max_steps or a stop request cut the epoch short).
                    _step_epoch_schedulers(state, cb_numbers, epoch)
                if bar.shows_metrics:  # a disabled bar must not sync the device for nothing
                    run.bar_values.update(
                        {
                            k: to_float(logged.get(k, v))
                            for k, (v, spec) in epoch_values.items()
                            if spec.prog_bar
                        }
                    )
                    bar.train_epoch_end(train_bar_values(), step=state.step)
                state = state.replace(batch_idx=batch_idx)
                profiler.start("checkpoint")
                for stage, metrics_then in deferred:
                    run.checkpoint_event(stage, state, loop_extra(state, True), metrics_then)
                deferred.clear()
                run.checkpoint_event("train_epoch_end", state, loop_extra(state, True))
                profiler.stop("checkpoint")
                epoch += 1
                state = state.replace(epoch=epoch, batch_idx=0)
                if epoch_stop:
                    break
        except BaseException as exc:
            note_position(exc, epoch=epoch, batch_idx=batch_idx, step=state.step)
            run.claim.release()
            if isinstance(iterator, Prefetcher):
                iterator.close()
            run.call("on_exception", state=state, exception=exc)
            run.call("teardown", stage="fit", state=state)
            for lg in loggers:
                lg.finalize("failed")
            bar.close()
            profiler.close()
            raise
        finally:
            pass

    if interrupted:
        if dist.is_main:
            _say(bar, f"Detected {signals.requested}: stopping after the current step and saving")
        run.checkpoint_event("interrupt", state, loop_extra(state, False))
    else:
        run.call("on_train_end", state=state)
        run.checkpoint_event("fit_end", state, loop_extra(state, False))
    run.claim.release()
    bar.close()
    profiler.close()
    for lg in loggers:
        lg.finalize("interrupted" if interrupted else "success")
    if interrupted and requeue_on:
        requeue = signals.requested in {s.name for s in requeue_on}
        if dist.agree((requeue,), state.micro_step, now=True)[0]:
            save = partial(
                dist.save_checkpoint, state, extra=loop_extra(state, False), weights_only=False
            )
            requeue_and_exit(save, root, dist.is_main, say=partial(_say, bar))
    best, best_score, last = run.best_and_last()
    numbers = {k: v for k, v in _LazyFloats(run.callback_metrics()).items()}
    result = FitResult(
        state=dist.unwrap(state),
        metrics=dict(numbers),
        best_checkpoint=best,
        best_model_score=best_score,
        last_checkpoint=last,
        interrupted=interrupted,
        stop_reason="interrupted" if interrupted else run.end_reason or "max_epochs",
        log_dir=loggers[0].log_dir if loggers else None,
        profile=profiler.summary() if profiler.enabled else None,
    )
    if profiler.enabled and dist.is_main:
        _say(bar, profiler.report())
    run.call("on_fit_end", state=result.state, result=result)
    run.call("teardown", stage="fit", state=result.state)
    return result


_NOTHING = object()


class _BatchSize:
    """``batch_size_of(batch)`` of the current batch, for the collector to call when needed.

    One object for the whole run: the loop sets ``batch`` instead of making a closure
    per batch.
    """

    __slots__ = ("batch",)

    def __init__(self) -> None:
        self.batch: Any = None

    def __call__(self) -> int | None:
        return batch_size_of(self.batch)


def floats_now(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: to_float(v) for k, v in values.items()}


def _restore_modes(modes: Sequence[tuple[torch.nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def _say(bar: Any, message: str) -> None:
    """Show a message (summary, interrupt, profile): above the bars, or printed without them."""
    if bar.enabled:
        bar.print(message)
    else:
        print(message, flush=True)


def _step_epoch_schedulers(state: TrainState, metrics: Mapping[str, float], epoch: int) -> None:
    for sched in state.schedulers:
        if sched.interval != "epoch" or (epoch + 1) % sched.frequency != 0:
            continue
        if isinstance(sched.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = sched.monitor or ""
            if monitor not in metrics:
                message = f"ReduceLROnPlateau monitors {monitor!r}, which was not logged; logged: {sorted(metrics)}"
                if sched.strict:
                    raise ValueError(message)
                warnings.warn(message, RuntimeWarning, stacklevel=user_stacklevel())
                continue
            sched.scheduler.step(metrics[monitor])
        else:
            sched.scheduler.step()


def _resume(
    state: TrainState, path: str, run: _Run, device: torch.device
) -> tuple[TrainState, Mapping[str, Any]]:
    """Restore the state, clock, metric accumulators, callbacks and logger versions."""
    from ._checkpointing import load_checkpoint

    payload = load_checkpoint(path, map_location=device)
    if payload.get("weights_only"):
        raise KeyError(
            f"{path}: the checkpoint holds only the model weights (save_weights_only=True); "
            "it cannot resume a run. Load it with ft.restore(state, path) instead"
        )
    state = run.dist.restore(state, payload, path)
    set_rng_states(payload.get("rng"))
    loop = payload.get("loop") or {}
    run.elapsed_before = float(loop.get("elapsed", 0.0))
    run.resumed_from = path
    run.lineage = [*lineage_of(payload), run.claim.run_id]
    if run.dist.is_main:
        # Rank 0's partial epoch sums; loaded on every rank they would count twice
        # when sync_dist reduces them.
        run.train.load_state_dict(loop.get("train_metrics") or {})
    cb_states = payload.get("callbacks") or {}
    for i, cb in enumerate(run.callbacks):
        key = f"{type(cb).__name__}{i}"
        if key in cb_states and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(cb_states[key])
    run.call("on_load_checkpoint", state=state, checkpoint=payload)
    metrics = loop.get("metrics") or {}
    run.restored_metrics = {
        "val": dict(metrics.get("val") or {}),
        "epoch": dict(metrics.get("epoch") or {}),
    }
    versions = loop.get("logger_versions") or []
    # Logged x values are step indices: the loggers drop what the interrupted run logged
    # at steps >= state.step, and the rows it had logged there before this checkpoint
    # (a validation inside an accumulation window logs at state.step) are written again.
    for lg, version in zip(run.loggers, versions, strict=False):
        lg.resume(_version_value(version), state.step)
    for row in metrics.get("log_tail") or []:
        run.log(row["values"], int(row["step"]))
    return state, payload


def _recover_policies(run: _Run, payload: Mapping[str, Any]) -> None:
    """Rebuild each policy's state from the files on disk (after a crash they decide)."""
    from .checkpoint._io import clean_temp_files, list_checkpoints

    saved = payload.get("policies") or []
    for i, policy in enumerate(run.policies):
        d = run.policy_dirs[i]
        infos: list[Any] = []
        others: list[str] = []
        if os.path.isdir(d):
            # A temp file of a run still writing into this folder is not debris.
            if run.dist.is_main and not others_alive(d, run.claim.run_id):
                clean_temp_files(d)
            infos, others = split_by_lineage(d, list_checkpoints(d), run.lineage[:-1])
        previous = saved[i] if i < len(saved) else None
        run.policy_states[i] = policy.recover(previous, infos, existing=others)


def _hpc_ckpt_path(ckpt_path: Any, root: str) -> Any:
    """``ckpt_path="hpc"``: the newest ``hpc_ckpt_N.ckpt`` in ``root``, else "last"; a job
    SLURM requeued (``SLURM_RESTART_COUNT`` > 0) resumes from it by itself."""
    restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if ckpt_path == "hpc" or (ckpt_path is None and restarted and slurm_detected()):
        found = hpc_checkpoints(root)
        return found[-1] if found else ("last" if ckpt_path == "hpc" else None)
    return ckpt_path


def _version_value(version: str) -> int | str:
    return int(version) if version.isdigit() else version


def estimated_stepping_batches(
    train_data: Iterable[Any],
    *,
    world_size: int = 1,
    config: FitConfig | None = None,
    **flags: Any,
) -> float:
    """Optimizer steps ``fit`` will take on ``train_data`` with these flags.

    Lightning's ``trainer.estimated_stepping_batches``, as a function to call before
    ``fit`` (e.g. for ``OneCycleLR(total_steps=...)``): batches per epoch after
    ``limit_train_batches`` and sharding over ``world_size`` processes, divided into
    accumulation windows, times ``max_epochs``, capped by ``max_steps``.

    Returns:
        The number of steps, or ``inf`` for unsized data or an unbounded run.

    Example:
        >>> import torch
        >>> import ftrain
        >>> data = ftrain.TensorLoader(torch.zeros(100, 2), batch_size=10)
        >>> estimated_stepping_batches(data, max_epochs=3, accumulate_grad_batches=4)
        9
    """
    from ._schedules import estimated_stepping_batches as estimate

    config = (config or FitConfig()).replace(**flags) if flags else (config or FitConfig())
    length = loader_length(train_data)
    if length is not None and world_size > 1:
        length = -(-length // world_size)
    batches = limit_batches(length, config.limit_train_batches)
    if config.fast_dev_batches:
        batches = (
            config.fast_dev_batches if batches is None else min(batches, config.fast_dev_batches)
        )
    return estimate(
        batches,
        config.accumulate_grad_batches,
        config.resolved_max_epochs(),
        config.resolved_max_steps(),
    )
