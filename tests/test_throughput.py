"""ThroughputMonitor: rates over the windows between log points, validation left out."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ftrain as ft


class Clock:
    """A clock the test's steps advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rates_in_fit_match_the_clock(tmp_path: Any) -> None:
    """4 samples of 3 tokens per batch, 2 batches per optimizer step, 0.5 s per batch: every
    log point logs 2 batches/s, 8 samples/s, 24 tokens/s, 1000 ms/step and the MFU; the 10 s
    of each validation are not counted."""
    clock = Clock()

    def loss_fn(model: torch.nn.Module, batch: Any) -> Any:
        clock.now += 0.5
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    def val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        clock.now += 5.0  # 2 batches: 10 s per validation run
        return {"val_loss": ((model(batch[0]) - batch[1]) ** 2).mean()}

    rows: list[tuple[int, dict[str, float]]] = []

    class Memory(ft.loggers.JSONLinesLogger):
        def log_metrics(self, metrics: Any, step: int) -> None:
            rows.append((step, dict(metrics)))

    x = torch.randn(64, 3)
    model = torch.nn.Linear(3, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.01))
    monitor = ft.ThroughputMonitor(
        tokens_fn=lambda b: b[0].numel(), flops_per_batch=50.0, peak_flops=400.0, clock=clock
    )
    ft.fit(
        state, ft.train_step(loss_fn), ft.TensorLoader(x, x[:, :1], batch_size=4),
        val_step=ft.eval_step(val_fn), val_data=ft.TensorLoader(x, x[:, :1], batch_size=32),
        callbacks=[monitor], logger=Memory(tmp_path / "m.jsonl"),
        max_epochs=2, accumulate_grad_batches=2, log_every_n_steps=2, val_check_interval=0.5,
        num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    logged = [(s, m) for s, m in rows if "throughput/batches_per_sec" in m]
    assert [s for s, _ in logged] == [1, 3, 5, 7, 9, 11, 13, 15]
    for _, m in logged:
        assert m["throughput/batches_per_sec"] == pytest.approx(2.0)
        assert m["throughput/samples_per_sec"] == pytest.approx(8.0)
        assert m["throughput/tokens_per_sec"] == pytest.approx(24.0)
        assert m["throughput/ms_per_step"] == pytest.approx(1000.0)
        assert m["throughput/flops_per_sec"] == pytest.approx(100.0)
        assert m["throughput/mfu"] == pytest.approx(0.25)


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="peak_flops needs flops_per_batch"):
        ft.ThroughputMonitor(peak_flops=1e12)
    with pytest.raises(ValueError, match="flops_per_batch must be a number > 0, got 0"):
        ft.ThroughputMonitor(flops_per_batch=0)
