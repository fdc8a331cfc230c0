"""Steps: ``step(state, batch) -> (state, metrics)``.

``train_step(loss_fn)`` builds a ``TrainStep``: a small frozen value whose call runs
one loader batch in the nanoGPT order of a hand-written loop:

1. seed torch's generators from (seed, micro_step, rank), and put the global
   generators back after the step (``randomness="ambient"``: neither);
2. forward under the precision's autocast, ``loss / n`` when accumulating, backward
   (inside ``no_sync`` on accumulating batches of a DDP model; an FSDP2 model has its
   gradient sync switched off for them with ``set_requires_gradient_sync``);
3. on the window's last batch only: rescale a short window, then the update phase of
   ``_update.py``: unscale, the gradient transforms in order (clip, skip_nonfinite,
   a user's), ``optimizer.step()``, the after-update transforms, ``zero_grad``; then
   step-interval schedulers.

``accumulate``, ``precision`` and ``compile`` return a new ``TrainStep`` with one
setting changed; transforms are appended to its ``transforms`` in the order written.
Metrics are detached tensors: a step never syncs the device except where a transform
(``skip_nonfinite``) or the GradScaler must decide on the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from ._precision import Precision, cast_floats, parse_precision
from ._seed import check_randomness, enter_step, leave_step
from ._state import TrainState, advance
from ._transforms import GradientTransform, named_trainable
from ._transforms import clip_grad_norm as _clip_grad_norm
from ._transforms import clip_grad_value as _clip_grad_value
from ._transforms import skip_nonfinite as _skip_nonfinite
from ._update import step_schedulers, update_phase

__all__ = ["Metrics", "Step", "TrainStep", "accumulate_at", "train_step"]

Metrics = dict[str, Any]
Step = Callable[[TrainState, Any], tuple[TrainState, Metrics]]


def _check_accumulate(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("accumulate: the schedule {epoch: n} must not be empty")
        for epoch, n in value.items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(
                    f"accumulate: schedule keys must be epochs (int >= 0), got {epoch!r}"
                )
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"accumulate: n must be an int >= 1, got {n!r} for epoch {epoch}")
        schedule = dict(sorted(value.items()))
        schedule.setdefault(0, 1)
        return tuple(sorted(schedule.items()))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"accumulate: n must be an int >= 1 or a dict {{epoch: n}}, got {value!r}")
    return value


def _number(name: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def accumulate_at(accumulate: Any, epoch: int) -> int:
    """Micro-batches per optimizer step in ``epoch`` for an ``accumulate`` setting.

    ``accumulate``: None, an int, or an ``{epoch: n}`` schedule (a mapping, or the sorted
    ``(epoch, n)`` pairs a ``TrainStep`` holds); epochs before its first key take 1.

    Example:
        >>> accumulate_at({0: 1, 2: 4}, 1), accumulate_at({0: 1, 2: 4}, 5), accumulate_at(3, 0)
        (1, 4, 3)
    """
    if accumulate is None:
        return 1
    if isinstance(accumulate, int):
        return accumulate
    n = 1
    pairs = sorted(accumulate.items()) if isinstance(accumulate, Mapping) else accumulate
    for start, value in pairs:
        if epoch >= start:
            n = value
    return n


def _split_output(out: Any) -> tuple[torch.Tensor, Metrics]:
    if isinstance(out, torch.Tensor):
        return out, {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        return out[0], dict(out[1])
    if isinstance(out, Mapping) and "loss" in out:
        metrics = dict(out)
        return metrics.pop("loss"), metrics
    raise TypeError(
        "loss_fn must return a scalar loss tensor, (loss, {name: value}) or a dict with "
        f"a 'loss' key, got {type(out).__name__}"
    )


def _backward(loss: torch.Tensor, n: int, scaler: Any) -> None:
    """``backward()`` of ``loss / n``, scaled by the GradScaler when there is one."""
    if loss.ndim != 0:
        raise ValueError(
            f"loss_fn must return a scalar loss (0-dim tensor), got shape {tuple(loss.shape)}"
        )
    scaled = loss / n if n > 1 else loss
    if scaler is not None:
        scaled = scaler.scale(scaled)
    scaled.backward()


def _detach_metrics(metrics: Metrics) -> Metrics:
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.requires_grad:
            metrics[key] = value.detach()
    return metrics


def _device_type(model: Any) -> str:
    module = model if isinstance(model, nn.Module) else next(iter(model.values()))
    for p in module.parameters():
        return p.device.type
    return "cpu"


def _is_ddp(model: Any) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def _cast_model(model: Any, dtype: torch.dtype) -> None:
    modules = [model] if isinstance(model, nn.Module) else list(model.values())
    for module in modules:
        for p in module.parameters():
            if p.is_floating_point() and p.dtype != dtype:
                module.to(dtype)
                break


_UNSET = object()


class _Cache:
    """Derived, rebuildable values (never run state): the optimizers' parameters."""

    __slots__ = ("device_type", "groups", "named", "optimizer", "optimizers", "plain", "sharded")

    def __init__(self) -> None:
        # A sentinel, not None: a state without optimizer must reach _setup's check.
        self.optimizer: Any = _UNSET
        self.named: list[Any] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.groups = 0
        self.device_type = "cpu"
        # FSDP2 models (one, or those of a mapping): gradient sync is switched per batch.
        self.sharded: list[Any] = []
        self.plain = False  # the step's settings let it take TrainStep._plain

    def stale(self, state: TrainState) -> bool:
        """Another optimizer, or param groups added since (``add_param_group`` when unfreezing)."""
        opt = state.optimizer
        if opt is not self.optimizer:
            return True
        if isinstance(opt, torch.optim.Optimizer):
            return len(opt.param_groups) != self.groups
        return sum(len(o.param_groups) for o in opt.values()) != self.groups

    def refresh(self, state: TrainState) -> None:
        self.optimizer = state.optimizer
        self.optimizers = state.optimizers
        # model.parameters() order, whatever the groups' order: what a hand loop clips.
        self.named = named_trainable(state.models, self.optimizers)
        self.groups = sum(len(opt.param_groups) for opt in state.optimizers)
        self.device_type = _device_type(state.model)
        self.sharded = [m for m in state.models if hasattr(m, "set_requires_gradient_sync")]


def _check_loss_name(_: Any, __: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"train_step: loss_name must be a non-empty str or None, got {value!r}")


@attrs.frozen(slots=True, repr=False)
class TrainStep:
    """A training step built from a loss function and settings; call it as a step.

    Build it with :func:`train_step` and change it with combinators; every
    combinator returns a new ``TrainStep``. ``transforms`` are its gradient and
    after-update transforms, in the order they run.
    """

    loss_fn: Callable[..., Any]
    accumulate: Any = None
    transforms: tuple[GradientTransform, ...] = ()
    precision: Precision = attrs.field(factory=lambda: parse_precision("32-true"))
    compile_kwargs: Mapping[str, Any] | None = None
    loss_name: str | None = attrs.field(default="loss", validator=_check_loss_name)
    randomness: str = attrs.field(default="step", validator=check_randomness)
    _compiled: Any = attrs.field(default=None, alias="compiled")
    _cache: _Cache = attrs.field(factory=_Cache, eq=False, alias="cache")

    def with_(self, **changes: Any) -> TrainStep:
        """A copy with some settings changed (and a fresh derived cache)."""
        if "compile_kwargs" in changes or "loss_fn" in changes:
            kwargs = changes.get("compile_kwargs", self.compile_kwargs)
            fn = changes.get("loss_fn", self.loss_fn)
            changes["compiled"] = torch.compile(fn, **kwargs) if kwargs is not None else None
        changes.setdefault("cache", _Cache())
        return attrs.evolve(self, **changes)

    def with_transform(self, transform: GradientTransform) -> TrainStep:
        """A copy with ``transform`` appended to its slot.

        Raises:
            ValueError: the step already holds a transform of that name (or group).
        """
        for held in self.transforms:
            why = held.conflict(transform)
            if why is not None:
                raise ValueError(why)
        return self.with_(transforms=(*self.transforms, transform))

    def n_for_epoch(self, epoch: int) -> int:
        """Micro-batches per optimizer step in ``epoch``."""
        return accumulate_at(self.accumulate, epoch)

    def __repr__(self) -> str:
        parts = [getattr(self.loss_fn, "__name__", repr(self.loss_fn))]
        if self.accumulate is not None:
            acc = self.accumulate if isinstance(self.accumulate, int) else dict(self.accumulate)
            parts.append(f"accumulate={acc!r}")
        for t in self.transforms:
            parts.append(_KEYWORD_REPR.get(t.name, repr)(t))
        if self.precision.name != "32-true":
            parts.append(f"precision={self.precision.name!r}")
        if self.loss_name != "loss":
            parts.append(f"loss_name={self.loss_name!r}")
        if self.randomness != "step":
            parts.append(f"randomness={self.randomness!r}")
        if self.compile_kwargs is not None:
            parts.append("compiled=True")
        return f"train_step({', '.join(parts)})"

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        cache = self._cache
        if cache.stale(state):
            self._setup(state)
        if self.randomness == "ambient":
            if cache.plain and state.scaler is None:
                return self._plain(state, batch, cache)
            return self._run(state, batch, cache)
        saved = enter_step(state.seed, state.micro_step, state.rank, cache.device_type == "cuda")
        try:
            if cache.plain and state.scaler is None:
                return self._plain(state, batch, cache)
            return self._run(state, batch, cache)
        finally:
            leave_step(saved)

    def _plain(self, state: TrainState, batch: Any, cache: _Cache) -> tuple[TrainState, Metrics]:
        """``_run`` for a step without accumulation, gradient transforms, precision
        settings or scaler (every batch ends a window): the same effects, fewer checks."""
        loss_fn = self._compiled if self._compiled is not None else self.loss_fn
        out = loss_fn(state.model, batch)
        metrics: Metrics
        if type(out) is torch.Tensor:
            loss, metrics = out, {}
        else:
            loss, metrics = _split_output(out)
            if metrics:
                _detach_metrics(metrics)
        if loss.ndim != 0:
            _backward(loss, 1, None)  # raises: not a scalar
        loss.backward()
        name = self.loss_name
        if name is not None and name not in metrics:
            metrics[name] = loss.detach()
        optimizers = cache.optimizers
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        step_schedulers(state, state.batch_idx + 1)
        new = advance(
            state, state.step + 1, state.micro_step + 1, state.batch_idx + 1, None, state.extras
        )
        return new, metrics

    def _run(self, state: TrainState, batch: Any, cache: _Cache) -> tuple[TrainState, Metrics]:
        model = state.model
        precision = self.precision
        scaler = state.scaler
        if precision.scaled and scaler is None:
            scaler = precision.make_scaler(cache.device_type)
        if precision.param_dtype is not None:
            batch = cast_floats(batch, precision.param_dtype)

        n = self.n_for_epoch(state.epoch) if self.accumulate is not None else 1
        batch_idx = state.batch_idx
        window_pos = batch_idx % n
        length = state.epoch_length
        boundary = window_pos == n - 1 or (length is not None and batch_idx + 1 >= length)

        loss_fn = self._compiled if self._compiled is not None else self.loss_fn
        no_sync = not boundary and _is_ddp(model)
        if cache.sharded and n > 1:
            # FSDP2: reduce-scatter the gradients on a window's last batch only.
            for sharded in cache.sharded:
                sharded.set_requires_gradient_sync(boundary)
        if not no_sync and precision.autocast_dtype is None:
            # The common case needs no context manager: enter none (they cost per step).
            loss, metrics = _split_output(loss_fn(model, batch))
            _backward(loss, n, scaler)
        else:
            with model.no_sync() if no_sync else contextlib.nullcontext():
                with precision.autocast(cache.device_type):
                    loss, metrics = _split_output(loss_fn(model, batch))
                _backward(loss, n, scaler)
        if metrics:
            _detach_metrics(metrics)
        name = self.loss_name
        if name is not None and name not in metrics:
            metrics[name] = loss.detach()

        if not boundary:
            new = advance(
                state, state.step, state.micro_step + 1, batch_idx + 1, scaler, state.extras
            )
            return new, metrics

        if window_pos + 1 < n:
            # A short window (epoch end) divided its losses by n: make it an exact mean.
            grads = [p.grad for _, p in cache.named if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, n / (window_pos + 1))
        extras = update_phase(
            state, self.transforms, cache.named, cache.optimizers, scaler, metrics
        )
        step_schedulers(state, batch_idx + 1)
        new = advance(state, state.step + 1, state.micro_step + 1, batch_idx + 1, scaler, extras)
        return new, metrics

    def _setup(self, state: TrainState) -> None:
        if state.optimizer is None:
            raise ValueError(
                "train_step: the state has no optimizer (TrainState.create(..., optimizer))"
            )
        self._cache.refresh(state)
        precision = self.precision
        self._cache.plain = (
            self.accumulate in (None, 1)
            and not self.transforms
            and not precision.scaled
            and precision.param_dtype is None
            and precision.autocast_dtype is None
        )
        if self.precision.param_dtype is not None:
            _cast_model(state.model, self.precision.param_dtype)


def _clip_keyword(t: GradientTransform) -> str:
    kind = "clip_norm" if t.name == "clip_grad_norm" else "clip_value"
    return f"{kind}={repr(t)[len(t.name) + 1 : -1].split(', ')[0]}"


_KEYWORD_REPR: dict[str, Callable[[GradientTransform], str]] = {
    "clip_grad_norm": _clip_keyword,
    "clip_grad_value": _clip_keyword,
    "skip_nonfinite": lambda t: "skip_nonfinite=True",
}


def train_step(
    loss_fn: Callable[..., Any],
    *,
    accumulate: int | Mapping[int, int] | None = None,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    norm_type: float = 2.0,
    precision: str | int = "32-true",
    skip_nonfinite: bool = False,
    loss_name: str | None = "loss",
    randomness: str = "step",
) -> TrainStep:
    """Build a training step from ``loss_fn(model, batch)``.

    ``loss_fn`` returns a scalar loss tensor, ``(loss, {name: value})`` or a dict
    with a ``"loss"`` key. The keyword settings build exactly the pipeline the
    combinators build (``train_step(f, accumulate=4)`` equals
    ``accumulate(4)(train_step(f))``); the gradient transforms run in the order
    clip, skip_nonfinite.

    Args:
        loss_fn: the forward computation.
        accumulate: micro-batches per optimizer step, or ``{epoch: n}``.
        clip_norm: clip the gradients' total norm to this value.
        clip_value: clip each gradient element to [-v, v].
        norm_type: the norm for ``clip_norm``.
        precision: see :func:`ftrain.precision`.
        skip_nonfinite: skip updates whose gradients hold NaN/Inf.
        loss_name: the metric the loss is reported as (unless ``loss_fn`` returns one
            of that name itself, e.g. ``ft.log(loss, on_epoch=True)``); None: none.
        randomness: ``"step"``: each step draws from a generator seeded from (seed,
            micro_step, rank), and the global streams outside the step are left as
            they were; ``"ambient"``: the step draws from the global generator as a
            hand-written loop does.

    Returns:
        A ``TrainStep``: call it as ``state, metrics = step(state, batch)``.

    Raises:
        TypeError, ValueError: a bad setting, naming it.

    Example:
        >>> import torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> step = ft.train_step(lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
        >>> state, metrics = step(state, (torch.ones(4, 2), torch.zeros(4, 1)))
        >>> state.step, sorted(metrics)
        (1, ['loss'])
    """
    if not callable(loss_fn):
        raise TypeError(f"train_step: loss_fn must be callable, got {type(loss_fn).__name__}")
    if clip_norm is not None and clip_value is not None:
        raise ValueError("train_step: give clip_norm or clip_value, not both")
    transforms: list[GradientTransform] = []
    if clip_norm is not None:
        p = _number("norm_type", norm_type)
        transforms.append(_clip_grad_norm(_number("clip_norm", clip_norm), p))
    elif clip_value is not None:
        transforms.append(_clip_grad_value(_number("clip_value", clip_value)))
    if not isinstance(skip_nonfinite, bool):
        raise TypeError(f"train_step: skip_nonfinite must be a bool, got {skip_nonfinite!r}")
    if skip_nonfinite:
        transforms.append(_skip_nonfinite())
    check_randomness(None, None, randomness)
    return TrainStep(
        loss_fn,
        accumulate=_check_accumulate(accumulate),
        transforms=tuple(transforms),
        precision=parse_precision(precision),
        loss_name=loss_name,
        randomness=randomness,
    )
