"""Profilers: per-phase wall time ("simple") and a torch.profiler trace ("pytorch")."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

import ftrain as ft
from ftrain.driver._profiler import NullProfiler, SimpleProfiler, make_profiler


def _loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _val(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    return {"val_loss": F.cross_entropy(model(batch[0]), batch[1])}


def _fit(tmp_path: Path, **flags: object) -> ft.FitResult:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    options = {
        "max_epochs": 2,
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **flags,
    }
    return ft.fit(state, ft.train_step(_loss), ft.TensorLoader(x, y, batch_size=4), **options)


def test_simple_profiler_sums_each_phase_with_its_clock() -> None:
    """start/stop add the clock's difference to the phase; a stop without start is ignored."""
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 20.5])
    prof = SimpleProfiler(clock=lambda: next(ticks))
    prof.start("step")
    prof.stop("step")
    prof.start("step")
    prof.stop("step")
    prof.start("data")
    prof.stop("data")
    prof.stop("never started")
    summary = prof.summary()
    assert list(summary) == ["step", "data"]  # by total time, largest first
    assert summary["step"] == {"total_s": 4.0, "calls": 2.0, "mean_us": 2e6}
    assert summary["data"]["total_s"] == 0.5
    lines = prof.report().splitlines()
    assert lines[0].split() == ["phase", "calls", "mean", "(us)", "total", "(s)"]
    assert lines[1].split() == ["step", "2", "2000000.0", "4.000"]


def test_no_profiler_costs_nothing_and_reports_nothing(tmp_path: Path) -> None:
    """profiler=None: a NullProfiler, and FitResult.profile is None."""
    assert isinstance(make_profiler(None, str(tmp_path)), NullProfiler)
    assert not make_profiler(None, str(tmp_path)).enabled
    result = _fit(tmp_path, logger=False, enable_checkpointing=False)
    assert result.profile is None


def test_simple_profiler_reports_every_phase_of_fit(tmp_path: Path) -> None:
    """profiler="simple" times data fetch and step once per batch, validation once per
    run, logging once per log point and the checkpoint decisions; all times are real."""
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    result = _fit(
        tmp_path,
        profiler="simple",
        log_every_n_steps=4,
        val_step=ft.eval_step(_val),
        val_data=ft.TensorLoader(x, y, batch_size=4, shuffle=False),
        num_sanity_val_steps=0,
    )
    profile = result.profile
    assert profile is not None
    assert {"data", "step", "validation", "logging", "checkpoint"} <= set(profile)
    assert profile["data"]["calls"] == profile["step"]["calls"] == 16  # 8 batches x 2 epochs
    assert profile["validation"]["calls"] == 2  # once per epoch
    assert profile["logging"]["calls"] == 4  # steps 4, 8, 12, 16
    for phase in profile.values():
        assert phase["total_s"] > 0
        assert phase["mean_us"] == phase["total_s"] / phase["calls"] * 1e6


def test_pytorch_profiler_writes_a_trace(tmp_path: Path) -> None:
    """profiler="pytorch" writes a torch.profiler trace (TensorBoard plugin format) and
    still reports the per-phase times."""
    result = _fit(tmp_path, profiler="pytorch", logger=False, enable_checkpointing=False)
    traces = list((tmp_path / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1
    assert traces[0].stat().st_size > 0
    assert result.profile is not None and result.profile["step"]["calls"] == 16


def test_advanced_profiler_writes_a_sorted_cprofile_report(tmp_path: Path) -> None:
    """profiler="advanced" profiles each phase with cProfile: the report in the log
    folder lists the loss function under "step", functions sorted by cumulative time,
    and the per-phase times are still reported."""
    result = _fit(tmp_path, profiler="advanced", logger=False, enable_checkpointing=False)
    assert result.profile is not None and result.profile["step"]["calls"] == 16
    text = (tmp_path / "advanced_profile.txt").read_text()
    step = text[text.index("Profile of 'step'") :]
    step = step[: step.find("Profile of", 1)] if "Profile of" in step[1:] else step
    assert "Ordered by: cumulative time" in step and "_loss" in step and "cross_entropy" in step
    row = re.compile(r"^\s*[\d/]+\s+([\d.]+\s+){4}\S")  # ncalls tottime percall cumtime percall
    cumulative = [float(line.split()[3]) for line in step.splitlines() if row.match(line)]
    assert cumulative and cumulative == sorted(cumulative, reverse=True)
    assert "Profile of 'data'" in text


def test_advanced_profiler_suspends_an_outer_phase() -> None:
    """A phase started inside another pauses the outer one's cProfile and resumes it."""
    from ftrain.driver._profiler import AdvancedProfiler

    prof = AdvancedProfiler("unused")
    prof.start("validation")
    prof.start("checkpoint")
    sum(range(10))
    prof.stop("checkpoint")
    prof.stop("validation")
    assert set(prof.summary()) == {"validation", "checkpoint"}
    assert "sum" in prof.phase_report("checkpoint")
    assert "sum" not in prof.phase_report("validation")
