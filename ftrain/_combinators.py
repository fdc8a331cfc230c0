"""Step combinators: small values that turn a step into a bigger step.

Each factory (``accumulate(4)``, ``clip_grad_norm(1.0)``, ...) checks its
arguments when called and returns a ``Combinator``: a callable ``Step -> Step``
with a readable repr, so pipelines read as ``toolz.pipe(step, clip_grad_norm(1.0),
accumulate(4))``. A combinator sets one setting of a ``TrainStep``; the step then
runs its phases in the fixed order of a hand-written loop, whatever the order of
composition. Setting the same thing twice is an error, not a silent override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._precision import parse_precision
from ._step import Clip, EvalStep, TrainStep, _check_accumulate, _number

__all__ = [
    "Combinator",
    "accumulate",
    "clip_grad_norm",
    "clip_grad_value",
    "compile",
    "precision",
    "skip_nonfinite",
]


@attrs.frozen(slots=True)
class Combinator:
    """A ``Step -> Step`` transformation with a readable repr."""

    name: str
    transform: Callable[[Any], Any] = attrs.field(repr=False)

    def __call__(self, step: Any) -> Any:
        return self.transform(step)

    def __repr__(self) -> str:
        return self.name


def _train_step(step: Any, who: str) -> TrainStep:
    if not isinstance(step, TrainStep):
        raise TypeError(
            f"{who} applies to steps built by ftrain.train_step, got {type(step).__name__}; "
            "a hand-written step does this itself"
        )
    return step


def accumulate(n: int | Mapping[int, int]) -> Combinator:
    """Accumulate gradients over ``n`` loader batches per optimizer step.

    One call of the step = one loader batch. Each batch's loss is divided by ``n``
    before backward (as Lightning and nanoGPT do), accumulating batches run inside
    DDP's ``no_sync`` and skip the optimizer, and ``state.step`` counts updates.
    Windows restart each epoch; the epoch's last batch closes a short window of
    ``r < n`` batches, whose gradient is rescaled by ``n / r`` into an exact mean
    (Lightning leaves it at ``r / n``).

    Args:
        n: an int >= 1, or Lightning's schedule ``{epoch: n}`` (from that 0-based
            epoch on, n; epochs before the first key use 1).

    Returns:
        A combinator.

    Raises:
        ValueError: n < 1, or a bad schedule.

    Example:
        >>> accumulate(4)
        accumulate(4)
        >>> accumulate(0)
        Traceback (most recent call last):
        ...
        ValueError: accumulate: n must be an int >= 1 or a dict {epoch: n}, got 0
    """
    value = _check_accumulate(n)
    shown = value if isinstance(value, int) else dict(value)

    def apply(step: Any) -> TrainStep:
        step = _train_step(step, "accumulate")
        if step.accumulate is not None:
            raise ValueError("accumulate: the step already accumulates; apply accumulate once")
        return step.with_(accumulate=value)

    return Combinator(f"accumulate({shown!r})", apply)


def _clip(algorithm: str, value: float, norm_type: float, who: str) -> Combinator:
    clip = Clip(algorithm, value, norm_type)

    def apply(step: Any) -> TrainStep:
        step = _train_step(step, who)
        if step.clip is not None:
            raise ValueError(f"{who}: the step already clips gradients; clip once")
        return step.with_(clip=clip)

    args = f"{value!r}" if algorithm == "value" or norm_type == 2.0 else f"{value!r}, {norm_type!r}"
    return Combinator(f"{who}({args})", apply)


def clip_grad_norm(max_norm: float, norm_type: float = 2.0) -> Combinator:
    """Clip the total gradient norm to ``max_norm`` right before each update.

    Uses ``torch.nn.utils.clip_grad_norm_`` on the accumulated, unscaled gradients
    of the optimizer's parameters; the pre-clip norm is reported as ``grad_norm``.

    Args:
        max_norm: a number > 0.
        norm_type: the p of the p-norm (``inf`` for the max norm).

    Raises:
        TypeError: a non-numeric argument. ValueError: a value <= 0.

    Example:
        >>> clip_grad_norm(1.0)
        clip_grad_norm(1.0)
    """
    return _clip(
        "norm",
        _number("clip_grad_norm: max_norm", max_norm),
        _number("clip_grad_norm: norm_type", norm_type),
        "clip_grad_norm",
    )


def clip_grad_value(clip_value: float) -> Combinator:
    """Clip every gradient element to ``[-clip_value, clip_value]`` before each update.

    Uses ``torch.nn.utils.clip_grad_value_`` on the accumulated, unscaled gradients.

    Raises:
        TypeError: a non-numeric value. ValueError: a value <= 0.

    Example:
        >>> clip_grad_value(0.5)
        clip_grad_value(0.5)
    """
    return _clip(
        "value", _number("clip_grad_value: clip_value", clip_value), 2.0, "clip_grad_value"
    )


def precision(value: str | int) -> Combinator:
    """Run a step at a numeric precision (Lightning's names).

    "32-true" (default), "64-true" (weights and inputs float64), "bf16-mixed"
    (autocast bfloat16), "16-mixed" (autocast float16 + GradScaler, whose state
    lives in ``state.scaler``), "bf16-true"/"16-true" (weights, optimizer state and
    inputs in half precision). Short forms 64, 32, 16, "bf16", "16", "32", "64".
    Applies to train and eval steps.

    Raises:
        ValueError: an unknown value, listing the accepted ones.

    Example:
        >>> precision("bf16-mixed")
        precision('bf16-mixed')
    """
    resolved = parse_precision(value)

    def apply(step: Any) -> Any:
        if isinstance(step, (TrainStep, EvalStep)):
            if step.precision.name != "32-true":
                raise ValueError(
                    f"precision: the step already runs at {step.precision.name!r}; set it once"
                )
            return step.with_(precision=resolved)
        raise TypeError(
            "precision applies to steps built by ftrain.train_step or ftrain.eval_step, "
            f"got {type(step).__name__}"
        )

    return Combinator(f"precision({resolved.name!r})", apply)


def skip_nonfinite() -> Combinator:
    """Skip any update whose gradients hold NaN or Inf, and count it.

    The parameters and optimizer state are left untouched; the gradients are
    dropped; ``state.extras["skip_nonfinite"]`` and the ``skipped_steps`` metric
    count skipped updates. ``state.step`` still advances (as Lightning counts steps
    skipped by the GradScaler). Deciding costs one host sync per optimizer step.

    Example:
        >>> skip_nonfinite()
        skip_nonfinite()
    """

    def apply(step: Any) -> TrainStep:
        step = _train_step(step, "skip_nonfinite")
        if step.skip_nonfinite:
            raise ValueError("skip_nonfinite: the step already skips non-finite updates")
        return step.with_(skip_nonfinite=True)

    return Combinator("skip_nonfinite()", apply)


def compile(step: Any = None, **torch_compile_kwargs: Any) -> Any:
    """Compile the loss computation of a train step with ``torch.compile`` (opt-in).

    Only ``loss_fn(model, batch)`` is compiled; the step's counters, branches and
    optimizer update stay eager. ``compile(step, mode=...)`` returns the compiled
    step; ``compile(mode=...)`` returns a combinator.

    Args:
        step: a ``TrainStep``, or None for the combinator form.
        **torch_compile_kwargs: passed to ``torch.compile``.
    """
    shown = ", ".join(f"{k}={v!r}" for k, v in torch_compile_kwargs.items())

    def apply(s: Any) -> TrainStep:
        s = _train_step(s, "compile")
        if s.compile_kwargs is not None:
            raise ValueError("compile: the step is already compiled")
        return s.with_(compile_kwargs=dict(torch_compile_kwargs))

    if step is None:
        return Combinator(f"compile({shown})", apply)
    return apply(step)
