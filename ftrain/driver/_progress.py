"""The tqdm progress bar the driver updates: one bar per training epoch, one per evaluation.

When stderr is not a terminal (``nohup``, SLURM, ``| tee``, CI logs) there are
no bars: plain, flushed lines go to stderr at log points and epoch ends instead.

The per-batch calls are on the hot path, so between display refreshes they do
one integer comparison. A refresh happens at most every ``refresh_rate``
batches and at most ten times a second; only then are the bar's metrics read,
because reading them synchronises the device. tqdm is imported when the first
bar opens.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["ProgressBar"]

_clock = time.monotonic
_MIN_INTERVAL_S = 0.1  # tqdm's own default mininterval
_NEVER = sys.maxsize


class _Counter:
    """Gate of one bar: the batch count that triggers the next clock check."""

    __slots__ = ("bar", "last", "n", "next")

    def __init__(self, bar: Any, first: int) -> None:
        self.bar = bar
        self.n = 0  # batches done, as last reported by the driver
        self.next = first
        self.last = -float("inf")  # clock at the last refresh


class ProgressBar:
    """tqdm bars for training epochs and evaluation runs.

    Args:
      enable: False for a bar that does nothing and prints nothing.
      refresh_rate: refresh the display at most every this many batches; 0
        disables the bar, as in Lightning.
      file: stream for the bars; None for ``sys.stderr`` (tqdm's default).
      leave: keep each finished epoch's bar on screen; False reuses one line.

    Raises:
      ValueError: if ``refresh_rate`` is not an int >= 0.

    >>> import io
    >>> out = io.StringIO()
    >>> bar = ProgressBar(file=out)
    >>> bar.train_epoch_start(0, total=2)
    >>> for i in range(2):
    ...     bar.train_batch_end(i, lambda: {"loss": 0.23141})
    >>> bar.train_epoch_end({"loss": 0.23141})
    >>> "loss=0.231]" in out.getvalue()
    True
    """

    def __init__(
        self,
        enable: bool = True,
        refresh_rate: int = 1,
        file: TextIO | None = None,
        leave: bool = True,
    ) -> None:
        if not isinstance(refresh_rate, int) or isinstance(refresh_rate, bool) or refresh_rate < 0:
            raise ValueError(f"ProgressBar: refresh_rate must be an int >= 0, got {refresh_rate!r}")
        self._enabled = bool(enable) and refresh_rate > 0
        self._rate = max(refresh_rate, 1)
        self._file = file
        self._leave = leave
        self._plain_print = False  # print() when disabled: set by auto() for redirected output
        self._plain = False  # plain progress lines instead of bars: set by auto()
        self._epoch = 0
        self._epoch_start = 0.0
        self._since = (0.0, 0)  # clock and batch count at the last plain line
        self._total: int | None = None
        self._stage = ""
        self._fitting = False
        idle = _Counter(None, _NEVER)
        self._train = idle
        self._eval = idle

    @classmethod
    def auto(
        cls,
        enable: bool,
        file: TextIO | None = None,
        *,
        refresh_rate: int = 1,
        leave: bool = True,
    ) -> ProgressBar:
        """Make a bar that turns itself off when stderr is not a terminal.

        An explicit ``file`` is always used. With output redirected to a file
        the bars are off but ``print`` still writes plain lines to stdout, so
        a log file gets the messages without carriage-return noise.

        Args:
          enable: False for a silent bar whatever the output.
          file: stream for the bars; None for ``sys.stderr`` if it is a terminal.
          refresh_rate: see ``ProgressBar``.
          leave: see ``ProgressBar``.

        Returns:
          The progress bar.
        """
        if not enable or file is not None:
            return cls(enable, refresh_rate, file, leave)
        tty = _isatty(sys.stderr)
        bar = cls(tty, refresh_rate, None, leave)
        bar._plain_print = not tty
        bar._plain = not tty and refresh_rate > 0
        return bar

    @property
    def enabled(self) -> bool:
        """Whether bars are drawn."""
        return self._enabled

    @property
    def shows_metrics(self) -> bool:
        """Whether epoch-end metrics are shown (on bars or as plain lines)."""
        return self._enabled or self._plain

    def log_point(
        self, batch_idx: int, step: int, metrics: Callable[[], Mapping[str, float]]
    ) -> None:
        """At a log point after batch ``batch_idx``: without bars, print one plain line
        (epoch, batches, global ``step``, it/s, ``metrics()``); with bars, nothing (they show
        the same). ``metrics`` is called only when a line is printed."""
        if self._plain:
            self._train.n = batch_idx + 1
            self._plain_line("", step, metrics())

    def _open(self, desc: str, total: int | None, leave: bool) -> _Counter:
        from tqdm import tqdm

        # We decide when to refresh (see _refresh); tqdm must draw on every update.
        bar = tqdm(
            desc=desc,
            total=total,
            file=self._file,
            leave=leave,
            dynamic_ncols=True,
            mininterval=0,
            miniters=1,
        )
        return _Counter(bar, self._rate)

    def _refresh(self, gate: _Counter, n: int) -> bool:
        gate.next = n + self._rate
        now = _clock()
        if now - gate.last < _MIN_INTERVAL_S:
            return False
        gate.last = now
        return True

    def train_epoch_start(self, epoch: int, total: int | None) -> None:
        """Open the bar "Epoch {epoch}" for ``total`` batches (None when unsized)."""
        if self._plain:
            self._epoch, self._total = epoch, total
            self._epoch_start = now = _clock()
            self._since = (now, 0)
            self._train = _Counter(None, _NEVER)
        if not self._enabled:
            return
        self._fitting = True
        bar = self._train.bar
        if bar is not None and not self._leave:
            # reset() redraws, so the new name and empty postfix go first.
            bar.set_description(f"Epoch {epoch}", refresh=False)
            bar.set_postfix({}, refresh=False)
            bar.reset(total=total)
            self._train = _Counter(bar, self._rate)
            return
        if bar is not None:
            bar.close()
        self._train = self._open(f"Epoch {epoch}", total, leave=True)

    def train_batch_end(self, batch_idx: int, metrics: Callable[[], Mapping[str, float]]) -> None:
        """Count batch ``batch_idx`` done; on a refresh, show ``metrics()`` (called only then)."""
        gate = self._train
        gate.n = n = batch_idx + 1
        if n < gate.next:
            return
        if self._refresh(gate, n):
            bar = gate.bar
            bar.set_postfix(metrics(), refresh=False)
            bar.update(n - bar.n)

    def train_epoch_end(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Show the epoch's final count and ``metrics``; close the bar if ``leave``.

        Without bars, print the epoch's plain line (with ``step`` when given).
        """
        if self._plain:
            self._since = (self._epoch_start, 0)
            self._plain_line(" done", step, metrics)
        gate = self._train
        bar = gate.bar
        if bar is None:
            return
        _finish(bar, gate.n, metrics)
        if self._leave:
            bar.close()
            self._train = _Counter(None, _NEVER)

    def eval_start(self, stage: str, total: int | None) -> None:
        """Open a bar named ``stage`` ("Validation", "Test", "Predict", "Sanity check").

        Inside ``fit`` the bar disappears when done, as does the sanity check's.
        """
        self._stage = stage
        if not self._enabled:
            return
        self.eval_end(None)
        leave = self._leave and not self._fitting and stage != "Sanity check"
        self._eval = self._open(stage, total, leave)

    def eval_batch_end(self, batch_idx: int) -> None:
        """Count evaluation batch ``batch_idx`` done."""
        gate = self._eval
        gate.n = n = batch_idx + 1
        if n < gate.next:
            return
        if self._refresh(gate, n):
            gate.bar.update(n - gate.bar.n)

    def eval_end(self, metrics: Mapping[str, float] | None) -> None:
        """Show the final count and ``metrics`` (if any) and close the evaluation bar."""
        if self._plain and metrics:
            _write_line(f"{self._stage}: {_format_metrics(metrics)}")
        gate = self._eval
        if gate.bar is None:
            return
        _finish(gate.bar, gate.n, metrics)
        gate.bar.close()
        self._eval = _Counter(None, _NEVER)

    def print(self, msg: str) -> None:
        """Print ``msg`` on its own line above the bars (to ``file``, else stdout)."""
        if self._enabled:
            from tqdm import tqdm

            tqdm.write(msg, file=self._file)
        elif self._plain_print:
            print(msg, file=sys.stdout, flush=True)

    def close(self) -> None:
        """Close all bars; the next ``train_epoch_start`` begins a new run."""
        self.eval_end(None)
        if self._train.bar is not None:
            self._train.bar.close()
            self._train = _Counter(None, _NEVER)
        self._fitting = False

    def _plain_line(self, what: str, step: int | None, metrics: Mapping[str, float]) -> None:
        n = self._train.n
        now = _clock()
        since_clock, since_n = self._since
        self._since = (now, n)
        rate = (n - since_n) / (now - since_clock) if now > since_clock else 0.0
        total = "?" if self._total is None else str(self._total)
        parts = [f"Epoch {self._epoch}{what}: {n}/{total} batches"]
        if step is not None:
            parts.append(f"step {step}")
        parts.append(f"{rate:.2f} it/s")
        if metrics:
            parts.append(_format_metrics(metrics))
        _write_line(", ".join(parts))


def _format_metrics(metrics: Mapping[str, float]) -> str:
    # The loss first, as on the bar; the rest in the order they were logged.
    keys = sorted(metrics, key=lambda k: k != "loss")
    return " ".join(f"{k}={_number(metrics[k])}" for k in keys)


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _write_line(line: str) -> None:
    # sys.stderr looked up now: a redirection made after the bar was built applies.
    print(line, file=sys.stderr, flush=True)


def _finish(bar: Any, n: int, metrics: Mapping[str, float] | None) -> None:
    if metrics:
        bar.set_postfix(metrics, refresh=False)
    if n > bar.n:
        bar.update(n - bar.n)
    else:
        bar.refresh()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
