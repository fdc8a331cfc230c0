"""Background prefetch: the next batches are read (and moved to the device) while the
current step runs.

A thread iterates the loader and puts batches into a bounded queue. On CUDA it pins
each batch's CPU tensors and copies them on a side stream with ``non_blocking=True``;
the consumer's stream waits for that copy's event, and each tensor is marked as used
on the consumer's stream so its memory is not reused early. On the CPU the thread
only reads ahead, hiding the loader's own time (I/O, decoding, collate) behind steps.

The loop counts the batches it trains on, not the ones read, so a resume is exact
with or without prefetch; a stateful loader's position is recorded where the batch
is read (see ``_stateful``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .._batch import map_tensors, move_to_device, tensors

__all__ = ["Prefetcher"]

_END = object()


def _pin(tensor: torch.Tensor) -> torch.Tensor:
    cpu = torch.device("cpu")
    return tensor.pin_memory() if tensor.device == cpu and not tensor.is_pinned() else tensor


def _pinned(batch: Any) -> Any:
    """The batch with its CPU tensors in pinned memory (every container of the walker)."""
    return map_tensors(_pin, batch)


class Prefetcher:
    """Iterate ``loader`` with up to ``depth`` batches read ahead by a thread.

    Args:
        loader: the epoch's iterable of batches.
        device: where the batches go (CUDA: pinned, side-stream, non-blocking copies).
        depth: batches held ready (>= 1).

    The thread ends when the loader does, when ``close()`` is called, or at an error,
    which is raised in the consumer at the batch where it happened.

    Example:
        >>> with Prefetcher([torch.ones(2), torch.zeros(2)], torch.device("cpu"), 1) as it:
        ...     [b.sum().item() for b in it]
        [2.0, 0.0]
    """

    def __init__(self, loader: Iterable[Any], device: torch.device, depth: int) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"Prefetcher: depth must be an int >= 1, got {depth!r}")
        self.device = device
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if cuda else None
        self._thread = threading.Thread(
            target=self._fill, args=(iter(loader),), name="ftrain-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, iterator: Iterator[Any]) -> None:
        stream = self._stream
        try:
            for batch in iterator:
                event = None
                if stream is not None:
                    with torch.cuda.stream(stream):
                        batch = move_to_device(_pinned(batch), self.device, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(stream)
                if not self._put((batch, event, None)):
                    return
        except BaseException as exc:  # raised again in the consumer
            self._put((None, None, exc))
            return
        self._put((_END, None, None))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        batch, event, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        if batch is _END:
            self._stop.set()
            raise StopIteration
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for tensor in tensors(batch):
                if tensor.device.type == "cuda":
                    tensor.record_stream(current)
        return batch

    def close(self) -> None:
        """Stop the thread (it ends at its next batch) and drop what it read ahead."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
