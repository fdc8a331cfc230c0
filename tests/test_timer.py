"""``ft.Timer``: time per stage, a training time limit, and its time across a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft


class Ticks:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _fit(root: Path, timer: ft.Timer, **flags: Any) -> ft.FitResult:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=0)
    x = torch.randn(16, 2)
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=2)
    options = {"max_epochs": 3, "default_root_dir": str(root), "logger": False,
               "enable_progress_bar": False, "enable_model_summary": False, **flags}  # fmt: skip
    loss = ft.train_step(lambda net, b: ((net(b[0]) - b[1]) ** 2).mean())
    return ft.fit(state, loss, data, callbacks=[timer], **options)


def test_timer_stops_training_and_keeps_counting_after_a_resume(tmp_path: Path) -> None:
    """With one second per clock reading, a 5 s duration stops after the 5th batch; the
    checkpoint at that epoch's end stores 6 s (its own reading), and a resumed run with
    an 8 s duration stops 2 batches later."""
    timer = ft.Timer(duration={"seconds": 5}, verbose=False, clock=Ticks())
    result = _fit(tmp_path, timer)
    assert result.state.step == 5
    assert timer.time_elapsed("train") == 7.0 and timer.time_remaining("train") == -2.0
    assert timer.start_time("train") == 0.0 and timer.end_time("train") == 7.0
    again = ft.Timer(duration="00:00:00:08", verbose=False, clock=Ticks())
    resumed = _fit(tmp_path, again, ckpt_path="last")
    assert resumed.state.step == 7
    assert again.time_elapsed("train") == 6.0 + 4.0


def test_timer_times_validation_and_an_epoch_interval(tmp_path: Path) -> None:
    """interval="epoch" checks only at epoch ends (8 batches each); validation is timed
    on its own."""
    timer = ft.Timer(duration={"seconds": 3}, interval="epoch", verbose=False, clock=Ticks())
    x = torch.randn(4, 2)
    result = _fit(
        tmp_path,
        timer,
        val_step=ft.eval_step(lambda net, b: {"v": net(b[0]).mean()}),
        val_data=ft.TensorLoader(x, x, batch_size=2, shuffle=False),
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    assert result.state.step == 8
    assert timer.time_elapsed("validate") == 1.0
    assert timer.time_remaining() is not None and timer.time_remaining() < 0


def test_timer_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="Timer: interval must be 'step' or 'epoch', got 'batch'"):
        ft.Timer(interval="batch")
    with pytest.raises(ValueError, match="Timer: duration"):
        ft.Timer(duration="1 hour")
    with pytest.raises(ValueError, match="stage must be one of"):
        ft.Timer().time_elapsed("fit")
    assert ft.Timer().time_remaining() is None
