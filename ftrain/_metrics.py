"""Metrics a step returns, and how they are reduced, as Lightning's ``self.log`` does.

A step returns ``{name: value}``. A value is a tensor or number (stage defaults
apply), a torchmetrics ``Metric`` (compute() at epoch end), or ``log(value, ...)``
carrying Lightning's options. Reductions are pure folds ``(acc, value, weight) ->
acc`` then ``finalize(acc)``; accumulators stay on the value's device, so nothing is
copied to the host until a log point asks for numbers.

Stage defaults, as Lightning: training on_step=True/on_epoch=False; validation and
test on_step=False/on_epoch=True. With both on, loggers see ``name_step`` and
``name_epoch``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch

from ._metric_objects import merge_saved_state, saved_state
from ._reducers import Reducer, _resolve_reduce_fx, reducer, to_float
from ._warn import user_stacklevel

__all__ = [
    "Logged",
    "MetricCollector",
    "Reducer",
    "log",
    "log_dict",
    "reducer",
    "to_float",
]


def _is_metric_object(value: Any) -> bool:
    # A torchmetrics.Metric, recognised without importing torchmetrics.
    return (
        callable(getattr(value, "compute", None))
        and callable(getattr(value, "reset", None))
        and hasattr(value, "_forward_cache")
    )


@attrs.frozen(slots=True)
class Logged:
    """A metric value with Lightning's ``self.log`` options (build it with :func:`log`)."""

    value: Any
    on_step: bool | None = None
    on_epoch: bool | None = None
    reduce_fx: Any = "mean"
    prog_bar: bool = False
    logger: bool = True
    sync_dist: bool = False
    batch_size: int | None = None
    rank_zero_only: bool = False
    enable_graph: bool = False
    sync_dist_group: Any = None
    add_dataloader_idx: bool = True


def log(
    value: Any,
    *,
    on_step: bool | None = None,
    on_epoch: bool | None = None,
    reduce_fx: str | Callable[..., Any] = "mean",
    prog_bar: bool = False,
    logger: bool = True,
    sync_dist: bool = False,
    batch_size: int | None = None,
    rank_zero_only: bool = False,
    enable_graph: bool = False,
    sync_dist_group: Any = None,
    add_dataloader_idx: bool = True,
) -> Logged:
    """Attach Lightning's logging options to a metric value a step returns.

    Args:
        value: a number, a one-element tensor, or a torchmetrics ``Metric``.
        on_step: log the value of each step (default: True in training, False in eval).
        on_epoch: log the epoch's reduction (default: False in training, True in eval).
        reduce_fx: "mean" (batch-size weighted), "max", "min", "sum" (also
            ``torch.mean``/``max``/``min``/``sum``), or a callable applied to the
            stacked step values at epoch end.
        prog_bar: show it on the progress bar.
        logger: send it to the loggers (it is still available to checkpoint
            policies and early stopping when False).
        sync_dist: reduce it across processes with its reduce_fx at log points.
        batch_size: the weight for the epoch mean (default: size(0) of the batch).
        rank_zero_only: never synced; not usable by checkpoint policies.
        enable_graph: keep the value's autograd graph (by default a tensor is
            detached here, so a logged value never holds the graph alive).
        sync_dist_group: the ``torch.distributed`` process group ``sync_dist``
            reduces over (default: all ranks); ranks outside it keep their own value.
        add_dataloader_idx: with several eval loaders, add ``/dataloader_idx_{i}``
            to the name (False: the name as is; two loaders logging it is an error).

    Returns:
        A ``Logged`` value for the step's metrics dict.

    Raises:
        ValueError: on_step=False and on_epoch=False, an unknown reduce_fx, or a
            batch_size < 1.

    Example:
        >>> log(0.5, prog_bar=True).prog_bar
        True
        >>> log(0.5, reduce_fx="median")
        Traceback (most recent call last):
        ...
        ValueError: reduce_fx: unknown value 'median'; accepted: 'mean' (or 'avg'), 'max', 'min', 'sum', or a callable over the stacked step values
    """
    if on_step is False and on_epoch is False:
        raise ValueError(
            "log: on_step=False and on_epoch=False log nothing; set one of them to True"
        )
    resolved = _resolve_reduce_fx(reduce_fx)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"log: batch_size must be an int >= 1 or None, got {batch_size!r}")
    if isinstance(value, torch.Tensor) and not enable_graph:
        value = value.detach()
    return Logged(
        value,
        on_step,
        on_epoch,
        resolved,
        prog_bar,
        logger,
        sync_dist,
        batch_size,
        rank_zero_only,
        bool(enable_graph),
        sync_dist_group,
        bool(add_dataloader_idx),
    )


def log_dict(values: Mapping[str, Any], **options: Any) -> dict[str, Logged]:
    """Apply the same :func:`log` options to each value of a dict.

    Example:
        >>> sorted(log_dict({"a": 1.0, "b": 2.0}, prog_bar=True))
        ['a', 'b']
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"log_dict: values must be a mapping, got {type(values).__name__}")
    return {name: log(value, **options) for name, value in values.items()}


# Reducers ----------------------------------------------------------------------------


# The per-stage collector the loop drives ----------------------------------------------


@attrs.frozen(slots=True)
class _Spec:
    on_step: bool
    on_epoch: bool
    reduce_fx: Any
    prog_bar: bool
    logger: bool
    sync_dist: bool
    rank_zero_only: bool
    metric_object: bool
    add_dataloader_idx: bool = True
    # A process group is not a value to compare or store: the same name may be logged
    # with it on every batch, and a resumed run supplies it again.
    sync_dist_group: Any = attrs.field(default=None, eq=False)


class MetricCollector:
    """Collects one stage's metrics: latest step values and epoch reductions.

    The loop calls ``update(metrics, batch_size_fn)`` once per batch (no host sync)
    and reads ``step_log()``, ``epoch_end()`` and ``callback_metrics`` at log points.
    """

    def __init__(self, stage: str, suffix: str = "") -> None:
        self.stage = stage
        # Added to logged names (``/dataloader_idx_{i}``) unless add_dataloader_idx=False.
        self.suffix = suffix
        self.training = stage == "train"
        self.specs: dict[str, _Spec] = {}
        self.latest: dict[str, Any] = {}
        self.acc: dict[str, Any] = {}
        self.objects: dict[str, Any] = {}
        self._reducers: dict[str, Reducer] = {}
        self._warned_nonfinite: set[str] = set()
        self.seen: set[str] = set()
        # Names first logged with explicit options: a later bare value must agree with them.
        self._explicit: set[str] = set()
        # Names logged bare with the stage's step-only defaults: the per-batch fast path.
        self._plain: set[str] = set()
        # Metric objects' states from a checkpoint, merged in when the object shows up.
        self._pending_objects: dict[str, Any] = {}

    def _spec(self, name: str, value: Any) -> _Spec:
        if isinstance(value, Logged):
            on_step = value.on_step if value.on_step is not None else self.training
            on_epoch = value.on_epoch if value.on_epoch is not None else not self.training
            spec = _Spec(
                on_step,
                on_epoch,
                value.reduce_fx,
                value.prog_bar,
                value.logger,
                value.sync_dist,
                value.rank_zero_only,
                _is_metric_object(value.value),
                value.add_dataloader_idx,
                value.sync_dist_group,
            )
        else:
            spec = _Spec(
                self.training,
                not self.training,
                "mean",
                False,
                True,
                False,
                False,
                _is_metric_object(value),
            )
        if not spec.metric_object and not spec.on_epoch and not spec.on_step:
            raise ValueError(f"metric {name!r}: on_step=False and on_epoch=False log nothing")
        return spec

    def update(self, metrics: Mapping[str, Any], batch_size: Callable[[], int | None]) -> None:
        """Fold one batch's metrics in. ``batch_size()`` is only called when needed."""
        specs = self.specs
        plain = self._plain
        latest = self.latest
        size: int | None = None
        for name, raw in metrics.items():
            if name in plain and type(raw) is torch.Tensor and raw.numel() == 1:
                # A training step's usual metric: keep the latest value, nothing else to do.
                latest[name] = raw
                continue
            spec = specs.get(name)
            if spec is None or isinstance(raw, Logged) or name in self._explicit:
                new = self._spec(name, raw)
                if spec is None:
                    specs[name] = spec = new
                    if isinstance(raw, Logged):
                        self._explicit.add(name)
                    elif self.training and not new.on_epoch and not new.metric_object:
                        plain.add(name)
                    if new.on_epoch and not new.metric_object:
                        self._reducers[name] = reducer(new.reduce_fx)
                        self.acc[name] = self._reducers[name].init()
                elif new != spec:
                    raise ValueError(
                        f"metric {name!r} was logged with different options in the same stage "
                        f"({spec} vs {new}); log it with one set of options"
                    )
            value = raw.value if isinstance(raw, Logged) else raw
            if spec.metric_object:
                if name in self._pending_objects:
                    merge_saved_state(value, self._pending_objects.pop(name), name)
                self.objects[name] = value
                if spec.on_step:
                    self.latest[name] = value._forward_cache
                continue
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                raise ValueError(
                    f"metric {name!r} must be a number or a one-element tensor, got a tensor of "
                    f"shape {tuple(value.shape)}"
                )
            if not isinstance(value, (torch.Tensor, int, float)):
                raise TypeError(
                    f"metric {name!r} must be a number, a one-element tensor or a torchmetrics "
                    f"Metric, got {type(value).__name__}"
                )
            if spec.on_step or self.training:
                self.latest[name] = value
            if spec.on_epoch:
                weight = 1
                if spec.reduce_fx == "mean":
                    if isinstance(raw, Logged) and raw.batch_size is not None:
                        weight = raw.batch_size
                    else:
                        if size is None:
                            size = batch_size() or 1
                        weight = size
                self.acc[name] = self._reducers[name].update(self.acc[name], value, weight)
                self.seen.add(name)

    def names(self, *, logger_only: bool = False) -> dict[str, str]:
        """Map each metric to the name(s) loggers see (``_step``/``_epoch`` when both)."""
        return {n: n for n, s in self.specs.items() if not logger_only or s.logger}

    def step_values(self, *, for_logger: bool) -> dict[str, Any]:
        """The latest on_step values (tensors or numbers), with ``_step`` suffixes when both."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if not spec.on_step or name not in self.latest or (for_logger and not spec.logger):
                continue
            out[self._key(f"{name}_step" if spec.on_epoch else name, spec)] = self.latest[name]
        return out

    def _key(self, name: str, spec: _Spec) -> str:
        return name + self.suffix if spec.add_dataloader_idx else name

    def prog_bar_values(self) -> dict[str, Any]:
        """Step values flagged ``prog_bar`` (plus the loss in training)."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if name in self.latest and (spec.prog_bar or (self.training and name == "loss")):
                out[f"{name}_step" if spec.on_epoch and spec.on_step else name] = self.latest[name]
        return out

    def epoch_values(self, *, reset: bool = True) -> dict[str, tuple[Any, _Spec]]:
        """Finalize the epoch reductions (and metric objects' compute()), then reset."""
        out: dict[str, tuple[Any, _Spec]] = {}
        for name, spec in self.specs.items():
            if not spec.on_epoch:
                continue
            key = self._key(f"{name}_epoch" if spec.on_step else name, spec)
            if spec.metric_object:
                obj = self.objects.get(name)
                if obj is None:
                    continue
                out[key] = (obj.compute(), spec)
                if reset:
                    obj.reset()
                continue
            if name not in self.seen:
                continue
            red = self._reducers[name]
            out[key] = (red.finalize(self.acc[name]), spec)
            if reset:
                self.acc[name] = red.init()
        if reset:
            self.seen.clear()
            self._pending_objects.clear()  # a saved state belongs to its own epoch
        return out

    def reset(self) -> None:
        """Forget accumulated epoch values and latest step values."""
        for name, red in self._reducers.items():
            self.acc[name] = red.init()
        self.seen.clear()
        self.latest.clear()
        for obj in self.objects.values():
            obj.reset()

    def state_dict(self) -> dict[str, Any]:
        """The partial epoch reductions and metric objects' states, for an exact
        mid-epoch resume.

        Metrics reduced by a callable are not included (a callable cannot be stored
        safely); their epoch value after a resume covers only the batches seen since.
        """
        out: dict[str, Any] = {}
        for name, obj in self.objects.items():
            state = saved_state(obj)
            if state is not None:
                out[name] = {"object": state}
        for name, spec in self.specs.items():
            if name not in self.seen or spec.metric_object or not isinstance(spec.reduce_fx, str):
                continue
            out[name] = {
                "spec": [
                    spec.on_step,
                    spec.on_epoch,
                    spec.reduce_fx,
                    spec.prog_bar,
                    spec.logger,
                    spec.sync_dist,
                    spec.rank_zero_only,
                ],
                "acc": self.acc[name],
            }
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore partial epoch reductions saved by :meth:`state_dict`."""
        for name, entry in state.items():
            if "object" in entry:
                self._pending_objects[name] = entry["object"]
                continue
            on_step, on_epoch, reduce_fx, prog_bar, logger, sync_dist, rank_zero_only = entry[
                "spec"
            ]
            self._plain.discard(name)
            self.specs[name] = _Spec(
                bool(on_step),
                bool(on_epoch),
                reduce_fx,
                bool(prog_bar),
                bool(logger),
                bool(sync_dist),
                bool(rank_zero_only),
                False,
            )
            self._reducers[name] = reducer(reduce_fx)
            acc = entry["acc"]
            self.acc[name] = tuple(acc) if isinstance(acc, list) else acc
            self.seen.add(name)

    def warn_nonfinite(self, values: Mapping[str, float]) -> None:
        """Warn once per name for a non-finite logged value (it is logged as is)."""
        for name, v in values.items():
            if not math.isfinite(v) and name not in self._warned_nonfinite:
                self._warned_nonfinite.add(name)
                warnings.warn(
                    f"metric {name!r} is {v}; it is logged as is",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
