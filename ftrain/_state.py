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
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from ._schedulers import (
    SchedulerConfig,
    as_scheduler_config,
    copy_step_tracking,
    scheduler_configs,
)
from ._seed import global_seed

__all__ = ["TrainState", "advance"]

ModelLike = nn.Module | Mapping[str, nn.Module]
OptimizerLike = torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer]


def _models(value: Any) -> list[nn.Module]:
    if isinstance(value, nn.Module):
        return [value]
    return list(value.values())


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
            seed = global_seed()  # seed_everything(n) sets the run seed of later states
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
            copy_step_tracking(cloned.scheduler, original.scheduler)
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
        return scheduler_configs(self.scheduler)


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


_new = object.__new__


def _setter(name: str) -> Any:
    # The slot's own descriptor: a direct store, without object.__setattr__'s lookup.
    return TrainState.__dict__[name].__set__


_MODEL, _OPTIMIZER, _SCHEDULER, _SCALER = map(
    _setter, ("model", "optimizer", "scheduler", "scaler")
)
_STEP, _MICRO_STEP, _EPOCH, _BATCH_IDX = map(_setter, ("step", "micro_step", "epoch", "batch_idx"))
_EPOCH_LENGTH, _SEED, _RANK, _EXTRAS = map(_setter, ("epoch_length", "seed", "rank", "extras"))


def advance(
    state: TrainState, step: int, micro_step: int, batch_idx: int, scaler: Any, extras: Any
) -> TrainState:
    """The state after a training step: ``state.replace`` of the step's fields.

    ``advance(state, step, micro_step, batch_idx, scaler, extras)`` equals
    ``state.replace(step=..., micro_step=..., batch_idx=..., scaler=..., extras=...)``
    without evolve's generic path and validators (the counters are the caller's
    increments of validated ones): about 2 µs a step instead of 10. Every field is
    carried by name (``tests/test_state.py`` checks that none is missed).
    """
    if type(state) is not TrainState:
        return state.replace(
            step=step, micro_step=micro_step, batch_idx=batch_idx, scaler=scaler, extras=extras
        )
    new = _new(TrainState)
    _MODEL(new, state.model)
    _OPTIMIZER(new, state.optimizer)
    _SCHEDULER(new, state.scheduler)
    _SCALER(new, scaler)
    _STEP(new, step)
    _MICRO_STEP(new, micro_step)
    _EPOCH(new, state.epoch)
    _BATCH_IDX(new, batch_idx)
    _EPOCH_LENGTH(new, state.epoch_length)
    _SEED(new, state.seed)
    _RANK(new, state.rank)
    _EXTRAS(new, extras)
    return new
