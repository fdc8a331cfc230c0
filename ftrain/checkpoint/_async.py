"""Checkpoint saves and deletes carried out in order, in a background thread.

A save costs the training loop only a snapshot: every tensor of the payload is
copied to host memory (pinned buffers and one stream sync for device tensors, a
``copy_`` for CPU tensors, which training would otherwise change in place), and
the containers are rebuilt so that nothing the loop mutates later is shared. The
write itself (``torch.save``, fsync, rename: :func:`atomic_save`) and the deletes
that depend on it run in one background job. At most one job is in flight: the
next one first waits for it. The snapshot buffers are reused by the next save when
the tensors have the same shapes, so a steady run allocates them once.

The guarantees are those of the synchronous path: a file appears only complete,
a delete decided together with a save runs only after that save has committed,
and an error of a background job is raised by the next call into the writer
(:meth:`AsyncWriter.check` on every step, :meth:`AsyncWriter.close` at the end),
never dropped.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import torch

from ._io import atomic_save, link_checkpoint

__all__ = ["AsyncWriter", "Job"]

_ATOMIC = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


class _Snapshot:
    """Copies a payload's tensors to host memory, reusing the previous save's buffers."""

    def __init__(self, reuse: list[torch.Tensor]) -> None:
        self.reuse = reuse
        self.buffers: list[torch.Tensor] = []
        self.memo: dict[tuple[Any, ...], torch.Tensor] = {}  # tied tensors stay one
        self.device_copies = False

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        # state_dict() makes new tensor objects each call: two payloads of one job (a
        # file and last.ckpt) share one copy of each view of the same memory.
        strided = t.layout == torch.strided
        key = (
            (t.data_ptr(), t.device, t.dtype, t.shape, t.stride(), type(t)) if strided else (id(t),)
        )
        done = self.memo.get(key)
        if done is not None:
            return done
        if not strided or type(t) not in (torch.Tensor, torch.nn.Parameter):
            out = t.detach().to("cpu", copy=True)  # sparse, subclasses: no buffer reuse
        else:
            out = self._buffer(t)
            on_device = t.device.type != "cpu"
            out.copy_(t.detach(), non_blocking=on_device and out.is_pinned())
            self.device_copies |= on_device
            self.buffers.append(out)
        self.memo[key] = out
        return out

    def _buffer(self, t: torch.Tensor) -> torch.Tensor:
        i = len(self.buffers)
        if i < len(self.reuse):
            old = self.reuse[i]
            if old.shape == t.shape and old.dtype == t.dtype and old.stride() == t.stride():
                return old
        # Same strides as ``t`` where it is dense (as torch.save would store it).
        return torch.empty_like(t, device="cpu", pin_memory=t.device.type == "cuda")

    def copy(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self.tensor(obj)
        if isinstance(obj, _ATOMIC):
            return obj
        kind = type(obj)
        if kind is dict:
            return {k: self.copy(v) for k, v in obj.items()}
        if kind is list:
            return [self.copy(v) for v in obj]
        if kind is tuple:
            return tuple(self.copy(v) for v in obj)
        if kind is OrderedDict:  # a state_dict: its _metadata attribute goes along
            out = OrderedDict((k, self.copy(v)) for k, v in obj.items())
            out.__dict__.update(copy.deepcopy(obj.__dict__))
            return out
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
            return kind(*(self.copy(v) for v in obj))
        return copy.deepcopy(obj)

    def finish(self) -> None:
        if self.device_copies and torch.cuda.is_available():
            torch.cuda.current_stream().synchronize()  # the pinned copies have landed


@attrs.frozen
class _Write:
    payload: Mapping[str, Any]
    path: str
    overwrite: bool
    link_to: str | None


class Job:
    """The writes and effects of one checkpoint decision, carried out in order."""

    def __init__(self) -> None:
        self.writes: list[_Write] = []
        self.effects: list[Callable[[], None]] = []
        self.releases: list[Callable[[], None]] = []
        self.failed_path: str | None = None

    def save(
        self,
        payload: Mapping[str, Any],
        path: str | os.PathLike[str],
        *,
        overwrite: bool = True,
        link_to: str | os.PathLike[str] | None = None,
    ) -> None:
        """Write ``payload`` to ``path`` with :func:`atomic_save` (``overwrite`` as
        there); with ``link_to``, make ``path`` a link to that checkpoint instead
        (:func:`link_checkpoint`), and write only where links cannot be made."""
        link = None if link_to is None else os.fspath(link_to)
        self.writes.append(_Write(payload, os.fspath(path), overwrite, link))

    def then(self, effect: Callable[[], None]) -> None:
        """Run ``effect`` (e.g. a delete) after this job's writes have committed."""
        self.effects.append(effect)

    def hold(self, release: Callable[[], None]) -> None:
        """Call ``release`` (e.g. to drop a name's reservation) once the writes are
        over: committed or failed, or the job dropped before it ran."""
        self.releases.append(release)

    def run(self) -> None:
        """Carry out the writes in order, then the effects; stop at the first error."""
        try:
            for w in self.writes:
                self.failed_path = w.path
                linked = w.link_to is not None and link_checkpoint(
                    w.link_to, w.path, overwrite=w.overwrite
                )
                if not linked:
                    atomic_save(w.payload, w.path, overwrite=w.overwrite)
        finally:
            self.release()
        self.failed_path = None
        for effect in self.effects:
            effect()

    def release(self) -> None:
        """Call the :meth:`hold` callbacks (once)."""
        releases, self.releases = self.releases, []
        for release in releases:
            release()


class AsyncWriter:
    """Carries out checkpoint jobs one at a time, in a background thread or inline.

    Args:
        background: True: snapshot the payloads and write them in a thread (the
            caller waits only for the snapshot); False: write before returning.

    Example:
        >>> import os, tempfile, torch
        >>> writer = AsyncWriter(background=True)
        >>> w = torch.zeros(3)
        >>> path = os.path.join(tempfile.mkdtemp(), "a.ckpt")
        >>> with writer.job() as job:
        ...     job.save({"w": w}, path)
        >>> _ = w.add_(1)  # training goes on; the file holds the snapshot
        >>> writer.close()
        >>> torch.load(path, weights_only=True)["w"]
        tensor([0., 0., 0.])
    """

    def __init__(self, background: bool = True) -> None:
        if background not in (True, False):
            raise ValueError(f"AsyncWriter: background must be True or False, got {background!r}")
        self.background = background
        # One worker thread for the writer's life (starting a thread per save costs
        # milliseconds on a busy machine); ``_done`` is set when no job is in flight.
        self._worker: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done = threading.Event()
        self._done.set()
        self._error: BaseException | None = None
        self._failed_path: str | None = None
        self._buffers: list[torch.Tensor] = []

    @property
    def busy(self) -> bool:
        """A background job is still running."""
        return not self._done.is_set()

    def check(self) -> None:
        """Raise the error of a finished background job, if one failed (cheap: no wait)."""
        if self._error is not None:
            self._raise()

    def wait(self) -> None:
        """Wait for the job in flight; raise its error if it failed."""
        self._done.wait()
        self.check()

    def close(self) -> None:
        """Wait for the job in flight, stop the worker thread and release the snapshot
        buffers; raise the job's error if it failed."""
        try:
            self._done.wait()
        finally:
            if self._worker is not None:
                self._jobs.put(None)
                self._worker.join()
                self._worker = None
            self._buffers = []
        self.check()

    def abandon(self, exc: BaseException) -> None:
        """Wait for the job in flight while ``exc`` is being raised; a failure of the
        job is attached to ``exc`` as a note, so that neither is lost."""
        try:
            self.close()
        except BaseException as err:
            note = f"also, the background checkpoint write failed: {type(err).__name__}: {err}"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            else:  # Python 3.10
                exc.args = (*exc.args, note)

    @contextmanager
    def job(self) -> Iterator[Job]:
        """Collect one job's saves and effects; it starts when the block ends.

        Waits first for the previous job (at most one in flight), raising its error.
        If the block raises, nothing of the job is carried out (its :meth:`Job.hold`
        callbacks are called).
        """
        self.wait()
        job = Job()
        try:
            yield job
            if not job.writes and not job.effects:
                job.release()
                return
            if not self.background:
                job.run()
                return
            snap = _Snapshot(self._buffers)
            job.writes = [attrs.evolve(w, payload=snap.copy(dict(w.payload))) for w in job.writes]
            snap.finish()
        except BaseException:
            job.release()  # dropped, or failed inline (run has released already: a no-op)
            raise
        self._buffers = snap.buffers
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._serve, name="ftrain-checkpoint-writer", daemon=True
            )
            self._worker.start()
        self._done.clear()
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.run()
            except BaseException as err:  # handed to the training thread
                self._failed_path = job.failed_path
                self._error = err
            finally:
                self._done.set()

    def _raise(self) -> None:
        err, self._error = self._error, None
        assert err is not None
        where = f" of {self._failed_path!r}" if self._failed_path else ""
        note = f"raised by the background checkpoint write{where}"
        if hasattr(err, "add_note"):
            err.add_note(note)
        raise err
