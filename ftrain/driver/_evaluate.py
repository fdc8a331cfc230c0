"""Evaluation folds: validation and test over a loader, and prediction.

``run_eval`` folds an eval step over batches and returns the reduced metrics; it is
shared by in-fit validation, ``validate`` and ``test``. The public ``validate``,
``test`` and ``predict`` set up devices and data, then call it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch

from .._batch import batch_size_of, cast_floats, move_to_device
from .._callbacks._hooks import call, eval_batch_hooks
from .._checkpointing import load_checkpoint, restore
from .._config import FitConfig
from .._data._loader import loader_length, prepare_loader
from .._data._sources import check_eval_data, one_set, refuse_dataset
from .._devices import resolve_accelerator, resolve_devices
from .._eval_step import EvalStep
from .._metrics import MetricCollector, to_float
from .._precision import Precision
from .._schedules import limit_batches
from .._state import TrainState
from ..checkpoint._io import atomic_write_obj
from ..loggers import as_loggers
from ._resume import find_ckpt, resolve_policies, search_dirs

__all__ = ["eval_mode", "eval_with_precision", "model_modes", "restore_modes", "run_eval"]


def model_modes(state: TrainState) -> list[tuple[torch.nn.Module, bool]]:
    """Every submodule of the state's models with its ``training`` flag."""
    return [(m, m.training) for model in state.models for m in model.modules()]


def restore_modes(modes: Sequence[tuple[torch.nn.Module, bool]]) -> None:
    """Put back the flags :func:`model_modes` read."""
    for module, training in modes:
        module.training = training


@contextlib.contextmanager
def eval_mode(state: TrainState) -> Iterator[None]:
    """Put every model in eval mode, restoring each submodule's own mode afterwards."""
    modes = model_modes(state)
    for model in state.models:
        model.eval()
    try:
        yield
    finally:
        restore_modes(modes)


def eval_with_precision(step: Any, precision: Precision) -> Any:
    """An ``EvalStep`` of no precision of its own (32-true) runs in the run's ``precision``."""
    if isinstance(step, EvalStep) and step.precision.name == "32-true" != precision.name:
        return step.with_(precision=precision)
    return step


def _call_eval(step: Any, state: TrainState, batch: Any) -> Mapping[str, Any]:
    if isinstance(step, EvalStep):
        return step.run(state, batch)
    out = step(state, batch)
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        return out[1]
    if isinstance(out, Mapping):
        return out
    raise TypeError(
        "an eval step must return (state, {name: value}) or {name: value}, "
        f"got {type(out).__name__}"
    )


def _run_one(
    state: TrainState,
    step: Any,
    data: Iterable[Any],
    *,
    stage: str,
    limit: int | float,
    device: torch.device,
    seed: int,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
    inference: bool = False,
    on_batch: Callable[[int], None] | None = None,
    reduce: Callable[[MetricCollector], None] | None = None,
    use_sampler: bool = True,
    on_step_values: Callable[[dict[str, Any]], None] | None = None,
    suffix: str = "",
    hooks: Callable[..., None] | None = None,
    dataloader_idx: int = 0,
) -> tuple[dict[str, Any], MetricCollector, int]:
    """Fold ``step`` over ``data``; return (epoch values, collector, batches run).

    Epoch values map logger names to ``(value, spec)``; values stay on the device.
    ``reduce(collector)`` combines the epoch accumulators of all processes first.
    ``suffix`` is added to the logged names (unless logged with add_dataloader_idx=False).
    ``hooks(when, **kwargs)`` runs the callbacks' batch hooks ("start", "end").
    """
    collector = MetricCollector(stage, suffix)
    loader = prepare_loader(
        data, seed=seed, epoch=epoch, rank=rank, world_size=world_size if use_sampler else 1
    )
    length = loader_length(loader)  # this rank's shard
    n = limit_batches(length, limit, f"limit_{'val' if stage == 'validate' else stage}_batches")
    if max_batches is not None:
        n = max_batches if n is None else min(n, max_batches)
    if n == 0:
        return {}, collector, 0
    grad = torch.inference_mode() if inference else torch.no_grad()
    count = 0
    with eval_mode(state), grad:
        for batch in loader:
            if n is not None and count >= n:
                break
            batch = move_to_device(batch, device)
            where = {"batch": batch, "batch_idx": count, "dataloader_idx": dataloader_idx}
            if hooks is not None:
                hooks("start", state=state, **where)
            metrics = _call_eval(step, state, batch)
            if hooks is not None:
                hooks("end", state=state, metrics=metrics, **where)
            collector.update(metrics, partial(batch_size_of, batch))
            if on_step_values is not None and any(s.on_step for s in collector.specs.values()):
                on_step_values(collector.step_values(for_logger=True))
            count += 1
            if on_batch is not None:
                on_batch(count)
    if reduce is not None:
        reduce(collector)  # across processes, on the sums and weights before finalizing
    values = collector.epoch_values()
    return values, collector, count


def eval_sources(data: Any) -> list[tuple[str, Any]] | None:
    """The named loaders of several eval sets (``{name: loader}``, or a list of loaders
    named ``dataloader_idx_{i}`` as Lightning's), or None for one iterable of batches.

    Raises:
        TypeError: a list or mapping with an item that is not a loader.
    """
    return check_eval_data("val_data", data)


def run_eval(
    state: TrainState, step: Any, data: Iterable[Any], **kwargs: Any
) -> tuple[dict[str, Any], MetricCollector, int]:
    """Fold ``step`` over ``data``; return (epoch values, collector, batches run).

    Epoch values map logger names to ``(value, spec)``; values stay on the device.
    ``data`` may be several sets (a list of loaders or ``{name: loader}``): each is
    evaluated on its own and its names get the suffix ``/{name}`` (for a list,
    Lightning's ``/dataloader_idx_{i}``).
    """
    stage = kwargs.get("stage", "validate")
    sources = check_eval_data("val_data" if stage == "validate" else f"{stage}_data", data)
    if sources is None:
        return _run_one(state, step, one_set(data), **kwargs)
    merged: dict[str, Any] = {}
    total = 0
    collector = MetricCollector(kwargs.get("stage", "validate"))
    owner: dict[str, str] = {}  # names logged without the set's name: the set that did
    for i, (key, source) in enumerate(sources):
        values, collector, count = _run_one(
            state, step, source, suffix=f"/{key}", dataloader_idx=i, **kwargs
        )
        label = key.removeprefix("dataloader_idx_") if isinstance(data, (list, tuple)) else key
        for name, spec in collector.specs.items():
            if not spec.add_dataloader_idx and owner.setdefault(name, label) != label:
                raise ValueError(
                    f"metric {name!r} was logged with add_dataloader_idx=False by dataloaders "
                    f"{owner[name]} and {label}: the names clash; log a different name per "
                    "dataloader or keep add_dataloader_idx=True"
                )
        merged.update(values)
        total += count
    return merged, collector, total


def floats(values: Mapping[str, tuple[Any, Any]]) -> dict[str, float]:
    """Epoch values as Python floats (one host sync per value)."""
    return {name: to_float(v) for name, (v, _) in values.items()}


def _named_checkpoint(name: str, config: Any, checkpoint: Any) -> str:
    """The file that ``ckpt_path="best"``/``"last"`` names for a run under these flags."""
    root = os.fspath(config.default_root_dir or os.getcwd())
    policies = resolve_policies(checkpoint, config, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the version folders' names are read
        loggers = as_loggers(True, root)
    path = find_ckpt(name, search_dirs(policies, root, loggers), policies)
    if path is None:
        raise ValueError(f"ckpt_path={name!r}: no checkpoint found under {root!r}")
    return path


def _setup_eval(
    state: TrainState, flags: Mapping[str, Any], ckpt_path: Any, checkpoint: Any = None
) -> tuple[TrainState, torch.device, Any]:
    flags = dict(flags)
    checkpoint = flags.pop("checkpoint", checkpoint)
    unknown = sorted(set(flags) - set(FitConfig.flag_names()))
    if unknown:
        raise TypeError(f"unknown flags {unknown}; accepted: {sorted(FitConfig.flag_names())}")
    config = FitConfig(**flags)
    accelerator = resolve_accelerator(config.accelerator)
    resolve_devices(accelerator, config.devices)
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if accelerator == "cuda"
        else torch.device(accelerator)
    )
    for model in state.models:
        model.to(device)
    if ckpt_path in ("best", "last"):
        ckpt_path = _named_checkpoint(str(ckpt_path), config, checkpoint)
    if ckpt_path is not None:
        payload = load_checkpoint(ckpt_path, map_location=device)
        state = restore(
            state.replace(optimizer=None, scheduler=None), {**payload, "weights_only": True}
        ).replace(optimizer=state.optimizer, scheduler=state.scheduler)
    return state, device, config


def _evaluate(
    stage: str,
    state: TrainState,
    step: Any,
    data: Any,
    ckpt_path: Any,
    verbose: bool,
    flags: Mapping[str, Any],
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:

    state, device, config = _setup_eval(state, flags, ckpt_path)
    hook_stage = "validation" if stage == "validate" else stage
    call(callbacks, "setup", stage=stage, state=state)
    try:
        result = _evaluate_run(stage, hook_stage, state, step, data, device, config, callbacks)
    finally:
        call(callbacks, "teardown", stage=stage, state=state)
    if verbose:
        width = max([len(k) for k in result] + [10])
        print(f"{stage.capitalize() + ' metric':<{width}}  value")
        for key, value in result.items():
            print(f"{key:<{width}}  {value:.6g}")
    return result


def _evaluate_run(
    stage: str,
    hook_stage: str,
    state: TrainState,
    step: Any,
    data: Any,
    device: torch.device,
    config: Any,
    callbacks: Sequence[Any],
) -> dict[str, float]:
    call(callbacks, f"on_{hook_stage}_start", state=state)
    call(callbacks, f"on_{hook_stage}_epoch_start", state=state)
    step = eval_with_precision(step, config.resolved_precision)
    limit = config.limit_val_batches if stage == "validate" else config.limit_test_batches
    values, _, _ = run_eval(
        state,
        step,
        data,
        stage=stage,
        limit=limit,
        device=device,
        seed=config.seed if config.seed is not None else state.seed,
        max_batches=config.fast_dev_batches or None,
        inference=True,
        hooks=eval_batch_hooks(callbacks, hook_stage),
    )
    result = floats(values)
    call(callbacks, f"on_{hook_stage}_epoch_end", state=state, metrics=dict(result))
    call(callbacks, f"on_{hook_stage}_end", state=state, metrics=dict(result))
    return result


def validate(
    state: TrainState,
    val_step: Any,
    val_data: Iterable[Any],
    *,
    ckpt_path: str | None = None,
    verbose: bool = False,
    callbacks: Sequence[Any] = (),
    **flags: Any,
) -> dict[str, float]:
    """Run one validation pass and return the epoch metrics as floats.

    Works before, after or without ``fit`` on the same state; the model's
    train/eval modes are restored afterwards, and nothing is trained or saved.

    Args:
        state: the state whose model is evaluated.
        val_step: an ``eval_step`` or ``(state, batch) -> (state, metrics)``.
        val_data: the batches.
        ckpt_path: evaluate the weights of this checkpoint instead (the state's model
            receives them): a path, or "best"/"last", found under ``default_root_dir``
            as ``fit(ckpt_path=...)`` finds them (pass ``checkpoint=`` the policy fit
            used when it was not the default).
        verbose: print the metrics.
        callbacks: objects with hooks: ``setup``/``teardown`` (stage "validate"),
            ``on_validation_start``, ``on_validation_epoch_start``,
            ``on_validation_batch_start``/``_end``, ``on_validation_epoch_end``,
            ``on_validation_end``.
        **flags: ``limit_val_batches``, ``accelerator``, ``precision``, ``fast_dev_run``...

    Returns:
        ``{name: value}`` of the epoch-level metrics (Lightning returns a list of
        such dicts, one per dataloader).
    """
    return _evaluate("validate", state, val_step, val_data, ckpt_path, verbose, flags, callbacks)


def test(
    state: TrainState,
    test_step: Any,
    test_data: Iterable[Any],
    *,
    ckpt_path: str | None = None,
    verbose: bool = False,
    callbacks: Sequence[Any] = (),
    **flags: Any,
) -> dict[str, float]:
    """Run one test pass and return the epoch metrics as floats (see :func:`validate`;
    the callbacks' hooks are ``on_test_*`` and stage "test")."""
    return _evaluate("test", state, test_step, test_data, ckpt_path, verbose, flags, callbacks)


test.__test__ = False  # type: ignore[attr-defined]


def predict(
    state: TrainState,
    predict_fn: Any,
    data: Iterable[Any],
    *,
    ckpt_path: str | None = None,
    output_path: str | None = None,
    return_predictions: bool = True,
    callbacks: Sequence[Any] = (),
    **flags: Any,
) -> list[Any] | None:
    """Run ``predict_fn(model, batch)`` over the data without gradients.

    Args:
        state: the state whose model predicts.
        predict_fn: ``(model, batch) -> output``.
        data: the batches.
        ckpt_path: predict with this checkpoint's weights.
        output_path: also save the list of outputs there with ``torch.save``
            (tensors moved to CPU), atomically.
        return_predictions: return the outputs (False saves memory).
        callbacks: objects with hooks: ``setup``/``teardown`` (stage "predict"),
            ``on_predict_start``, ``on_predict_batch_start``/``_end``, ``on_predict_end``.
        **flags: ``limit_predict_batches``, ``accelerator``, ``precision``...

    Returns:
        One output per batch, or None when ``return_predictions`` is False.
    """

    refuse_dataset("data", data)
    state, device, config = _setup_eval(state, flags, ckpt_path)
    call(callbacks, "setup", stage="predict", state=state)
    try:
        call(callbacks, "on_predict_start", state=state)
        outputs = _predict_run(
            state,
            predict_fn,
            data,
            device,
            config,
            return_predictions or output_path is not None,
            callbacks,
        )
        call(callbacks, "on_predict_end", state=state)
    finally:
        call(callbacks, "teardown", stage="predict", state=state)
    if output_path is not None:
        atomic_write_obj(move_to_device(outputs, torch.device("cpu")), output_path)
    return outputs if return_predictions else None


def _predict_run(
    state: TrainState,
    predict_fn: Any,
    data: Iterable[Any],
    device: torch.device,
    config: Any,
    keep: bool,
    callbacks: Sequence[Any],
) -> list[Any]:
    precision = config.resolved_precision
    hooks = eval_batch_hooks(callbacks, "predict")
    n = limit_batches(loader_length(data), config.limit_predict_batches, "limit_predict_batches")
    if config.fast_dev_batches:
        n = config.fast_dev_batches if n is None else min(n, config.fast_dev_batches)
    outputs: list[Any] = []
    device_type = device.type
    with eval_mode(state), torch.inference_mode():
        for i, batch in enumerate(prepare_loader(data, seed=state.seed, epoch=0)):
            if n is not None and i >= n:
                break
            batch = move_to_device(batch, device)
            if precision.param_dtype is not None:
                batch = cast_floats(batch, precision.param_dtype)
            if hooks is not None:
                hooks("start", state=state, batch=batch, batch_idx=i)
            with precision.autocast(device_type):
                out = predict_fn(state.model, batch)
            if hooks is not None:
                hooks("end", state=state, outputs=out, batch=batch, batch_idx=i)
            if keep:
                outputs.append(out)
    return outputs
