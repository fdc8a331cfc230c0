"""Training state: everything a run remembers, as one frozen value.

``TrainState`` holds the model, the optimizer, the optional LR scheduler and
gradient scaler, the loop counters, the run seed and ``extras``, where step
combinators keep what they remember. Nothing else is remembered anywhere, so a
checkpoint of the state is a complete snapshot of the run.

Donation: a step updates the tensors inside the state in place (parameters,
gradients, optimizer buffers), exactly as a hand-written loop does, and returns
a new state shell. The state passed in is consumed: do not use it afterwards.
``clone()`` makes an independent deep copy for tests and for tools that must not
disturb a run.
"""

from __future__ import annotations

import copy
import functools
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

__all__ = ["SchedulerConfig", "TrainState", "apply_to_models"]

ModelLike = nn.Module | Mapping[str, nn.Module]
OptimizerLike = torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer]


@attrs.frozen(slots=True)
class SchedulerConfig:
    """How the loop steps an LR scheduler (Lightning's scheduler dict, as a value).

    Attributes:
        scheduler: a ``torch.optim.lr_scheduler`` object.
        interval: "epoch" (stepped at each training epoch's end, Lightning's default)
            or "step" (after each optimizer step, never on accumulating batches).
        frequency: step it every ``frequency`` epochs ("epoch"), or on updating
            batches whose ``(batch_idx + 1) % frequency == 0`` ("step", Lightning's rule).
        monitor: for ``ReduceLROnPlateau``: the logged metric it is fed.
        strict: a missing monitor is an error (True) or a warning (False).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1), interval="step").interval
        'step'
    """

    scheduler: Any
    interval: str = attrs.field(default="epoch")
    frequency: int = attrs.field(default=1)
    monitor: str | None = None
    strict: bool = True

    @interval.validator
    def _check_interval(self, _: Any, value: str) -> None:
        if value not in ("epoch", "step"):
            raise ValueError(f"SchedulerConfig: interval must be 'epoch' or 'step', got {value!r}")

    @frequency.validator
    def _check_frequency(self, _: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"SchedulerConfig: frequency must be an int >= 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and self.monitor is None:
            raise ValueError(
                "SchedulerConfig: ReduceLROnPlateau needs monitor=<name of a logged metric>"
            )

    def state_dict(self) -> dict[str, Any]:
        """The wrapped scheduler's state."""
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped scheduler's state."""
        self.scheduler.load_state_dict(state)


def as_scheduler_config(value: Any) -> SchedulerConfig:
    """A bare scheduler gets Lightning's defaults: stepped once per epoch.

    Raises:
        TypeError: a list or tuple (several schedulers go in a mapping), or an object
            without ``step`` and ``state_dict``.
    """
    if isinstance(value, SchedulerConfig):
        return value
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"scheduler: got a {type(value).__name__} of {len(value)}; pass one scheduler, or "
            "a mapping {name: scheduler} for several"
        )
    if not (hasattr(value, "step") and hasattr(value, "state_dict")):
        raise TypeError(
            f"scheduler: expected an LR scheduler (with step and state_dict), got "
            f"{type(value).__name__}"
        )
    return SchedulerConfig(value)


def _models(value: Any) -> list[nn.Module]:
    if isinstance(value, nn.Module):
        return [value]
    return list(value.values())


def apply_to_models(value: Any, fn: Any) -> None:
    """Call ``fn(module)`` on a model or on each model of a mapping."""
    for module in _models(value):
        fn(module)


def _check_model(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, nn.Module):
        return
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(m, nn.Module) for m in value.values())
    ):
        return
    raise TypeError(
        f"TrainState: {attribute.name} must be a torch.nn.Module or a non-empty mapping "
        f"of name -> Module, got {type(value).__name__}"
    )


def _check_optimizer(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or isinstance(value, torch.optim.Optimizer):
        return
    if isinstance(value, Mapping) and all(
        isinstance(o, torch.optim.Optimizer) for o in value.values()
    ):
        return
    raise TypeError(
        f"TrainState: optimizer must be a torch.optim.Optimizer, a mapping of name -> "
        f"Optimizer, or None, got {type(value).__name__}"
    )


def _non_negative_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"TrainState: {attribute.name} must be an int >= 0, got {value!r}")


def _check_seed(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"TrainState: seed must be an int in [0, 2**32 - 1], got {value!r}")


@attrs.frozen(slots=True, eq=False)
class TrainState:
    """The whole state of a training run, as one immutable value.

    Fields marked *checkpointed* are saved by :func:`ftrain.save_checkpoint`.

    Attributes:
        model: the module (or a mapping name -> module) being trained. *checkpointed*
        optimizer: its optimizer (or a mapping name -> optimizer). *checkpointed*
        scheduler: an optional LR scheduler (or a mapping). *checkpointed*
        scaler: an optional ``torch.amp.GradScaler`` (set by ``precision("16-mixed")``).
            *checkpointed*
        step: optimizer steps taken (Lightning's ``global_step``). *checkpointed*
        micro_step: training batches consumed in total. *checkpointed*
        epoch: the current 0-based epoch. *checkpointed*
        batch_idx: batches consumed in the current epoch. *checkpointed*
        epoch_length: batches the current epoch will have, when known; lets
            ``accumulate`` close a short last window. *checkpointed*
        seed: the run seed; randomness is derived from (seed, micro_step, rank).
            *checkpointed*
        rank: this process's rank in a distributed run (static, not checkpointed).
        extras: combinator state, keyed by combinator name. *checkpointed*
    """

    model: Any = attrs.field(validator=_check_model)
    optimizer: Any = attrs.field(default=None, validator=_check_optimizer)
    scheduler: Any = None
    scaler: Any = None
    step: int = attrs.field(default=0, validator=_non_negative_int)
    micro_step: int = attrs.field(default=0, validator=_non_negative_int)
    epoch: int = attrs.field(default=0, validator=_non_negative_int)
    batch_idx: int = attrs.field(default=0, validator=_non_negative_int)
    epoch_length: int | None = None
    seed: int = attrs.field(default=0, validator=_check_seed)
    rank: int = 0
    extras: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def create(
        cls,
        model: ModelLike,
        optimizer: OptimizerLike | None,
        scheduler: Any = None,
        seed: int | None = None,
        *,
        scaler: Any = None,
    ) -> TrainState:
        """Build the initial state and check that the parts belong together.

        Args:
            model: a module, or a mapping of name -> module (e.g. generator and
                discriminator for a custom step).
            optimizer: an optimizer over the model's parameters, a mapping of them,
                or None for evaluation-only states.
            scheduler: an optional LR scheduler, or a mapping of them.
            seed: the run seed, in [0, 2**32 - 1]; None takes the one `seed_everything`
                set (0 if it was not called).
            scaler: an optional ``torch.amp.GradScaler``.

        Returns:
            A state with all counters at zero.

        Raises:
            TypeError: model or optimizer of the wrong type.
            ValueError: an optimizer holding parameters that belong to no model,
                a bad seed.

        Example:
            >>> import torch, ftrain as ft
            >>> net = torch.nn.Linear(2, 1)
            >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
            >>> (state.step, state.micro_step, state.epoch)
            (0, 0, 0)
        """
        if scheduler is not None and not isinstance(scheduler, Mapping):
            scheduler = as_scheduler_config(scheduler)
        elif isinstance(scheduler, Mapping):
            scheduler = {k: as_scheduler_config(v) for k, v in scheduler.items()}
        if seed is None:
            # seed_everything(n) sets the run seed of states created after it.
            env = os.environ.get("FTRAIN_GLOBAL_SEED", os.environ.get("PL_GLOBAL_SEED"))
            seed = int(env) if env is not None and env.strip().isdigit() else 0
        state = cls(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, seed=seed)
        _check_ownership(state)
        return state

    def replace(self, **changes: Any) -> TrainState:
        """Return a copy of the state shell with some fields replaced."""
        return attrs.evolve(self, **changes)

    def clone(self) -> TrainState:
        """Deep-copy the state: model, optimizer, scheduler, scaler and extras.

        The copy shares no tensor with the original, keeps gradients accumulated
        so far, and its optimizer (and scheduler) refer to the copied parts.
        """
        parts = (self.model, self.optimizer, self.scheduler, self.scaler, dict(self.extras))
        memo: dict[int, Any] = {}
        model, optimizer, scheduler, scaler, extras = copy.deepcopy(parts, memo)
        # Deep-copying a Parameter drops its .grad: carry gradients accumulated mid-window.
        for module in self.models:
            for p in module.parameters():
                if p.grad is not None:
                    memo[id(p)].grad = p.grad.detach().clone()
        new = attrs.evolve(
            self,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            extras=extras,
        )
        for original, cloned in zip(self.schedulers, new.schedulers, strict=True):
            _track_step_calls(cloned.scheduler, original.scheduler)
        return new

    @property
    def models(self) -> list[nn.Module]:
        """The model, or the models of a mapping, as a list."""
        return _models(self.model)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizer, or the optimizers of a mapping, as a list."""
        if self.optimizer is None:
            return []
        if isinstance(self.optimizer, torch.optim.Optimizer):
            return [self.optimizer]
        return list(self.optimizer.values())

    @property
    def schedulers(self) -> list[SchedulerConfig]:
        """The scheduler(s), each as a ``SchedulerConfig``."""
        if self.scheduler is None:
            return []
        if isinstance(self.scheduler, Mapping):
            return [as_scheduler_config(s) for s in self.scheduler.values()]
        return [as_scheduler_config(self.scheduler)]


def _track_step_calls(scheduler: Any, original: Any) -> None:
    """Re-install on a copied optimizer the ``step`` wrapper torch's LR schedulers add.

    Optimizer pickling (hence deepcopy) drops it, and without it the copy's first
    ``scheduler.step()`` warns that ``optimizer.step()`` was overridden.
    """
    opt = getattr(scheduler, "optimizer", None)
    source = getattr(original, "optimizer", None)
    if opt is None or source is None or not hasattr(source.step, "_wrapped_by_lr_sched"):
        return
    if hasattr(opt.step, "_wrapped_by_lr_sched"):
        return
    opt_ref = weakref.ref(opt)
    func = type(opt).step

    @functools.wraps(func)
    def step(*args: Any, **kwargs: Any) -> Any:
        target = opt_ref()
        target._opt_called = True  # type: ignore[union-attr]
        return func(target, *args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    opt.step = step  # type: ignore[method-assign]
    if getattr(source, "_opt_called", False):
        opt._opt_called = True


def _check_ownership(state: TrainState) -> None:
    owned = {id(p) for module in state.models for p in module.parameters()}
    for index, optimizer in enumerate(state.optimizers):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in owned:
                    raise ValueError(
                        "TrainState.create: optimizer"
                        + (f" #{index}" if len(state.optimizers) > 1 else "")
                        + " holds a parameter that belongs to none of the models; build the "
                        "optimizer from model.parameters() of the model you pass"
                    )


def _make_advance() -> Callable[..., TrainState]:
    # Generated straight-line code, as attrs generates __init__: one object.__setattr__
    # per field, so every field of TrainState is carried whatever fields are added.
    moved = ("step", "micro_step", "batch_idx", "scaler", "extras")
    lines = ["def advance(state, step, micro_step, batch_idx, scaler, extras):"]
    lines.append("    if type(state) is not TrainState:")
    lines.append("        return state.replace(step=step, micro_step=micro_step,")
    lines.append("                             batch_idx=batch_idx, scaler=scaler, extras=extras)")
    lines.append("    new = _new(TrainState)")
    for field in attrs.fields(TrainState):
        value = field.name if field.name in moved else f"state.{field.name}"
        lines.append(f"    _set(new, {field.name!r}, {value})")
    lines.append("    return new")
    namespace: dict[str, Any] = {
        "TrainState": TrainState,
        "_new": object.__new__,
        "_set": object.__setattr__,
    }
    exec("\n".join(lines), namespace)
    return namespace["advance"]  # type: ignore[no-any-return]


advance: Callable[..., TrainState] = _make_advance()
advance.__doc__ = """The state after a training step: ``state.replace`` of the step's fields.

``advance(state, step, micro_step, batch_idx, scaler, extras)`` equals
``state.replace(step=..., micro_step=..., batch_idx=..., scaler=..., extras=...)``
without evolve's generic path and validators (the counters are the caller's
increments of validated ones): about 1 µs a step instead of 3, and several times
that in a real loop, where evolve's code is out of the CPU's caches.
"""
