"""Callbacks log from epoch-end hooks (Lightning's self.log) and get plain step values."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.testing import classification_loss, tiny_state

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _data() -> tuple[ft.TensorLoader, ft.TensorLoader]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 4, generator=g)
    y = (x.sum(1) > 0).long()
    return (
        ft.TensorLoader(x, y, batch_size=4, shuffle=False),
        ft.TensorLoader(x, y, batch_size=8, shuffle=False),
    )


def _val(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    return {"val_loss": torch.nn.functional.cross_entropy(model(batch[0]), batch[1])}


class Doubler(ft.Callback):
    """Logs twice the validation loss, and a count of epochs, from epoch-end hooks."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_validation_end(self, state: Any, metrics: Any) -> None:
        self.log("double_val", torch.tensor(2.0) * metrics["val_loss"], prog_bar=True)

    def on_train_epoch_end(self, state: Any, metrics: Any) -> None:
        self.epochs += 1
        self.log("epochs_seen", float(self.epochs), logger=True)


def test_callback_values_reach_loggers_metrics_and_checkpoints(tmp_path: Path) -> None:
    """Logged values go to the CSV (with the epoch), to FitResult.metrics as floats, and
    a checkpoint policy can monitor them."""
    train, val = _data()
    result = ft.fit(
        tiny_state(),
        ft.train_step(classification_loss),
        train,
        val_step=ft.eval_step(_val),
        val_data=val,
        max_epochs=2,
        callbacks=[Doubler()],
        checkpoint=ft.checkpoint.top_k(1, "double_val"),
        logger=ft.loggers.CSVLogger(tmp_path),
        default_root_dir=str(tmp_path),
        log_every_n_steps=1,
        **QUIET,
    )
    assert result.metrics["double_val"] == pytest.approx(2 * result.metrics["val_loss"])
    assert isinstance(result.metrics["double_val"], float)
    assert result.metrics["epochs_seen"] == 2.0
    text = (Path(str(result.log_dir)) / "metrics.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    doubles = [r for r in rows if r["double_val"]]
    assert [r["epoch"] for r in doubles] == ["0", "1"]
    assert [r["epochs_seen"] for r in rows if r["epochs_seen"]] == ["1.0", "2.0"]
    assert result.best_model_score == pytest.approx(min(float(r["double_val"]) for r in doubles))


def test_log_from_a_hook_refuses_on_step() -> None:
    """An epoch-end hook has no step to log at: on_step=True is an error naming it."""
    with pytest.raises(ValueError, match="on_step=True"):
        Doubler().log("x", 1.0, on_step=True)
    with pytest.raises(ValueError, match="reduce_fx"):
        Doubler().log("x", 1.0, reduce_fx="median")


def test_batch_end_metrics_are_plain_detached_values(tmp_path: Path) -> None:
    """on_train_batch_end receives values, not Logged wrappers, and no autograd graph."""
    seen: list[tuple[type, bool]] = []

    def loss_fn(net: torch.nn.Module, batch: Any) -> Any:
        loss, _ = classification_loss(net, batch)
        return loss, {"wrapped": ft.log(loss * 2, prog_bar=True), "raw": loss * 3}

    class Look(ft.Callback):
        def on_train_batch_end(self, metrics: Any, **_: Any) -> None:
            for name in ("wrapped", "raw"):
                seen.append((type(metrics[name]), metrics[name].requires_grad))

    train, _ = _data()
    ft.fit(tiny_state(), ft.train_step(loss_fn), train, max_epochs=1, logger=False,
           enable_checkpointing=False, callbacks=[Look()], default_root_dir=str(tmp_path),
           **QUIET)  # fmt: skip
    assert seen and all(kind is torch.Tensor and not grad for kind, grad in seen)
