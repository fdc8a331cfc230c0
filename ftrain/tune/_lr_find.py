"""The learning-rate range test (Lightning's ``lr_find``) as a pure function.

``lr_find`` trains a clone of the state for ``num_training`` optimizer steps while
the learning rate grows from ``min_lr`` towards ``max_lr``, records each step's
loss, and returns the curve as an ``LRFinderResult``. The given state is left as
it was. The numbers follow Lightning: step ``i`` of ``N`` uses
``min·(max/min)^(i/N)`` (linear: ``min + (max − min)·i/N``), the loss is smoothed
by a bias-corrected moving average (β = 0.98), the search stops once the
smoothed loss exceeds ``early_stop_threshold`` times the best so far, and the
suggestion is the steepest descent of the smoothed curve.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

import attrs
import torch

from .._state import TrainState
from .._warn import user_stacklevel
from ._trial import (
    advance,
    batches,
    check_choice,
    check_int,
    check_number,
    device_of,
    fresh_step,
    kept_rng,
    release,
    scratch,
    set_lr,
)

__all__ = ["BETA", "LRFinderResult", "lr_find", "lr_schedule", "smooth"]

BETA = 0.98
_MODES = ("exponential", "linear")


def lr_schedule(min_lr: float, max_lr: float, num_training: int, mode: str) -> list[float]:
    """The learning rate of each of the ``num_training`` steps.

    Step ``i`` uses ``min_lr·(max_lr/min_lr)^(i/N)`` (exponential) or
    ``min_lr + (max_lr − min_lr)·i/N`` (linear), as Lightning: the first step runs
    at ``min_lr`` and ``max_lr`` would be step ``N``, one past the last.

    Example:
        >>> lr_schedule(1e-3, 1e-1, 2, "exponential")
        [0.001, 0.01]
    """
    if mode == "exponential":
        return [min_lr * (max_lr / min_lr) ** (i / num_training) for i in range(num_training)]
    return [min_lr + (max_lr - min_lr) * i / num_training for i in range(num_training)]


def smooth(losses: Iterable[float], beta: float = BETA) -> list[float]:
    """Lightning's smoothed loss: a moving average, bias-corrected at each point.

    ``avg_i = β·avg_{i−1} + (1 − β)·loss_i`` and ``smoothed_i = avg_i / (1 − β^(i+1))``.

    Example:
        >>> [round(v, 3) for v in smooth([2.0, 3.0])]
        [2.0, 2.505]
    """
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


@attrs.frozen(slots=True)
class LRFinderResult:
    """The curve of a learning-rate range test.

    Attributes:
        lrs: the learning rate of each optimizer step taken.
        losses: each step's training loss (the mean over an accumulation window).
        smoothed: the smoothed losses (Lightning's ``results["loss"]``).
        mode: "exponential" or "linear" (the plot's x scale).
        skip_begin: points skipped at the start by ``suggestion()``.
        skip_end: points skipped at the end by ``suggestion()``.
        stopped_early: the search ended at a diverging loss before ``num_training``.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    mode: str = "exponential"
    skip_begin: int = 10
    skip_end: int = 1
    stopped_early: bool = False

    def suggestion_index(
        self, skip_begin: int | None = None, skip_end: int | None = None
    ) -> int | None:
        """The index of the suggested point, or None with a warning (see ``suggestion``)."""
        begin = self.skip_begin if skip_begin is None else skip_begin
        end = self.skip_end if skip_end is None else skip_end
        check_int("suggestion", "skip_begin", begin, 0)
        check_int("suggestion", "skip_end", end, 0)
        kept = [
            i for i in range(begin, len(self.smoothed) - end) if math.isfinite(self.smoothed[i])
        ]
        if len(kept) < 2:
            warnings.warn(
                f"lr_find: too few points for a suggestion: {len(kept)} finite of "
                f"{len(self.smoothed)} after skip_begin={begin}, skip_end={end} (2 needed); "
                "raise num_training, give more data or skip fewer points",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
            return None
        curve = torch.tensor([self.smoothed[i] for i in kept], dtype=torch.float64)
        # Unit spacing: on the exponential schedule that is the slope per log-lr step.
        slope = torch.gradient(curve)[0]
        return kept[int(torch.argmin(slope))]

    def suggestion(
        self, skip_begin: int | None = None, skip_end: int | None = None
    ) -> float | None:
        """The learning rate where the smoothed loss falls fastest.

        Non-finite points are dropped after skipping ``skip_begin`` points at the start
        and ``skip_end`` at the end; the gradient is taken over the remaining points.

        Args:
            skip_begin: defaults to the value given to ``lr_find``.
            skip_end: defaults to the value given to ``lr_find``.

        Returns:
            The learning rate, or None (with a RuntimeWarning) when fewer than two
            points remain.

        Example:
            >>> r = LRFinderResult(lrs=(1.0, 2.0, 3.0, 4.0), losses=(4.0, 3.5, 1.0, 0.9),
            ...                    smoothed=(4.0, 3.5, 1.0, 0.9), skip_begin=0, skip_end=0)
            >>> r.suggestion()
            2.0
        """
        index = self.suggestion_index(skip_begin, skip_end)
        return None if index is None else self.lrs[index]

    def plot(self, path: str | os.PathLike[str], suggest: bool = True) -> None:
        """Save the smoothed loss against the learning rate as an image (PNG by suffix).

        Args:
            path: the file to write.
            suggest: mark the suggested learning rate.

        Raises:
            ImportError: matplotlib is missing (``pip install matplotlib``).
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "LRFinderResult.plot needs matplotlib: pip install matplotlib"
            ) from exc
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.subplots()
        ax.plot(self.lrs, self.smoothed, label="smoothed loss")
        if self.mode == "exponential":
            ax.set_xscale("log")
        if suggest:
            index = self.suggestion_index()
            if index is not None:
                lr = self.lrs[index]
                ax.plot(
                    [lr], [self.smoothed[index]], "o", color="red", label=f"suggestion {lr:.2e}"
                )
        # The diverged last point of an early stop would flatten the rest of the curve.
        shown = self.smoothed[:-1] if self.stopped_early else self.smoothed
        finite = [v for v in shown if math.isfinite(v)]
        if finite:
            low, high = min(finite), max(finite)
            pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend()
        fig.savefig(os.fspath(path))


def lr_find(
    state: TrainState,
    train_step: Any,
    data: Iterable[Any],
    *,
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    skip_begin: int = 10,
    skip_end: int = 1,
) -> LRFinderResult:
    """Run a learning-rate range test on a clone of ``state``.

    Each of ``num_training`` optimizer steps sets its learning rate on every param
    group of every optimizer, then runs the step over as many batches as it takes
    (an accumulating step takes ``n``; clipping and precision apply as in training).
    ``data`` is cycled when it is shorter. The search stops early once the smoothed
    loss exceeds ``early_stop_threshold`` times its best value (or is not finite).
    The state passed in, torch's random generators and the step's cache are left
    as they were; the clone is freed before returning.

    Args:
        state: the state to explore from (not modified).
        train_step: a step, e.g. ``ft.train_step(loss_fn)`` with its combinators.
        data: any iterable of batches; batches go to the model's device.
        min_lr: the first learning rate (> 0 in exponential mode).
        max_lr: the end of the range (exclusive, as Lightning).
        num_training: optimizer steps to take, >= 2.
        mode: "exponential" or "linear" growth.
        early_stop_threshold: stop when smoothed > threshold × best; None never stops.
        skip_begin: default points skipped at the start by ``suggestion()``.
        skip_end: default points skipped at the end by ``suggestion()``.

    Returns:
        An ``LRFinderResult`` with ``lrs``, ``losses``, ``smoothed``, ``suggestion()``
        and ``plot(path)``.

    Raises:
        ValueError: a bad argument (named, with what is accepted), or empty data.
        TypeError: a step that does not advance the state, or metrics without "loss".

    Example:
        >>> import torch, ftrain as ft
        >>> from ftrain import tune
        >>> net = torch.nn.Linear(2, 1)
        >>> state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
        >>> step = ft.train_step(lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
        >>> data = [(torch.randn(8, 2), torch.randn(8, 1))]
        >>> result = tune.lr_find(state, step, data, min_lr=1e-4, num_training=20)
        >>> len(result.lrs), result.lrs[0]
        (20, 0.0001)
    """
    mode, min_lr, max_lr, early_stop_threshold = _checked(
        mode, min_lr, max_lr, num_training, early_stop_threshold, skip_begin, skip_end
    )
    device = device_of(state)
    schedule = lr_schedule(min_lr, max_lr, num_training, mode)
    with kept_rng(device):
        try:
            lrs, losses, smoothed, stopped = _explore(
                state, train_step, data, schedule, early_stop_threshold, device
            )
        finally:
            release(device)
    return LRFinderResult(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed=tuple(smoothed),
        mode=mode,
        skip_begin=skip_begin,
        skip_end=skip_end,
        stopped_early=stopped,
    )


def _checked(
    mode: str,
    min_lr: float,
    max_lr: float,
    num_training: int,
    early_stop_threshold: float | None,
    skip_begin: int,
    skip_end: int,
) -> tuple[str, float, float, float | None]:
    """lr_find's arguments checked: (mode, min_lr, max_lr, early_stop_threshold)."""
    owner = "lr_find"
    mode = check_choice(owner, "mode", mode, _MODES)
    min_lr = check_number(owner, "min_lr", min_lr)
    max_lr = check_number(owner, "max_lr", max_lr)
    if min_lr >= max_lr:
        raise ValueError(f"{owner}: min_lr must be < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if mode == "exponential" and min_lr <= 0:
        raise ValueError(f"{owner}: min_lr must be > 0 in exponential mode, got {min_lr}")
    if min_lr < 0:
        raise ValueError(f"{owner}: min_lr must be >= 0, got {min_lr}")
    check_int(owner, "num_training", num_training, 2)
    if early_stop_threshold is not None:
        early_stop_threshold = check_number(owner, "early_stop_threshold", early_stop_threshold)
        if early_stop_threshold <= 0:
            raise ValueError(
                f"{owner}: early_stop_threshold must be > 0 or None, got {early_stop_threshold}"
            )
    check_int(owner, "skip_begin", skip_begin, 0)
    check_int(owner, "skip_end", skip_end, 0)

    return mode, min_lr, max_lr, early_stop_threshold


def _explore(
    state: TrainState,
    train_step: Any,
    data: Iterable[Any],
    schedule: list[float],
    threshold: float | None,
    device: torch.device,
) -> tuple[list[float], list[float], list[float], bool]:
    owner = "lr_find"
    explore = scratch(state)
    step = fresh_step(train_step)
    stream = batches(data, device, owner)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    for i, lr in enumerate(schedule):
        set_lr(explore, lr)
        start, total, count = explore.step, 0.0, 0
        while explore.step == start:
            batch = next(stream, _END)
            if batch is _END:
                return lrs, losses, smoothed, False
            explore, metrics = advance(step, explore, batch, owner)
            if "loss" not in metrics:
                raise TypeError(f"{owner}: the step's metrics have no 'loss': {sorted(metrics)}")
            total += float(metrics["loss"])
            count += 1
        loss = total / count
        avg = BETA * avg + (1 - BETA) * loss
        value = avg / (1 - BETA ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        # Written so that a NaN loss counts as diverged too.
        if threshold is not None and i > 0 and not value <= threshold * best:
            return lrs, losses, smoothed, i < len(schedule) - 1
        best = min(best, value)
    return lrs, losses, smoothed, False


_END = object()
