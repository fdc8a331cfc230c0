"""Evaluation steps: ``eval_step(fn)`` runs ``fn(model, batch) -> {name: value}``
without gradients, in eval mode, under the step's precision."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch

from ._precision import Precision, cast_floats, parse_precision
from ._state import TrainState
from ._step import Metrics, _cast_model, _device_type

__all__ = ["EvalStep", "eval_step"]


@attrs.frozen(slots=True, repr=False)
class EvalStep:
    """An evaluation step: ``fn(model, batch) -> {name: value}`` without gradients.

    Called as ``state, metrics = step(state, batch)``; the state is returned
    unchanged. The model is put in eval mode for the call and its mode restored
    (the loop switches modes once per evaluation run instead).
    """

    fn: Callable[..., Any]
    precision: Precision = attrs.field(factory=lambda: parse_precision("32-true"))
    inference: bool = False

    def with_(self, **changes: Any) -> EvalStep:
        """A copy with some settings changed."""
        return attrs.evolve(self, **changes)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", repr(self.fn))
        extra = f", precision={self.precision.name!r}" if self.precision.name != "32-true" else ""
        return f"eval_step({name}{extra})"

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        models = state.models
        was_training = [m.training for m in models]
        if any(was_training):
            for m in models:
                m.eval()
        try:
            return state, self.run(state, batch)
        finally:
            if any(was_training):
                for m, mode in zip(models, was_training, strict=True):
                    m.train(mode)

    def run(self, state: TrainState, batch: Any) -> Metrics:
        """The metrics of one batch, leaving module modes alone."""
        precision = self.precision
        if precision.param_dtype is not None:
            _cast_model(state.model, precision.param_dtype)
            batch = cast_floats(batch, precision.param_dtype)
        grad_mode = torch.inference_mode() if self.inference else torch.no_grad()
        with grad_mode, precision.autocast(_device_type(state.model)):
            out = self.fn(state.model, batch)
        if isinstance(out, torch.Tensor):
            return {"loss": out}
        if not isinstance(out, Mapping):
            raise TypeError(
                "eval_step: fn must return a {name: value} mapping or a tensor, "
                f"got {type(out).__name__}"
            )
        return dict(out)


def eval_step(fn: Callable[..., Any], *, precision: str | int = "32-true") -> EvalStep:
    """Build an evaluation step from ``fn(model, batch) -> {name: value}``.

    Args:
        fn: computes the metrics of one batch; a bare tensor is named ``"loss"``.
        precision: autocast / dtype as for training.

    Returns:
        An ``EvalStep``.

    Example:
        >>> import torch, ftrain as ft
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, None)
        >>> step = ft.eval_step(lambda m, b: {"out": m(b).sum()})
        >>> _, metrics = step(state, torch.zeros(3, 2))
        >>> list(metrics)
        ['out']
    """
    if not callable(fn):
        raise TypeError(f"eval_step: fn must be callable, got {type(fn).__name__}")
    return EvalStep(fn, precision=parse_precision(precision))
