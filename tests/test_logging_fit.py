"""What ``fit`` writes to its loggers, read back with TensorBoard's and the csv module's readers.

The steps record what they returned; the tests compare names, x-axis steps and values
in the files with that record, against Lightning's rules (LIGHTNING_SPEC.md, 1 and 7).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ftrain as ft
from ftrain.loggers import CSVLogger, JSONLinesLogger, TensorBoardLogger

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}

X = torch.linspace(-1.0, 1.0, 48).reshape(24, 2)
Y = X.sum(1, keepdim=True)
VX = torch.linspace(-2.0, 3.0, 20).reshape(10, 2)
VY = VX.sum(1, keepdim=True)


def _state(lr: float = 0.05, scheduler: Any = None) -> ft.TrainState:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    if callable(scheduler):
        scheduler = scheduler(optimizer)
    return ft.TrainState.create(model, optimizer, scheduler=scheduler)


def _recording_loss(seen: list[torch.Tensor]) -> Callable[..., Any]:
    """A loss_fn that records each micro-batch's loss and logs x[:, 0].mean() step+epoch."""

    def loss_fn(model: torch.nn.Module, batch: Any) -> Any:
        x, y = batch
        loss = F.mse_loss(model(x), y)
        seen.append(loss.detach().clone())
        return loss, {"xm": ft.log(x[:, 0].mean(), on_epoch=True, prog_bar=True)}

    return loss_fn


def _val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
    x, y = batch
    return {"val_loss": F.mse_loss(model(x), y), "val_x": x[:, 0].mean()}


def _scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name, "") != ""]


def _batch_mean(x: torch.Tensor, i: int, size: int) -> float:
    return x[i * size : (i + 1) * size, 0].mean().item()


def test_step_epoch_and_validation_points_in_tensorboard_and_csv(tmp_path: Path) -> None:
    """Step metrics every n steps at x=step-1 with the step's own value; epoch metrics and
    validation at the last step index before them; sanity validation never logged; the same
    data in every logger; ``FitResult.metrics`` holds the last values as floats."""
    seen: list[torch.Tensor] = []
    val_calls: list[int] = []

    def val_fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        val_calls.append(len(batch[0]))
        return _val_fn(model, batch)

    loggers = [TensorBoardLogger(tmp_path), CSVLogger(tmp_path), JSONLinesLogger(tmp_path)]
    result = ft.fit(
        _state(),
        ft.train_step(_recording_loss(seen)),
        ft.TensorLoader(X, Y, batch_size=2, shuffle=False),  # 12 batches per epoch
        val_step=ft.eval_step(val_fn),
        val_data=ft.TensorLoader(VX, VY, batch_size=4, shuffle=False),  # 4, 4, 2
        max_epochs=2,
        log_every_n_steps=3,
        val_check_interval=0.5,
        logger=loggers,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert len(seen) == 24
    assert val_calls == [4, 4] + [4, 4, 2] * 4  # sanity check (2 batches), then 4 validations
    losses = [v.item() for v in seen]
    train_x = [3 * k + 2 for k in range(8)]  # state.step % 3 == 0 -> x = step - 1
    val_at = [5, 11, 17, 23]
    xm_epoch = X[:, 0].mean().item()
    val_x = VX[:, 0].mean().item()  # batch-size weighted over 4, 4, 2

    expected = {
        "loss": [(s, losses[s]) for s in train_x],
        "xm_step": [(s, _batch_mean(X, s % 12, 2)) for s in train_x],
        "xm_epoch": [(11, xm_epoch), (23, xm_epoch)],
        "val_x": [(s, val_x) for s in val_at],
    }
    tb = _scalars(loggers[0].log_dir)
    assert sorted(tb) == ["epoch", "loss", "val_loss", "val_x", "xm_epoch", "xm_step"]
    rows = _rows(loggers[1].metrics_file)
    assert list(rows[0]) == ["step", "epoch", "loss", "val_loss", "val_x", "xm_epoch", "xm_step"]
    for name, points in expected.items():
        for got in (tb[name], _column(rows, name)):
            assert [s for s, _ in got] == [s for s, _ in points], name
            assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), name
    assert [s for s, _ in tb["val_loss"]] == val_at
    assert [s for s, _ in _column(rows, "val_loss")] == val_at

    # "epoch" rides along every write (4 step writes, 2 validations, 1 epoch end per
    # epoch), and TensorBoard gets it once per step.
    epochs = [(s, int(v)) for s, v in tb["epoch"]]
    assert epochs == sorted({(s, s // 12) for s in [*train_x, *val_at, 11, 23]})
    assert all(r["epoch"] in ("0", "1") for r in rows)  # ints, as Lightning's CSV

    with open(os.path.join(str(loggers[2].log_dir), "metrics.jsonl")) as f:
        jsonl = [json.loads(line) for line in f]
    assert [(r["step"], r.get("loss")) for r in jsonl] == [
        (int(r["step"]), float(r["loss"]) if r["loss"] else None) for r in rows
    ]

    assert result.metrics == {
        "loss": pytest.approx(losses[-1]),
        "xm": pytest.approx(xm_epoch),
        "xm_step": pytest.approx(_batch_mean(X, 11, 2)),
        "xm_epoch": pytest.approx(xm_epoch),
        "val_loss": pytest.approx(tb["val_loss"][-1][1], rel=1e-6),
        "val_x": pytest.approx(val_x),
    }
    assert all(type(v) is float for v in result.metrics.values())
    assert result.log_dir == loggers[0].log_dir


@pytest.mark.parametrize(
    ("batches", "last_of_window"), [(16, [3, 7, 11, 15]), (14, [3, 7, 11, 13])]
)
def test_accumulation_logs_once_per_optimizer_step(
    tmp_path: Path, batches: int, last_of_window: list[int]
) -> None:
    """With accumulate 4, one row per optimizer step (first at x=0) holding the last
    micro-batch's value; a short last window logs at its own boundary."""
    seen: list[torch.Tensor] = []
    x = torch.linspace(-1.0, 1.0, 2 * batches * 2).reshape(2 * batches, 2)
    logger = CSVLogger(tmp_path)
    ft.fit(
        _state(),
        ft.train_step(_recording_loss(seen)),
        ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=2, shuffle=False),
        max_epochs=1,
        accumulate_grad_batches=4,
        log_every_n_steps=1,
        logger=logger,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **QUIET,
    )
    rows = _rows(logger.metrics_file)
    assert _column(rows, "loss") == [
        (k, pytest.approx(seen[i].item())) for k, i in enumerate(last_of_window)
    ]
    assert _column(rows, "xm_step") == [
        (k, pytest.approx(_batch_mean(x, i, 2))) for k, i in enumerate(last_of_window)
    ]
    # The epoch mean still weighs every micro-batch.
    assert _column(rows, "xm_epoch") == [(3, pytest.approx(x[:, 0].mean().item(), abs=1e-6))]


def test_logger_false_writes_nothing(tmp_path: Path) -> None:
    """``logger=False``: no files, but ``FitResult.metrics`` is still filled."""
    result = ft.fit(
        _state(),
        ft.train_step(_recording_loss([])),
        ft.TensorLoader(X, Y, batch_size=4, shuffle=False),
        val_step=ft.eval_step(_val_fn),
        val_data=ft.TensorLoader(VX, VY, batch_size=4, shuffle=False),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert os.listdir(tmp_path) == []
    assert result.log_dir is None
    assert set(result.metrics) == {"loss", "xm", "xm_step", "xm_epoch", "val_loss", "val_x"}


def test_default_logger_and_hparams(tmp_path: Path) -> None:
    """``logger=True`` is TensorBoard under default_root_dir; ``hparams=`` reach every logger."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    hparams = {"lr": 0.05, "model": {"width": 4, "act": "relu"}}
    data = ft.TensorLoader(X, Y, batch_size=4, shuffle=False)  # 6 batches
    with pytest.warns(RuntimeWarning, match="log_every_n_steps=50 is more than the 6 training"):
        result = ft.fit(
            _state(), ft.train_step(_recording_loss([])), data, max_epochs=1, hparams=hparams,
            enable_checkpointing=False, default_root_dir=tmp_path, **QUIET,
        )  # fmt: skip
    assert result.log_dir == os.path.join(tmp_path, "ftrain_logs", "version_0")
    acc = EventAccumulator(result.log_dir)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    recorded = HParamsPluginData.FromString(content).session_start_info.hparams
    assert recorded["lr"].number_value == pytest.approx(0.05)
    assert recorded["model/width"].number_value == 4
    assert recorded["model/act"].string_value == "relu"
    with open(os.path.join(result.log_dir, "hparams.json")) as f:
        assert json.load(f) == hparams
    # 6 steps < 50: no step point, only the epoch's.
    assert sorted(acc.Tags()["scalars"]) == ["epoch", "xm_epoch"]

    csv_logger = CSVLogger(tmp_path, name="csv")
    ft.fit(
        _state(), ft.train_step(_recording_loss([])), data, max_epochs=1, hparams=hparams,
        logger=csv_logger, log_every_n_steps=1, enable_checkpointing=False, **QUIET,
    )  # fmt: skip
    with open(os.path.join(csv_logger.log_dir, "hparams.json")) as f:
        assert json.load(f) == hparams


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_learning_rate_monitor(tmp_path: Path, interval: str) -> None:
    """``lr-SGD`` is the lr each step (or epoch) used, at the same x as the step (epoch) metrics."""

    def scheduler(opt: torch.optim.Optimizer) -> ft.SchedulerConfig:
        return ft.SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), interval=interval)

    logger = CSVLogger(tmp_path)
    ft.fit(
        _state(lr=0.08, scheduler=scheduler),
        ft.train_step(_recording_loss([])),
        ft.TensorLoader(X, Y, batch_size=6, shuffle=False),  # 4 batches
        max_epochs=2,
        log_every_n_steps=2,
        logger=logger,
        callbacks=[ft.LearningRateMonitor()],
        enable_checkpointing=False,
        **QUIET,
    )
    lrs = _column(_rows(logger.metrics_file), "lr-SGD")
    if interval == "epoch":
        assert lrs == [(3, 0.08), (7, 0.04)]
    else:  # the lr halves after every step; steps 2, 4, 6, 8 log at x = 1, 3, 5, 7
        assert lrs == [(x, pytest.approx(0.08 * 0.5**x)) for x in (1, 3, 5, 7)]


def test_non_finite_values_are_logged_with_one_warning(tmp_path: Path) -> None:
    """NaN and inf reach the files as they are; each name warns once."""

    def loss_fn(model: torch.nn.Module, batch: Any) -> Any:
        loss = F.mse_loss(model(batch[0]), batch[1])
        return loss, {"nan": loss * math.nan, "inf": ft.log(loss * math.inf, on_epoch=True)}

    logger = CSVLogger(tmp_path)
    with pytest.warns(RuntimeWarning) as record:
        ft.fit(
            _state(), ft.train_step(loss_fn), ft.TensorLoader(X, Y, batch_size=6, shuffle=False),
            max_epochs=2, log_every_n_steps=1, logger=logger, enable_checkpointing=False, **QUIET,
        )  # fmt: skip
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        "metric 'inf_epoch' is inf; it is logged as is",
        "metric 'inf_step' is inf; it is logged as is",
        "metric 'nan' is nan; it is logged as is",
    ]
    rows = _rows(logger.metrics_file)
    assert [r["nan"] for r in rows if r["nan"]] == ["nan"] * 8
    assert [r["inf_step"] for r in rows if r["inf_step"]] == ["inf"] * 8
    assert [r["inf_epoch"] for r in rows if r["inf_epoch"]] == ["inf"] * 2


def test_resumed_run_continues_the_same_files(tmp_path: Path) -> None:
    """Resuming from a mid-run checkpoint continues the same version; TensorBoard and CSV
    drop what the first run logged at or after the checkpoint's step, so each step is once."""
    data = ft.TensorLoader(X, Y, batch_size=2, shuffle=False)
    common: dict[str, Any] = dict(log_every_n_steps=1, default_root_dir=str(tmp_path), **QUIET)
    policy = ft.checkpoint.every(n_train_steps=6)

    def loggers() -> list[Any]:
        return [TensorBoardLogger(tmp_path), CSVLogger(tmp_path, name="csv")]

    first = loggers()
    ft.fit(_state(), ft.train_step(_recording_loss([])), data, max_steps=18, checkpoint=policy,
           logger=first, **common)  # fmt: skip
    (path,) = glob.glob(os.path.join(tmp_path, "**", "*step=12*.ckpt"), recursive=True)
    second = loggers()
    result = ft.fit(_state(), ft.train_step(_recording_loss([])), data, max_epochs=2,
                    ckpt_path=path, checkpoint=policy, logger=second, **common)  # fmt: skip
    assert result.state.step == 24
    assert [lg.log_dir for lg in second] == [lg.log_dir for lg in first]
    assert [s for s, _ in _scalars(second[0].log_dir)["loss"]] == list(range(24))
    assert [s for s, _ in _column(_rows(second[1].metrics_file), "loss")] == list(range(24))
