"""Lightning parity points: callback_metrics naming, scheduler frequency and mappings,
log_every_n_steps=0, and seed_everything reaching the run seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

QUIET: dict[str, Any] = dict(
    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
)


def _parts(n: int = 32) -> tuple[ft.TrainState, ft.TensorLoader]:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x = torch.randn(n, 4)
    return state, ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)


def _mse(m: torch.nn.Module, b: Any) -> torch.Tensor:
    return ((m(b[0]) - b[1]) ** 2).mean()


def test_val_metric_on_step_and_epoch_keeps_its_plain_name(tmp_path: Path) -> None:
    """A validation metric logged on_step and on_epoch is monitorable by its plain name."""
    state, data = _parts()
    val = ft.eval_step(lambda m, b: {"val_loss": ft.log(_mse(m, b), on_step=True, on_epoch=True)})
    result = ft.fit(
        state,
        ft.train_step(_mse),
        data,
        val_step=val,
        val_data=data,
        max_epochs=2,
        logger=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        checkpoint=ft.checkpoint.top_k(1, monitor="val_loss"),
    )
    assert result.metrics["val_loss"] == result.metrics["val_loss_epoch"]
    assert result.best_checkpoint is not None


def test_train_metric_name_holds_the_latest_value(tmp_path: Path) -> None:
    """``name`` of a train metric logged per step and per epoch is the latest step value
    during an epoch and the epoch value right after the epoch's end (Lightning)."""
    state, data = _parts()
    seen: dict[str, list[tuple[float, float, float]]] = {"mid": [], "end": []}

    class Watch(ft.Callback):
        def on_validation_end(self, state: ft.TrainState, metrics: Any) -> None:
            seen["mid"].append((metrics["tl"], metrics["tl_step"], metrics.get("tl_epoch", -1.0)))

        def on_train_epoch_end(self, state: ft.TrainState, metrics: Any) -> None:
            seen["end"].append((metrics["tl"], metrics["tl_step"], metrics["tl_epoch"]))

    step = ft.train_step(lambda m, b: (_mse(m, b), {"tl": ft.log(_mse(m, b), on_epoch=True)}))
    val = ft.eval_step(lambda m, b: {"v": _mse(m, b)})
    ft.fit(
        state,
        step,
        data,
        val_step=val,
        val_data=data,
        max_epochs=2,
        logger=False,
        callbacks=[Watch()],
        val_check_interval=0.5,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    for tl, tl_step, _ in seen["mid"]:
        assert tl == tl_step
    for tl, _, tl_epoch in seen["end"]:
        assert tl == tl_epoch


def test_step_scheduler_frequency_counts_batches_as_lightning(tmp_path: Path) -> None:
    """interval="step", frequency=2 with accumulate 2 over 4 batches: Lightning steps the
    scheduler when (batch_idx + 1) % frequency == 0 on stepping batches: twice here."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = ft.SchedulerConfig(
        torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), interval="step", frequency=2
    )
    state = ft.TrainState.create(net, opt, sched)
    x = torch.randn(32, 4)
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)
    result = ft.fit(
        state,
        ft.train_step(_mse),
        data,
        max_epochs=1,
        accumulate_grad_batches=2,
        logger=False,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    assert result.state.optimizer.param_groups[0]["lr"] == 0.25


def test_step_schedulers_in_a_mapping_are_stepped() -> None:
    """Step-interval schedulers given as a mapping are stepped after each update."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = {"a": ft.SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), interval="step")}
    state = ft.TrainState.create(net, opt, sched)
    step = ft.train_step(_mse)
    batch = (torch.randn(8, 4), torch.randn(8, 1))
    for _ in range(3):
        state, _ = step(state, batch)
    assert opt.param_groups[0]["lr"] == 0.125


def test_log_every_n_steps_zero_logs_no_step_values(tmp_path: Path) -> None:
    """log_every_n_steps=0 writes no step metrics; epoch metrics are still written."""
    state, data = _parts()
    step = ft.train_step(
        lambda m, b: (_mse(m, b), {"e": ft.log(_mse(m, b), on_step=False, on_epoch=True)})
    )
    logger = ft.loggers.CSVLogger(str(tmp_path))
    ft.fit(
        state,
        step,
        data,
        max_epochs=2,
        logger=logger,
        log_every_n_steps=0,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    import csv

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["e"] != "" for r in rows] == [True, True]
    assert all(r.get("loss", "") == "" for r in rows)


def test_seed_everything_sets_the_run_seed() -> None:
    """seed_everything(n) before TrainState.create gives the state seed n, so data order
    and dropout follow it (as Lightning's global seed does)."""
    ft.seed_everything(7, verbose=False)
    state, _ = _parts()
    assert state.seed == 7
    assert ft.TrainState.create(torch.nn.Linear(1, 1), None, seed=3).seed == 3


def test_validation_step_values_are_logged_every_batch(tmp_path: Path) -> None:
    """Validation values logged with on_step=True go to the loggers at every batch, on their
    own counter across validation runs, with no epoch column; the epoch value goes as
    name_epoch at the training step index."""
    import csv

    state, data = _parts()
    val = ft.eval_step(lambda m, b: {"vl": ft.log(_mse(m, b), on_step=True, on_epoch=True)})
    logger = ft.loggers.CSVLogger(str(tmp_path))
    ft.fit(
        state,
        ft.train_step(_mse),
        data,
        val_step=val,
        val_data=data,
        max_epochs=2,
        logger=logger,
        log_every_n_steps=1,
        num_sanity_val_steps=2,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    step_rows = [r for r in rows if r.get("vl_step")]
    assert [int(r["step"]) for r in step_rows] == list(range(8))  # 4 batches x 2 runs, no sanity
    assert all(r.get("epoch", "") == "" for r in step_rows)
    epoch_rows = [r for r in rows if r.get("vl_epoch")]
    assert [int(r["step"]) for r in epoch_rows] == [3, 7]


@pytest.mark.parametrize(("max_steps", "expected_lr"), [(4, 0.5), (6, 0.5), (8, 0.25)])
def test_epoch_scheduler_steps_only_after_a_whole_epoch(
    max_steps: int, expected_lr: float, tmp_path: Path
) -> None:
    """An epoch-interval scheduler is stepped at the end of every whole epoch, and not
    when max_steps cuts an epoch short (Lightning's rule). 4 batches per epoch."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    state = ft.TrainState.create(net, opt, torch.optim.lr_scheduler.StepLR(opt, 1, 0.5))
    x = torch.randn(32, 4)
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)
    result = ft.fit(
        state,
        ft.train_step(_mse),
        data,
        max_steps=max_steps,
        logger=False,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    assert result.state.optimizer.param_groups[0]["lr"] == expected_lr


def test_time_based_val_check_interval(tmp_path: Path) -> None:
    """val_check_interval as a time ("DD:HH:MM:SS", Lightning 2.6) validates each time that
    much training time has passed since the last check, not at epoch ends. The clock
    advances one second per training batch here."""
    state, data = _parts(n=64)  # 8 batches per epoch
    now = [0.0]
    validated_after: list[int] = []

    class Tick(ft.Callback):
        def on_train_batch_end(
            self, state: ft.TrainState, metrics: Any, batch: Any, batch_idx: int
        ) -> None:
            now[0] += 1.0

        def on_validation_end(self, state: ft.TrainState, metrics: Any) -> None:
            validated_after.append(state.micro_step)

    val = ft.eval_step(lambda m, b: {"v": _mse(m, b)})
    ft.fit(
        state,
        ft.train_step(_mse),
        data,
        val_step=val,
        val_data=data,
        max_epochs=2,
        val_check_interval="00:00:00:03",
        clock=lambda: now[0],
        callbacks=[Tick()],
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **QUIET,
    )
    assert validated_after == [3, 6, 9, 12, 15]


@pytest.mark.parametrize("value", ["3s", {"fortnights": 1}, "00:00:00:00"])
def test_bad_time_val_check_interval(value: object) -> None:
    """A malformed or zero time interval names val_check_interval."""
    with pytest.raises(ValueError, match="val_check_interval"):
        ft.FitConfig(val_check_interval=value)


def test_model_checkpoint_verbose_prints_each_save(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ModelCheckpoint(verbose=True) announces every file it writes, with the score."""
    state, data = _parts()
    val = ft.eval_step(lambda m, b: {"val_loss": _mse(m, b)})
    policy = ft.checkpoint.ModelCheckpoint(monitor="val_loss", verbose=True)
    ft.fit(
        state,
        ft.train_step(_mse),
        data,
        val_step=val,
        val_data=data,
        max_epochs=2,
        checkpoint=policy,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    out = capsys.readouterr().out
    assert out.count("saving") == 2
    assert "Epoch 0, global step 4: saving" in out and "(score " in out
    assert ft.checkpoint.ModelCheckpoint().verbose is False
