"""Calling callback hooks: one dispatcher for fit, validate, test and predict.

A callback is any object with some hook methods (see ``Callback``); a hook it does
not define is skipped. Hooks get keyword arguments only. A hook returning True asks
the loop to stop; ``on_train_batch_start`` returning -1 skips the rest of the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SKIP_EPOCH", "batch_start", "call", "eval_batch_hooks"]

SKIP_EPOCH = -1
"""What ``on_train_batch_start`` returns to skip the rest of the epoch (Lightning's -1)."""


def call(callbacks: Sequence[Any], hook: str, **kwargs: Any) -> bool:
    """Call ``hook(**kwargs)`` on each callback that has it; True if any returned True."""
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(**kwargs) is True:
            stop = True
    return stop


def batch_start(callbacks: Sequence[Any], **kwargs: Any) -> tuple[bool, bool]:
    """``on_train_batch_start`` on every callback: (stop requested, skip the epoch's rest)."""
    stop = skip = False
    for cb in callbacks:
        fn = getattr(cb, "on_train_batch_start", None)
        if fn is None:
            continue
        answer = fn(**kwargs)
        if answer is True:
            stop = True
        elif type(answer) is int and answer == SKIP_EPOCH:
            skip = True
    return stop, skip


def eval_batch_hooks(callbacks: Sequence[Any], stage: str) -> Callable[..., None] | None:
    """A function ``(when, **kwargs)`` calling ``on_{stage}_batch_{when}``, or None when no
    callback has such a hook (the evaluation loop then does no per-batch work for them).

    Example:
        >>> class Seen:
        ...     def on_test_batch_end(self, **kw): print(kw["batch_idx"])
        >>> eval_batch_hooks([Seen()], "test")("end", batch_idx=3)
        3
        >>> eval_batch_hooks([Seen()], "validation") is None
        True
    """
    names = {when: f"on_{stage}_batch_{when}" for when in ("start", "end")}
    if not any(hasattr(cb, name) for cb in callbacks for name in names.values()):
        return None

    def dispatch(when: str, **kwargs: Any) -> None:
        call(callbacks, names[when], **kwargs)

    return dispatch
