"""Wrapped steps: how a setting reaches the step inside a user's wrapper.

The protocol: a step that wraps another exposes it as ``inner`` and can rebuild itself
around a changed one with ``with_inner(new_inner)``. A built-in combinator (or a
``fit`` flag) applied to such a step changes the innermost step that accepts it and
rebuilds the wrappers around it, so ``pipe(train_step(f), my_wrapper, clip_grad_norm(1))``
clips inside ``my_wrapper``. :func:`step_combinator` gives any ``step -> step``
function this protocol.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["WrappedStep", "configure", "innermost", "step_combinator"]


@attrs.frozen(slots=True, repr=False)
class WrappedStep:
    """A step built by a ``step -> step`` function around ``inner``; see the module docs.

    Attributes:
        wrap: the ``step -> step`` function.
        inner: the step it wraps.
    """

    wrap: Callable[[Any], Any]
    inner: Any
    _built: Any = attrs.field(default=None, alias="built", eq=False)

    def __attrs_post_init__(self) -> None:
        built = self.wrap(self.inner)
        if not callable(built):
            name = getattr(self.wrap, "__name__", "wrap")
            raise TypeError(f"{name} must return a step (a callable), got {type(built).__name__}")
        object.__setattr__(self, "_built", built)

    def with_inner(self, inner: Any) -> WrappedStep:
        """The same wrapper rebuilt around another inner step."""
        return WrappedStep(self.wrap, inner)

    def __call__(self, state: Any, batch: Any) -> Any:
        return self._built(state, batch)

    def __repr__(self) -> str:
        return f"{getattr(self.wrap, '__name__', 'wrap')}({self.inner!r})"


def step_combinator(wrap: Callable[[Any], Any]) -> Callable[[Any], WrappedStep]:
    """Make a ``step -> step`` function compose with the built-ins in any order.

    The step it returns keeps the step it wraps reachable (``inner`` / ``with_inner``),
    so combinators and ``fit``'s flags applied outside still configure the step
    inside. Usable as a decorator.

    Args:
        wrap: ``wrap(step) -> step``.

    Returns:
        A combinator: ``combinator(step) -> WrappedStep``.

    Raises:
        TypeError: wrap is not callable.

    Example:
        >>> import ftrain as ft, toolz
        >>> @ft.step_combinator
        ... def twice_the_loss(step):
        ...     def run(state, batch):
        ...         state, metrics = step(state, batch)
        ...         return state, {**metrics, "loss2": 2 * metrics["loss"]}
        ...     return run
        >>> step = toolz.pipe(ft.train_step(lambda m, b: m(b).sum()), twice_the_loss,
        ...                   ft.accumulate(2))
        >>> step.inner.accumulate
        2
    """
    if not callable(wrap):
        raise TypeError(f"step_combinator: wrap must be callable, got {type(wrap).__name__}")

    @functools.wraps(wrap)
    def combinator(step: Any) -> WrappedStep:
        return WrappedStep(wrap, step)

    return combinator


def innermost(step: Any) -> Any:
    """The step at the bottom of a chain of wrappers."""
    while _wraps(step):
        step = step.inner
    return step


def _wraps(step: Any) -> bool:
    return hasattr(step, "inner") and callable(getattr(step, "with_inner", None))


def configure(
    step: Any, change: Callable[[Any], Any], accepts: Callable[[Any], bool], refusal: str
) -> Any:
    """``change`` the outermost step that ``accepts`` it, rebuilding wrappers around it.

    Raises:
        TypeError: no step in the chain accepts it (``refusal`` + what was found).
    """
    if accepts(step):
        return change(step)
    if _wraps(step):
        return step.with_inner(configure(step.inner, change, accepts, refusal))
    hint = (
        "; a step -> step function passes settings to the step it wraps when built with "
        "ftrain.step_combinator"
        if callable(step) and not hasattr(step, "with_")
        else ""
    )
    raise TypeError(f"{refusal}, got {type(step).__name__}{hint}")
