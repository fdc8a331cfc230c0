"""Profilers for ``fit(profiler=...)``: time per phase, cProfile per phase, or a
torch.profiler trace."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _fs

if TYPE_CHECKING:
    import cProfile

__all__ = ["AdvancedProfiler", "NullProfiler", "SimpleProfiler", "make_profiler"]


class NullProfiler:
    """Records nothing; its methods cost one call."""

    enabled = False

    def start(self, name: str) -> None:
        return None

    def stop(self, name: str) -> None:
        return None

    def step(self) -> None:
        return None

    def close(self) -> None:
        return None

    def summary(self) -> dict[str, dict[str, float]]:
        return {}

    def report(self) -> str:
        return ""


class SimpleProfiler(NullProfiler):
    """Wall-clock time per phase (data fetch, step, validation, logging, checkpointing).

    Uses ``time.perf_counter`` only: no device synchronisation is added, so on a GPU
    asynchronous work is attributed to the phase that waits for it.
    """

    enabled = True

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._open: dict[str, float] = {}
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def start(self, name: str) -> None:
        self._open[name] = self._clock()

    def stop(self, name: str) -> None:
        began = self._open.pop(name, None)
        if began is None:
            return
        self.totals[name] = self.totals.get(name, 0.0) + self._clock() - began
        self.counts[name] = self.counts.get(name, 0) + 1

    def summary(self) -> dict[str, dict[str, float]]:
        """``{phase: {"total_s", "calls", "mean_us"}}``."""
        return {
            name: {
                "total_s": total,
                "calls": float(self.counts[name]),
                "mean_us": total / self.counts[name] * 1e6,
            }
            for name, total in sorted(self.totals.items(), key=lambda kv: -kv[1])
        }

    def report(self) -> str:
        """The summary as a table."""
        rows = [f"{'phase':<16}{'calls':>10}{'mean (us)':>14}{'total (s)':>12}"]
        for name, s in self.summary().items():
            rows.append(
                f"{name:<16}{int(s['calls']):>10}{s['mean_us']:>14.1f}{s['total_s']:>12.3f}"
            )
        return "\n".join(rows)


class AdvancedProfiler(SimpleProfiler):
    """``cProfile`` per phase, as Lightning's ``AdvancedProfiler``, plus the simple times.

    Each phase ("data", "step", "validation", "logging", "checkpoint") has its own
    ``cProfile.Profile``, enabled only while the phase runs. One profiler can be
    active at a time, so a phase started inside another suspends the outer one.
    ``close()`` writes every phase's functions, sorted by cumulative time, to
    ``<log_dir>/advanced_profile.txt``.

    Args:
        log_dir: the folder of the report (created when it is written).
        line_count: functions listed per phase: an int for that many, a float in
            [0, 1] for that share of them (default all, as Lightning's
            ``line_count_restriction``).
    """

    def __init__(self, log_dir: str, line_count: int | float = 1.0) -> None:
        super().__init__()
        self.path = _fs.join(log_dir, "advanced_profile.txt")
        self.line_count = line_count
        import cProfile  # only when this profiler is asked for: `import ftrain` stays light

        self._new_profile = cProfile.Profile
        self.profiles: dict[str, cProfile.Profile] = {}
        self._active: list[cProfile.Profile] = []

    def start(self, name: str) -> None:
        if self._active:
            self._active[-1].disable()
        prof = self.profiles.get(name)
        if prof is None:
            prof = self.profiles[name] = self._new_profile()
        self._active.append(prof)
        super().start(name)
        prof.enable()

    def stop(self, name: str) -> None:
        prof = self.profiles.get(name)
        if prof is None or not self._active or self._active[-1] is not prof:
            return
        prof.disable()
        self._active.pop()
        super().stop(name)
        if self._active:
            self._active[-1].enable()

    def phase_report(self, name: str) -> str:
        """One phase's functions sorted by cumulative time."""
        out = io.StringIO()
        import pstats

        stats = pstats.Stats(self.profiles[name], stream=out)
        stats.strip_dirs().sort_stats("cumulative").print_stats(self.line_count)
        return out.getvalue()

    def close(self) -> None:
        while self._active:
            self._active.pop().disable()
        if not self.profiles:
            return
        order = [name for name in self.summary() if name in self.profiles]
        text = "\n".join(f"Profile of {name!r}\n{self.phase_report(name)}" for name in order)
        if _fs.is_url(self.path):
            _fs.write_bytes(self.path, text.encode("utf-8"))
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def report(self) -> str:
        return f"{super().report()}\ncProfile of each phase: {self.path}"


class TorchProfiler(SimpleProfiler):
    """``torch.profiler`` over the training steps, writing a TensorBoard trace."""

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        import torch.profiler as tp

        os.makedirs(log_dir, exist_ok=True)
        activities = [tp.ProfilerActivity.CPU]
        import torch

        if torch.cuda.is_available():
            activities.append(tp.ProfilerActivity.CUDA)
        self.log_dir = log_dir
        self._prof: Any = tp.profile(
            activities=activities,
            schedule=tp.schedule(wait=1, warmup=1, active=5, repeat=1),
            on_trace_ready=tp.tensorboard_trace_handler(log_dir),
            record_shapes=False,
        )
        self._prof.__enter__()

    def step(self) -> None:
        self._prof.step()

    def close(self) -> None:
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self._prof = None


def make_profiler(kind: str | None, log_dir: str) -> NullProfiler:
    """The profiler for ``fit(profiler=kind)``."""
    if kind is None:
        return NullProfiler()
    if kind == "simple":
        return SimpleProfiler()
    if kind == "advanced":
        return AdvancedProfiler(log_dir)
    if _fs.is_url(log_dir):
        raise ValueError(
            f"profiler='pytorch' writes its trace with torch's local trace handler; the log "
            f"folder {log_dir!r} is a URL. Use profiler='simple' or 'advanced', or a local "
            "default_root_dir"
        )
    return TorchProfiler(os.path.join(log_dir, "profiler"))
