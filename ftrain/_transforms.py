"""Transforms: what runs between backward and the update, and after the update.

A step's update phase is fixed: (unscale) → *gradient transforms* → ``optimizer.step()``
→ *after-update transforms* → ``zero_grad``. The slots are open. A transform is a
small value in optax's shape:

- ``init(state) -> its_state`` (optional; its state lives in ``state.extras[name]``,
  so it is checkpointed and restored with the run);
- a gradient transform's ``update(grads, its_state, state) -> (grads, its_state, metrics)``,
  where ``grads`` maps parameter names (``model.named_parameters()`` order) to the
  accumulated, unscaled gradients; returning ``None`` as grads skips this update;
- an after-update transform's ``update(params, its_state, state) -> (its_state, metrics)``,
  where ``params`` maps names to the parameters just updated.

A transform is also a combinator: ``toolz.pipe(train_step(f), t1, t2)`` runs t1 then t2.
``clip_grad_norm``, ``clip_grad_value`` and ``skip_nonfinite`` below are transforms like
any other, written with nothing but this public protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from ._wrap import configure

__all__ = [
    "GradientTransform",
    "after_update",
    "clip_grad_norm",
    "clip_grad_value",
    "gradient_transform",
    "init_missing",
    "named_trainable",
    "run_after_update",
    "run_gradient_transforms",
    "skip_nonfinite",
]

_MISSING = object()
SLOTS = ("gradient", "after_update")


def _check_name(_: Any, __: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"transform: name must be a non-empty str, got {value!r}")


def _check_callable(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"transform: {attribute.name} must be callable, got {type(value).__name__}")


@attrs.frozen(slots=True, repr=False)
class GradientTransform:
    """A transform in one of a step's slots; calling it on a step adds it there.

    Attributes:
        name: the key of its state in ``state.extras``; one per step.
        update: the slot's update function (see the module docs).
        init: ``init(state) -> its_state``, or None for a stateless transform.
        slot: ``"gradient"`` (before ``optimizer.step()``) or ``"after_update"``.
        group: transforms of one group exclude each other in a step (the two clips).
        shown: its repr, the code that builds it.
    """

    name: str = attrs.field(validator=_check_name)
    update: Callable[..., Any] = attrs.field(validator=_check_callable, eq=False)
    init: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=_check_callable, eq=False
    )
    slot: str = attrs.field(default="gradient")
    group: str | None = None
    shown: str | None = None
    twice: str | None = None
    # What equality compares instead of the functions (a built-in's settings).
    key: Any = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.key is None:
            object.__setattr__(self, "key", (self.update, self.init))

    @slot.validator
    def _check_slot(self, _: Any, value: str) -> None:
        if value not in SLOTS:
            raise ValueError(f"transform: slot must be one of {SLOTS}, got {value!r}")

    def __call__(self, step: Any) -> Any:
        return configure(
            step,
            lambda s: s.with_transform(self),
            lambda s: callable(getattr(s, "with_transform", None)),
            f"{self.name} applies to steps built by ftrain.train_step",
        )

    def __repr__(self) -> str:
        if self.shown is not None:
            return self.shown
        factory = "gradient_transform" if self.slot == "gradient" else "after_update"
        return f"{factory}({getattr(self.update, '__name__', 'update')}, name={self.name!r})"

    def conflict(self, other: GradientTransform) -> str | None:
        """Why ``other`` cannot join a step that holds ``self``, or None."""
        if other.name == self.name or (other.group is not None and other.group == self.group):
            return other.twice or (
                f"{other.name}: the step already has a transform named {self.name!r}; apply it once"
            )
        return None


def gradient_transform(
    update: Callable[..., Any], *, name: str, init: Callable[[Any], Any] | None = None
) -> GradientTransform:
    """A gradient transform: runs once per optimizer update, on the accumulated grads.

    Args:
        update: ``update(grads, its_state, state) -> (grads, its_state, metrics)``;
            ``grads`` is a ``{param name: grad}`` dict in ``model.named_parameters()``
            order (unscaled); return the same or new tensors, or None to skip the update.
        name: the key of its state in ``state.extras`` (and of errors).
        init: ``init(state) -> its_state``; None: no state (``its_state`` is None).

    Returns:
        A ``GradientTransform``; apply it to a step like any combinator.

    Raises:
        TypeError: update or init not callable. ValueError: an empty name.

    Example:
        >>> import torch, ftrain as ft
        >>> def halve(grads, st, state):
        ...     torch._foreach_mul_(list(grads.values()), 0.5)
        ...     return grads, st, {}
        >>> ft.gradient_transform(halve, name="halve")
        gradient_transform(halve, name='halve')
    """
    return GradientTransform(name, update, init, "gradient")


def after_update(
    update: Callable[..., Any], *, name: str, init: Callable[[Any], Any] | None = None
) -> GradientTransform:
    """An after-update transform: acts on the weights after each ``optimizer.step()``.

    Args:
        update: ``update(params, its_state, state) -> (its_state, metrics)``; ``params``
            is a ``{name: parameter}`` dict of the trainable parameters, in model order.
        name: the key of its state in ``state.extras``.
        init: ``init(state) -> its_state``; None: no state.

    Returns:
        A ``GradientTransform`` in the ``"after_update"`` slot (EMA, Lookahead, SWA).

    Example:
        >>> import ftrain as ft
        >>> ft.after_update(lambda params, st, state: (st, {}), name="noop").slot
        'after_update'
    """
    return GradientTransform(name, update, init, "after_update")


def named_trainable(models: Sequence[torch.nn.Module], optimizers: Sequence[Any]) -> list[Any]:
    """``(name, parameter)`` of the optimizers' parameters, in ``model.parameters()`` order.

    The order a hand loop passes to ``clip_grad_norm_(model.parameters())``, whatever
    the optimizer's group order. Names carry the model's key for a mapping of models.
    """
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    prefix = len(models) > 1
    out = []
    for index, module in enumerate(models):
        for name, p in module.named_parameters():
            if id(p) in held:
                out.append((f"{index}.{name}" if prefix else name, p))
    return out


def _state_of(t: GradientTransform, extras: Mapping[str, Any], state: Any) -> Any:
    value = extras.get(t.name, _MISSING)
    if value is _MISSING:
        return t.init(state) if t.init is not None else None
    return value


def run_gradient_transforms(
    transforms: Sequence[GradientTransform],
    named: Sequence[Any],
    state: Any,
    extras: Mapping[str, Any],
    metrics: dict[str, Any],
) -> tuple[bool, Mapping[str, Any]]:
    """Run the gradient slot over the parameters' ``.grad``; write changed grads back.

    Returns:
        (whether to apply the update, the new extras).
    """
    grads: Any = {n: p.grad for n, p in named if p.grad is not None}
    new_extras = None
    for t in transforms:
        if t.slot != "gradient":
            continue
        before = _state_of(t, extras, state)
        grads, after, produced = t.update(grads, before, state)
        if after is not None or t.name in extras:
            if new_extras is None:
                new_extras = dict(extras)
            new_extras[t.name] = after
        if produced:
            metrics.update(produced)
        if grads is None:
            return False, extras if new_extras is None else new_extras
    for n, p in named:
        g = grads.get(n)
        if g is not p.grad:
            p.grad = g
    return True, extras if new_extras is None else new_extras


def init_missing(
    transforms: Sequence[GradientTransform], state: Any, extras: Mapping[str, Any], slot: str
) -> Mapping[str, Any]:
    """Extras with the initial state of each transform of ``slot`` that has none yet."""
    missing = [t for t in transforms if t.slot == slot and t.init is not None]
    missing = [t for t in missing if t.name not in extras]
    if not missing:
        return extras
    out = dict(extras)
    for t in missing:
        out[t.name] = t.init(state) if t.init is not None else None
    return out


def run_after_update(
    transforms: Sequence[GradientTransform],
    named: Sequence[Any],
    state: Any,
    extras: Mapping[str, Any],
    metrics: dict[str, Any],
) -> Mapping[str, Any]:
    """Run the after-update slot; returns the new extras."""
    params = dict(named)
    new_extras = dict(extras)
    for t in transforms:
        if t.slot != "after_update":
            continue
        after, produced = t.update(params, _state_of(t, extras, state), state)
        new_extras[t.name] = after
        if produced:
            metrics.update(produced)
    return new_extras


# -------------------------------------------------------------------- built-ins


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _by_device(tensors: list[torch.Tensor]) -> dict[torch.device, list[torch.Tensor]]:
    out: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        out.setdefault(t.device, []).append(t)
    return out


def _clip_norm(max_norm: float, norm_type: float) -> Callable[..., Any]:
    def update(grads: dict[str, torch.Tensor], st: Any, state: Any) -> Any:
        tensors = list(grads.values())
        if not tensors:
            return grads, st, {}
        # torch's clip_grad_norm_ in two halves, on the grads given (bit-identical to it).
        norm = torch.nn.utils.get_total_norm(tensors, norm_type, False, True)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if tensors[0].device == norm.device and all(t.device == norm.device for t in tensors):
            torch._foreach_mul_(tensors, coef)
        else:
            for device, group in _by_device(tensors).items():
                torch._foreach_mul_(group, coef.to(device))
        return grads, st, {"grad_norm": norm}

    update.__name__ = "clip_grad_norm"
    return update


def clip_grad_norm(max_norm: float, norm_type: float = 2.0) -> GradientTransform:
    """Clip the total gradient norm to ``max_norm`` (a gradient transform).

    The norm runs over the gradients in ``model.parameters()`` order, as a hand loop's
    ``clip_grad_norm_(model.parameters(), max_norm)``, on the accumulated, unscaled
    gradients; the pre-clip norm is reported as ``grad_norm``.

    Args:
        max_norm: a number > 0.
        norm_type: the p of the p-norm (``inf`` for the max norm).

    Raises:
        TypeError: a non-numeric argument. ValueError: a value <= 0.

    Example:
        >>> clip_grad_norm(1.0)
        clip_grad_norm(1.0)
    """
    value = _number("clip_grad_norm: max_norm", max_norm)
    p = _number("clip_grad_norm: norm_type", norm_type)
    args = f"{value!r}" if p == 2.0 else f"{value!r}, {p!r}"
    return GradientTransform(
        "clip_grad_norm",
        _clip_norm(value, p),
        slot="gradient",
        group="clip",
        shown=f"clip_grad_norm({args})",
        key=("clip_grad_norm", value, p),
        twice="clip_grad_norm: the step already clips gradients; clip once",
    )


def clip_grad_value(clip_value: float) -> GradientTransform:
    """Clip every gradient element to ``[-clip_value, clip_value]`` (a gradient transform).

    Raises:
        TypeError: a non-numeric value. ValueError: a value <= 0.

    Example:
        >>> clip_grad_value(0.5)
        clip_grad_value(0.5)
    """
    value = _number("clip_grad_value: clip_value", clip_value)

    def update(grads: dict[str, torch.Tensor], st: Any, state: Any) -> Any:
        tensors = list(grads.values())
        if tensors:
            torch._foreach_clamp_min_(tensors, -value)
            torch._foreach_clamp_max_(tensors, value)
        return grads, st, {}

    update.__name__ = "clip_grad_value"
    return GradientTransform(
        "clip_grad_value",
        update,
        slot="gradient",
        group="clip",
        shown=f"clip_grad_value({value!r})",
        key=("clip_grad_value", value),
        twice="clip_grad_value: the step already clips gradients; clip once",
    )


def _skip(grads: dict[str, torch.Tensor], count: Any, state: Any) -> Any:
    tensors = list(grads.values())
    finite = True
    if tensors:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
        # The one host decision of this transform: whether optimizer.step() runs.
        finite = bool(torch.isfinite(norm))
    count = int(count or 0) + (0 if finite else 1)
    return (grads if finite else None), count, {"skipped_steps": count}


def skip_nonfinite() -> GradientTransform:
    """Skip any update whose gradients hold NaN or Inf, and count it (a gradient transform).

    The parameters and optimizer state are left untouched; the gradients are
    dropped; ``state.extras["skip_nonfinite"]`` and the ``skipped_steps`` metric
    count skipped updates. ``state.step`` still advances (as Lightning counts steps
    skipped by the GradScaler). Deciding costs one host sync per optimizer step.

    Example:
        >>> skip_nonfinite()
        skip_nonfinite()
    """
    return GradientTransform(
        "skip_nonfinite",
        _skip,
        init=lambda state: 0,
        slot="gradient",
        shown="skip_nonfinite()",
        key=("skip_nonfinite",),
        twice="skip_nonfinite: the step already skips non-finite updates",
    )
