"""Step combinators: small values that turn a step into a bigger step.

Each factory (``accumulate(4)``, ``clip_grad_norm(1.0)``, ...) checks its
arguments when called and returns a ``Combinator`` (or a ``GradientTransform``, which is one too): a callable
``Step -> Step`` with a readable repr, so pipelines read as ``toolz.pipe(step,
clip_grad_norm(1.0), accumulate(4))``. ``accumulate``, ``precision`` and ``compile``
wrap phases of a ``TrainStep``; gradient transforms run in the order written. Applied
to a step built by a user's ``step -> step`` function (:func:`ftrain.step_combinator`),
a combinator configures the step inside. Setting the same thing twice is an error,
not a silent override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._custom import CustomStep
from ._eval_step import EvalStep
from ._precision import Precision, parse_precision
from ._step import TrainStep, _check_accumulate
from ._transforms import clip_grad_norm as clip_grad_norm
from ._transforms import clip_grad_value as clip_grad_value
from ._transforms import skip_nonfinite as skip_nonfinite
from ._wrap import configure

__all__ = [
    "Combinator",
    "accumulate",
    "apply_fit_flags",
    "clip_grad_norm",
    "clip_grad_value",
    "compile",
    "precision",
    "randomness",
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


def _is_train_step(step: Any) -> bool:
    return isinstance(step, TrainStep)


def _on_train_step(step: Any, who: str, change: Any) -> Any:
    return configure(
        step, change, _is_train_step, f"{who} applies to steps built by ftrain.train_step"
    )


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

    def change(step: TrainStep) -> TrainStep:
        if step.accumulate is not None:
            raise ValueError("accumulate: the step already accumulates; apply accumulate once")
        return step.with_(accumulate=value)

    def apply(step: Any) -> Any:
        return _on_train_step(step, "accumulate", change)

    return Combinator(f"accumulate({shown!r})", apply)


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

    def change(step: Any) -> Any:
        if step.precision.name != "32-true":
            raise ValueError(
                f"precision: the step already runs at {step.precision.name!r}; set it once"
            )
        return step.with_(precision=resolved)

    def apply(step: Any) -> Any:
        return configure(
            step,
            change,
            lambda s: isinstance(s, (TrainStep, EvalStep)),
            "precision applies to steps built by ftrain.train_step or ftrain.eval_step",
        )

    return Combinator(f"precision({resolved.name!r})", apply)


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

    def change(s: TrainStep) -> TrainStep:
        if s.compile_kwargs is not None:
            raise ValueError("compile: the step is already compiled")
        return s.with_(compile_kwargs=dict(torch_compile_kwargs))

    def apply(s: Any) -> Any:
        return _on_train_step(s, "compile", change)

    if step is None:
        return Combinator(f"compile({shown})", apply)
    return apply(step)


def randomness(mode: str) -> Combinator:
    """Choose where a train or custom step draws its random numbers.

    ``"step"`` (the default): from torch's generators seeded from (seed, micro_step,
    rank), with the global streams put back after the step, so nothing outside the
    step sees a difference. ``"ambient"``: from the global generators, as a
    hand-written loop does (``fit(..., randomness="ambient")`` also leaves a
    ``DataLoader``'s own sampler and shuffling alone).

    Raises:
        ValueError: another mode.

    Example:
        >>> randomness("ambient")
        randomness('ambient')
    """
    if mode not in ("step", "ambient"):
        raise ValueError(f"randomness: mode must be 'step' or 'ambient', got {mode!r}")

    def change(step: Any) -> Any:
        if step.randomness != "step" and step.randomness != mode:
            raise ValueError(f"randomness: the step already draws {step.randomness!r}; set it once")
        return step.with_(randomness=mode)

    def apply(step: Any) -> Any:
        return configure(
            step,
            change,
            lambda s: isinstance(s, (TrainStep, CustomStep)),
            "randomness applies to steps built by ftrain.train_step or ftrain.custom_step",
        )

    return Combinator(f"randomness({mode!r})", apply)


def apply_fit_flags(
    step: Any, accumulate_grad_batches: Any, clip: Any, precision: Precision, mode: str
) -> Any:
    """``fit``'s accumulate/clip/precision/randomness flags applied to a (wrapped) step.

    ``clip`` is None or a gradient transform; a flag the step already sets is an error
    naming the flag; flags a hand-written step cannot take raise a TypeError.
    """
    wants = accumulate_grad_batches != 1 or clip is not None or precision.name != "32-true"
    if not wants and mode == "step":
        return step
    if mode != "step":
        step = randomness(mode)(step)
    if not wants:
        return step
    refusal = (
        "fit: accumulate_grad_batches, gradient_clip_val and precision apply to steps "
        "built by ftrain.train_step; a custom step does these itself"
    )

    def change(s: TrainStep) -> TrainStep:
        if accumulate_grad_batches != 1:
            if s.accumulate is not None:
                raise ValueError(
                    "fit: accumulate_grad_batches was given and the step already accumulates; "
                    "use one"
                )
            s = s.with_(accumulate=_check_accumulate(accumulate_grad_batches))
        if clip is not None:
            if any(t.group == "clip" for t in s.transforms):
                raise ValueError(
                    "fit: gradient_clip_val was given and the step already clips; use one"
                )
            s = s.with_transform(clip)
        if precision.name != "32-true" and s.precision != precision:
            if s.precision.name != "32-true":
                raise ValueError(
                    f"fit: precision={precision.name!r} was given and the step already runs "
                    f"at {s.precision.name!r}; use one"
                )
            s = s.with_(precision=precision)
        return s

    return configure(step, change, _is_train_step, refusal)
