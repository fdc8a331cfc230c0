"""Progress bar: what it shows, when it reads metrics, and that a disabled bar is silent."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Mapping

import pytest

from ftrain.driver import _progress
from ftrain.driver._progress import ProgressBar


def _counting(values: Mapping[str, float]) -> tuple[Callable[[], Mapping[str, float]], list[int]]:
    calls = [0]

    def metrics() -> Mapping[str, float]:
        calls[0] += 1
        return values

    return metrics, calls


def _fake_clock(monkeypatch: pytest.MonkeyPatch, tick: float) -> None:
    ticks = itertools.count()
    monkeypatch.setattr(_progress, "_clock", lambda: next(ticks) * tick)


def _epoch(bar: ProgressBar, batches: int, metrics: Callable[[], Mapping[str, float]]) -> None:
    bar.train_epoch_start(0, batches)
    for i in range(batches):
        bar.train_batch_end(i, metrics)
    bar.train_epoch_end(metrics())


def test_shows_metrics_compactly() -> None:
    """The bar shows "Epoch N", the count and the metrics with 3 significant digits."""
    out = io.StringIO()
    bar = ProgressBar(file=out)
    metrics, _ = _counting({"loss": 0.23141592, "acc": 0.5})
    _epoch(bar, 4, metrics)
    bar.close()
    text = out.getvalue()
    assert "Epoch 0" in text
    assert "4/4" in text
    assert "loss=0.231, acc=0.5]" in text


def test_metrics_read_only_at_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With refresh_rate=10, 100 batches read metrics() 10 times when time allows each refresh,
    and once when they all fall within 0.1 s."""
    _fake_clock(monkeypatch, tick=1.0)
    out = io.StringIO()
    bar = ProgressBar(file=out, refresh_rate=10)
    metrics, calls = _counting({"loss": 1.0})
    bar.train_epoch_start(0, 100)
    for i in range(100):
        bar.train_batch_end(i, metrics)
    assert calls[0] == 10
    assert [f"{n}/100" in out.getvalue() for n in (10, 50, 100)] == [True] * 3
    assert "5/100" not in out.getvalue()

    _fake_clock(monkeypatch, tick=0.0)
    bar.train_epoch_start(1, 100)
    calls[0] = 0
    for i in range(100):
        bar.train_batch_end(i, metrics)
    assert calls[0] == 1
    bar.close()


def test_final_count_and_metrics_at_epoch_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between refreshes the count still advances; epoch end shows the last batch and the
    given metrics, also for unsized data and for an epoch resumed mid-way."""
    _fake_clock(monkeypatch, tick=0.0)
    out = io.StringIO()
    bar = ProgressBar(file=out, refresh_rate=1000)
    bar.train_epoch_start(3, None)
    for i in range(37):
        bar.train_batch_end(i, lambda: {})
    bar.train_epoch_end({"loss": 2.0})
    assert "Epoch 3: 37it" in out.getvalue()
    assert "loss=2]" in out.getvalue()

    bar.train_epoch_start(4, 20)
    for i in range(12, 20):  # resumed at batch 12
        bar.train_batch_end(i, lambda: {})
    bar.train_epoch_end({})
    bar.close()
    assert "Epoch 4: 100%" in out.getvalue()
    assert "20/20" in out.getvalue()


def test_leave_false_reuses_one_line() -> None:
    """With leave=False every epoch redraws the same bar, starting without the last
    epoch's metrics; close() keeps the last epoch on screen."""
    out = io.StringIO()
    bar = ProgressBar(file=out, leave=False)
    _epoch(bar, 2, lambda: {"loss": 0.5})
    first = bar._train.bar
    bar.train_epoch_start(1, 3)
    assert bar._train.bar is first
    assert re.search(r"\rEpoch 1:   0%\|.*\| 0/3 \[00:00<\?, \?it/s\] *$", out.getvalue())
    bar.close()
    assert out.getvalue().endswith("\n")


def test_eval_bars() -> None:
    """Evaluation bars carry the stage name; inside fit and for the sanity check they vanish
    when done, a standalone test bar stays."""
    out = io.StringIO()
    bar = ProgressBar(file=out)
    bar.eval_start("Sanity check", 2)
    assert bar._eval.bar.leave is False
    bar.eval_end(None)
    bar.train_epoch_start(0, 2)
    bar.eval_start("Validation", 3)
    assert bar._eval.bar.leave is False
    for i in range(3):
        bar.eval_batch_end(i)
    bar.eval_end({"val_loss": 0.125})
    bar.train_epoch_end({})
    bar.close()
    assert "Validation: 100%" in out.getvalue()
    assert "val_loss=0.125" in out.getvalue()

    bar.eval_start("Test", 1)
    assert bar._eval.bar.leave is True
    bar.eval_batch_end(0)
    bar.eval_end({"test_acc": 1.0})
    assert re.search(r"Test: 100%.*test_acc=1\] *\n$", out.getvalue())


def test_print_goes_to_the_bar_stream() -> None:
    """print writes the message on its own line in the bar's stream."""
    out = io.StringIO()
    bar = ProgressBar(file=out)
    bar.train_epoch_start(0, 5)
    bar.print("saved epoch=0.ckpt")
    bar.close()
    assert "saved epoch=0.ckpt\n" in out.getvalue()


@pytest.mark.parametrize("bar", [ProgressBar(enable=False), ProgressBar(refresh_rate=0)])
def test_disabled_bar_is_silent(bar: ProgressBar) -> None:
    """A disabled bar (enable=False or refresh_rate=0) writes nothing and never reads metrics."""
    out = io.StringIO()
    bar._file = out
    metrics, calls = _counting({"loss": 1.0})
    bar.eval_start("Sanity check", 2)
    bar.eval_batch_end(0)
    bar.eval_end({"val_loss": 1.0})
    _epoch(bar, 50, metrics)
    bar.print("hello")
    bar.close()
    assert out.getvalue() == ""
    assert calls[0] == 1  # only _epoch's own call for train_epoch_end
    assert not bar.enabled


def test_auto(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """auto() uses an explicit file; without one it turns bars off when stderr is not a
    terminal, but print still reaches stdout; enable=False is silent."""
    assert ProgressBar.auto(True, file=io.StringIO()).enabled
    monkeypatch.setattr("sys.stderr", io.StringIO())
    redirected = ProgressBar.auto(True)
    assert not redirected.enabled
    _epoch(redirected, 3, lambda: {"loss": 1.0})
    redirected.print("epoch 0 done")
    ProgressBar.auto(False).print("never shown")
    captured = capsys.readouterr()
    assert captured.out == "epoch 0 done\n"


def test_rejects_bad_refresh_rate() -> None:
    """refresh_rate must be an int >= 0."""
    with pytest.raises(ValueError, match="refresh_rate must be an int >= 0, got -1"):
        ProgressBar(refresh_rate=-1)
