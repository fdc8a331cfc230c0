"""``fit`` turns metric tensors into host numbers only at log points and bar refreshes.

Every way a tensor reaches the host (``item``, ``tolist``, ``cpu``, ``numpy``, ``float()``,
``int()``, ``bool()``) is wrapped with a counter while ``fit`` runs 200 steps.
"""

from __future__ import annotations

import collections
import io
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ftrain as ft
import ftrain.driver._progress as progress

STEPS = 200
HOST_CALLS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class Syncs:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Syncs]:
    counter = Syncs()
    for name in HOST_CALLS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _f: Any = original) -> Any:
            counter.calls[_name] += 1
            return _f(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield counter


class RecordingLogger:
    """A logger that notes how many host syncs had happened when each write arrived."""

    def __init__(self, syncs: Syncs) -> None:
        self.syncs = syncs
        self.writes: list[tuple[int, int, dict[str, float]]] = []

    name = "recording"
    version = 0
    log_dir = None

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.writes.append((self.syncs.total, step, dict(metrics)))

    def resume(self, version: int | str, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass


def _loss_fn(model: torch.nn.Module, batch: Any) -> Any:
    loss = F.mse_loss(model(batch[0]), batch[1])
    return loss, {"a": loss * 2, "b": ft.log(loss * 3, on_epoch=True, prog_bar=True)}


def _fit(
    syncs: Syncs, log_every_n_steps: int, progress_bar: bool = False, callbacks: Any = ()
) -> RecordingLogger:
    torch.manual_seed(0)
    x, y = torch.randn(2 * STEPS, 2), torch.randn(2 * STEPS, 1)
    model = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.01))
    logger = RecordingLogger(syncs)
    data = ft.TensorLoader(x, y, batch_size=2)
    syncs.calls.clear()
    result = ft.fit(
        state, ft.train_step(_loss_fn), data, max_epochs=1, log_every_n_steps=log_every_n_steps,
        logger=logger, enable_checkpointing=False, enable_progress_bar=progress_bar,
        enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    assert result.state.step == STEPS
    return logger


def test_syncs_only_at_log_points(syncs: Syncs) -> None:
    """With log_every_n_steps=50: no sync between log points, one per logged tensor at each,
    one per epoch-level value at the epoch's end, and FitResult's conversion at the end."""
    logger = _fit(syncs, log_every_n_steps=50)
    step_writes = [w for w in logger.writes if "loss" in w[2]]
    assert [step for _, step, _ in step_writes] == [49, 99, 149, 199]
    before = 0
    for count, _, metrics in step_writes:
        assert sorted(metrics) == ["a", "b_step", "epoch", "loss"]
        assert count - before == 3  # loss, a, b_step: converted when written, never in between
        before = count
    (epoch_write,) = [w for w in logger.writes if "b_epoch" in w[2]]
    assert epoch_write[0] - before == 1
    # FitResult.metrics: loss, a, b_step, b (= b_epoch), b_epoch.
    assert syncs.total == 4 * 3 + 1 + 5, syncs.calls
    assert set(syncs.calls) == {"item"}


def test_the_counter_sees_per_step_logging(syncs: Syncs) -> None:
    """The control: logging every step converts every step's metrics."""
    _fit(syncs, log_every_n_steps=1)
    assert syncs.total >= 3 * STEPS


def test_progress_bar_syncs_only_when_it_refreshes(
    syncs: Syncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar reads its metrics only at refreshes (every 20 batches here, the clock never
    holding it back) and at the epoch's end, and shows them."""
    _fit(syncs, log_every_n_steps=50)
    without_bar = syncs.total

    out = io.StringIO()
    ticks = iter(range(10**6))
    monkeypatch.setattr(progress, "_clock", lambda: float(next(ticks)))
    monkeypatch.setattr(
        progress.ProgressBar,
        "auto",
        classmethod(lambda cls, enable, file=None, **kw: cls(enable, refresh_rate=20, file=out)),
    )
    _fit(syncs, log_every_n_steps=50, progress_bar=True)
    refreshes = STEPS // 20
    # loss and b_step at each refresh and at the epoch's end; b_epoch once for the bar.
    assert syncs.total - without_bar == 2 * (refreshes + 1) + 1
    text = out.getvalue()
    assert "Epoch 0: 100%" in text
    assert "b_step=" in text and "loss=" in text and "b_epoch=" in text


def test_throughput_monitor_adds_no_sync(syncs: Syncs) -> None:
    """ThroughputMonitor (tokens and MFU on) adds its values to each step write without a
    single extra host sync."""
    _fit(syncs, log_every_n_steps=50)
    without = syncs.total
    monitor = ft.ThroughputMonitor(
        tokens_fn=lambda b: b[0].numel(), flops_per_batch=100.0, peak_flops=1e6
    )
    logger = _fit(syncs, log_every_n_steps=50, callbacks=[monitor])
    assert syncs.total == without  # _fit counts from zero
    step_writes = [w for w in logger.writes if "loss" in w[2]]
    for _, _, metrics in step_writes:
        assert metrics["throughput/tokens_per_sec"] == pytest.approx(
            4 * metrics["throughput/batches_per_sec"]
        )
        assert metrics["throughput/mfu"] > 0
