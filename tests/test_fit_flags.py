"""Trainer flags beyond the core loop: barebones, detect_anomaly, sync_batchnorm, and
what fit reports: best_model_score, estimated_stepping_batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ftrain as ft

QUIET = dict(enable_progress_bar=False, enable_model_summary=False)


def _parts(n: int = 64) -> tuple[ft.TrainState, ft.TrainStep, ft.TensorLoader]:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x = torch.randn(n, 4)
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)
    step = ft.train_step(lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
    return state, step, data


def test_barebones_writes_nothing_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """barebones=True turns off loggers, checkpoints, bar, summary: the run leaves no file."""
    state, step, data = _parts()
    result = ft.fit(state, step, data, max_epochs=2, barebones=True, default_root_dir=str(tmp_path))
    assert result.state.step == 16
    assert list(tmp_path.iterdir()) == []
    assert result.best_checkpoint is None and result.log_dir is None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"fast_dev_run": True}, "fast_dev_run"),
        ({"detect_anomaly": True}, "detect_anomaly"),
        ({"profiler": "simple"}, "profiler"),
    ],
)
def test_barebones_refuses_what_it_turns_off(flags: dict[str, object], message: str) -> None:
    """barebones with a debugging or profiling flag is an error naming the flag."""
    with pytest.raises(ValueError, match=f"barebones=True cannot be combined with {message}"):
        ft.FitConfig(barebones=True, **flags)


def test_barebones_refuses_a_logger(tmp_path: Path) -> None:
    """A logger passed with barebones=True is refused rather than silently dropped."""
    state, step, data = _parts()
    with pytest.raises(ValueError, match="barebones"):
        ft.fit(
            state,
            step,
            data,
            max_epochs=1,
            barebones=True,
            logger=ft.loggers.CSVLogger(str(tmp_path)),
        )


def test_detect_anomaly_names_the_op_and_is_restored(tmp_path: Path) -> None:
    """detect_anomaly=True turns a NaN gradient into an error naming the backward op,
    and anomaly mode is back to its old value after fit."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    data = [torch.ones(4, 2)]
    step = ft.train_step(lambda m, b: torch.sqrt(-(m(b) ** 2).mean() - 1.0))
    assert not torch.is_anomaly_enabled()
    with pytest.raises(RuntimeError, match="SqrtBackward"), pytest.warns(UserWarning):
        ft.fit(
            state,
            step,
            data,
            max_epochs=1,
            detect_anomaly=True,
            logger=False,
            enable_checkpointing=False,
            default_root_dir=str(tmp_path),
            **QUIET,
        )
    assert not torch.is_anomaly_enabled()


def test_best_model_score_is_the_best_monitored_value(tmp_path: Path) -> None:
    """FitResult.best_model_score is the monitored value of best_checkpoint (Lightning's)."""
    state, step, data = _parts()
    seen: list[float] = []

    class Record(ft.Callback):
        def on_validation_end(self, state: ft.TrainState, metrics: object) -> None:
            seen.append(float(metrics["val_loss"]))  # type: ignore[index]

    result = ft.fit(
        state,
        step,
        data,
        val_step=ft.eval_step(lambda m, b: {"val_loss": ((m(b[0]) - b[1]) ** 2).mean()}),
        val_data=data,
        max_epochs=4,
        logger=False,
        callbacks=[Record()],
        checkpoint=ft.checkpoint.top_k(2, monitor="val_loss"),
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        **QUIET,
    )
    assert result.best_model_score == pytest.approx(min(seen))
    assert result.best_checkpoint is not None and os.path.exists(result.best_checkpoint)


@pytest.mark.parametrize(
    "flags",
    [
        {"max_epochs": 3},
        {"max_epochs": 3, "accumulate_grad_batches": 3},
        {"max_epochs": 3, "accumulate_grad_batches": {0: 1, 1: 4}},
        {"max_epochs": 2, "limit_train_batches": 0.5},
        {"max_epochs": 5, "max_steps": 7},
    ],
)
def test_estimated_stepping_batches_matches_the_run(
    flags: dict[str, object], tmp_path: Path
) -> None:
    """estimated_stepping_batches(data, **flags) equals the optimizer steps fit takes."""
    state, step, data = _parts(n=80)
    estimate = ft.estimated_stepping_batches(data, **flags)
    result = ft.fit(
        state,
        step,
        data,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        **QUIET,
        **flags,
    )
    assert estimate == result.state.step


def test_estimated_stepping_batches_is_infinite_without_bounds() -> None:
    """Unsized data with no max_steps gives inf (Lightning's estimate)."""
    assert ft.estimated_stepping_batches(iter([1, 2]), max_epochs=1) == float("inf")


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    """torch's SyncBatchNorm runs on GPU modules only: a CPU DDP run with
    sync_batchnorm=True stops at start with a message naming the flag."""
    script = Path(__file__).parent / "dist_scripts" / "syncbn.py"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--out",
            str(tmp_path / "m"),
            "--devices",
            "2",
            "--accelerator",
            "cpu",
            "--sync_batchnorm",
            "true",
            "--process_timeout",
            "60",
            "--default_root_dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "sync_batchnorm=True needs accelerator='cuda'" in proc.stderr


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm needs 2 GPUs")
def test_sync_batchnorm_shares_statistics_across_ranks(tmp_path: Path) -> None:
    """With sync_batchnorm=True under DDP, both ranks' BatchNorm running means equal the
    running mean of one BatchNorm over the union of their batches."""
    script = Path(__file__).parent / "dist_scripts" / "syncbn.py"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--out",
            str(tmp_path / "m"),
            "--devices",
            "2",
            "--accelerator",
            "cuda",
            "--sync_batchnorm",
            "true",
            "--process_timeout",
            "60",
            "--default_root_dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    means = [torch.load(tmp_path / f"m.rank{r}", weights_only=True) for r in (0, 1)]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    data = torch.arange(48, dtype=torch.float32).reshape(16, 3) / 10
    # Rank r reads rows r::2 of the sequential order, batch 4: together rows 0..7.
    net.train()
    net(data[:8])
    assert torch.allclose(means[0].cpu(), means[1].cpu())
    assert torch.allclose(means[0].cpu(), net[1].running_mean, atol=1e-6)
