"""ThroughputMonitor: batches, samples and tokens per second, ms per step, and MFU.

Per batch it adds host integers (shapes, never values), so it adds no device sync.
The rates are measured over the window between two log points: each log point
already waits for the device to read the metrics, so a window's time includes its
device work (up to the few steps still queued at its end). Validation time is left
out of the windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._batch import batch_size_of
from ._base import Callback

__all__ = ["ThroughputMonitor"]


class ThroughputMonitor(Callback):
    """Log training speed at every log point (``log_every_n_steps``).

    Logged values (with ``prefix``): ``batches_per_sec``, ``samples_per_sec``,
    ``ms_per_step`` (per optimizer step, accumulation included), ``tokens_per_sec``
    when ``tokens_fn`` is given, and ``flops_per_sec`` and ``mfu`` (model FLOPs
    utilization, the fraction of ``peak_flops`` used) when ``flops_per_batch`` is given.

    Args:
        tokens_fn: ``batch -> int`` tokens (or items) in a batch, e.g.
            ``lambda b: b[0].numel()``; it must read shapes only, not values.
        batch_size_fn: ``batch -> int`` samples in a batch; default: the length of
            the batch's first tensor.
        flops_per_batch: FLOPs of one training batch (forward and backward), e.g.
            ``6 * n_params * tokens_per_batch`` for a transformer.
        peak_flops: the devices' peak FLOP/s (all of this process's devices), for MFU.
        prefix: prepended to each name.
        clock: seconds (injectable in tests).

    Raises:
        ValueError: ``peak_flops`` without ``flops_per_batch``, or a non-positive number.

    Example:
        >>> import types, torch
        >>> tm = ThroughputMonitor(flops_per_batch=1e9, peak_flops=1e11,
        ...                        clock=iter([0.0, 2.0]).__next__)
        >>> tm.on_train_start(state=None)
        >>> for i in range(10):
        ...     tm.on_train_batch_end(None, {}, (torch.zeros(32, 3),), i)
        >>> values = tm.on_log(state=types.SimpleNamespace(step=5))
        >>> values["throughput/batches_per_sec"], values["throughput/ms_per_step"]
        (5.0, 400.0)
        >>> values["throughput/samples_per_sec"], values["throughput/mfu"]
        (160.0, 0.05)
    """

    def __init__(
        self,
        tokens_fn: Callable[[Any], int] | None = None,
        batch_size_fn: Callable[[Any], int | None] | None = None,
        flops_per_batch: float | None = None,
        peak_flops: float | None = None,
        prefix: str = "throughput/",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        for name, value in (("flops_per_batch", flops_per_batch), ("peak_flops", peak_flops)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise ValueError(f"ThroughputMonitor: {name} must be a number > 0, got {value!r}")
        if peak_flops is not None and flops_per_batch is None:
            raise ValueError("ThroughputMonitor: peak_flops needs flops_per_batch for the MFU")
        self.tokens_fn = tokens_fn
        self.batch_size_fn = batch_size_fn or batch_size_of
        self.flops_per_batch = flops_per_batch
        self.peak_flops = peak_flops
        self.prefix = prefix
        self.clock = clock
        self._start = 0.0
        self._paused: float | None = None
        self._batches = self._samples = self._tokens = 0
        self._step: int | None = None  # optimizer step at the window's start

    def on_train_start(self, state: Any) -> None:
        self._start = self.clock()
        self._batches = self._samples = self._tokens = 0
        self._step = None if state is None else int(state.step)

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        self._batches += 1
        self._samples += self.batch_size_fn(batch) or 0
        if self.tokens_fn is not None:
            self._tokens += int(self.tokens_fn(batch))

    def on_validation_start(self, state: Any) -> None:
        self._paused = self.clock()

    def on_validation_end(self, state: Any, metrics: Any) -> None:
        if self._paused is not None:
            self._start += self.clock() - self._paused  # validation is not training time
            self._paused = None

    def on_log(self, state: Any) -> dict[str, float]:
        """The rates of the window since the last log point; starts the next window."""
        now = self.clock()
        seconds = now - self._start
        if self._batches == 0 or seconds <= 0:
            return {}
        steps = int(state.step) - (self._step if self._step is not None else 0)
        p = self.prefix
        out = {
            f"{p}batches_per_sec": self._batches / seconds,
            f"{p}samples_per_sec": self._samples / seconds,
        }
        if steps > 0:
            out[f"{p}ms_per_step"] = 1000.0 * seconds / steps
        if self.tokens_fn is not None:
            out[f"{p}tokens_per_sec"] = self._tokens / seconds
        if self.flops_per_batch is not None:
            flops = self.flops_per_batch * self._batches / seconds
            out[f"{p}flops_per_sec"] = flops
            if self.peak_flops is not None:
                out[f"{p}mfu"] = flops / self.peak_flops
        self._start, self._step = now, int(state.step)
        self._batches = self._samples = self._tokens = 0
        return out

    def __repr__(self) -> str:
        return f"ThroughputMonitor(flops_per_batch={self.flops_per_batch}, peak_flops={self.peak_flops})"
