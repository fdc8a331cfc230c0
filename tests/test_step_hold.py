"""Steps run back to back save the generators' states once (StepHold), with the same
results as saving and restoring them around every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import ftrain as ft
from ftrain._seed import STEP_HOLD

QUIET: dict[str, Any] = dict(
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
    accelerator="cpu",
    devices=1,
)


def _loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    x, y = batch
    out = model(x)  # dropout draws from the step's seeded generator
    return nn.functional.mse_loss(out, y), {"noise": torch.rand(())}


def _val(model: nn.Module, batch: Any) -> dict[str, Any]:
    # Validation draws from the caller's generator: it sees the ambient stream.
    x, y = batch
    return {"val_loss": nn.functional.mse_loss(model(x), y), "val_draw": torch.rand(())}


def _run(tmp_path: Path, name: str, callbacks: list[Any]) -> tuple[Any, list[str], torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.05), seed=3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 4, generator=g), torch.randn(96, 1, generator=g)
    train = ft.TensorLoader(x, y, batch_size=4, shuffle=True)
    val = ft.TensorLoader(x[:16], y[:16], batch_size=8)
    torch.manual_seed(123)  # the ambient stream validation draws from
    result = ft.fit(
        state,
        ft.train_step(_loss),
        train,
        val_data=val,
        val_step=ft.eval_step(_val),
        max_epochs=2,
        val_check_interval=7,
        log_every_n_steps=5,
        callbacks=callbacks,
        default_root_dir=str(tmp_path / name),
        logger=ft.loggers.CSVLogger(str(tmp_path / name), name="run"),
        **QUIET,
    )
    rows = (tmp_path / name / "run" / "version_0" / "metrics.csv").read_text().splitlines()
    return result.state, rows, torch.get_rng_state()


def test_a_run_with_held_states_equals_one_that_restores_them_every_step(tmp_path: Path) -> None:
    """A callback turns the short path (and the hold) off: weights, every logged value
    (the steps' draws, validation's draws from the ambient stream) and the generator
    afterwards are the same with and without it."""
    held, held_rows, held_rng = _run(tmp_path, "held", [])
    plain, plain_rows, plain_rng = _run(tmp_path, "plain", [ft.Callback()])
    for a, b in zip(held.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert held_rows == plain_rows
    assert any("val_draw" in row for row in held_rows[:1])
    assert torch.equal(held_rng, plain_rng)
    assert STEP_HOLD.saved is None and not STEP_HOLD.on


def _inner_and_outer_draws(hold: bool) -> list[float]:
    torch.manual_seed(7)
    model = nn.Linear(2, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=5)
    inner = ft.train_step(lambda m, b: m(b).sum())

    def outer_fn(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
        before = torch.rand(())
        state, _ = inner(state, batch)  # saves, seeds and restores inside this step
        return state, {"before": before, "after": torch.rand(())}

    outer = ft.custom_step(outer_fn)
    draws = []
    for _ in range(3):
        STEP_HOLD.on = hold
        state, metrics = outer(state, torch.ones(3, 2))
        draws += [float(metrics["before"]), float(metrics["after"])]
    STEP_HOLD.release()
    draws.append(float(torch.rand(())))  # the ambient stream after the steps
    return draws


def test_a_step_inside_a_held_step_saves_and_restores_as_usual() -> None:
    """A held custom step whose function calls a train step: the outer step's draws
    after the inner one continue its own stream, and the ambient stream afterwards is
    the same, as with per-step restores."""
    held = _inner_and_outer_draws(True)
    plain = _inner_and_outer_draws(False)
    assert held == plain
    assert len(set(held)) == len(held)  # seeded per micro-step: no draw repeats


def test_an_error_in_a_held_step_puts_the_states_back(tmp_path: Path) -> None:
    """A step failing mid-epoch leaves the caller's generator as it was before fit."""

    def failing(model: nn.Module, batch: Any) -> torch.Tensor:
        if failing.calls == 5:  # type: ignore[attr-defined]
            raise RuntimeError("boom")
        failing.calls += 1  # type: ignore[attr-defined]
        return model(batch[0]).sum()

    failing.calls = 0  # type: ignore[attr-defined]
    model = nn.Linear(4, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
    loader = ft.TensorLoader(torch.randn(40, 4), torch.zeros(40), batch_size=4)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        ft.fit(
            state,
            ft.train_step(failing),
            loader,
            max_epochs=1,
            logger=False,
            default_root_dir=str(tmp_path),
            **QUIET,
        )
    assert torch.equal(torch.get_rng_state(), before)
    assert STEP_HOLD.saved is None and not STEP_HOLD.on
