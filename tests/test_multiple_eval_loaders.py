"""Several validation/test loaders, as Lightning's multiple dataloaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft


def _setup() -> tuple[ft.TrainState, ft.TensorLoader, ft.TensorLoader, ft.EvalStep]:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.05))
    xa, xb = torch.randn(24, 4), torch.randn(40, 4) * 3
    a = ft.TensorLoader(xa, xa.sum(1, keepdim=True), batch_size=8, shuffle=False)
    b = ft.TensorLoader(xb, xb.sum(1, keepdim=True), batch_size=8, shuffle=False)
    val = ft.eval_step(lambda m, batch: {"val_loss": ((m(batch[0]) - batch[1]) ** 2).mean()})
    return state, a, b, val


def test_validate_suffixes_each_loader_and_matches_single_runs() -> None:
    """validate over [a, b] gives name/dataloader_idx_i, each equal to validating that
    loader alone."""
    state, a, b, val = _setup()
    both = ft.validate(state, val, [a, b])
    assert sorted(both) == ["val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"]
    assert both["val_loss/dataloader_idx_0"] == ft.validate(state, val, a)["val_loss"]
    assert both["val_loss/dataloader_idx_1"] == ft.validate(state, val, b)["val_loss"]


def test_fit_validates_every_loader_and_can_monitor_one(tmp_path: Path) -> None:
    """In fit, each loader's metrics are logged and monitorable under their suffixed
    names; limit_val_batches applies per loader."""
    state, a, b, val = _setup()
    seen: list[dict[str, float]] = []

    class Watch(ft.Callback):
        def on_validation_end(self, state: ft.TrainState, metrics: Any) -> None:
            seen.append({k: metrics[k] for k in metrics if "dataloader_idx" in k})

    result = ft.fit(
        state,
        ft.train_step(lambda m, batch: ((m(batch[0]) - batch[1]) ** 2).mean()),
        a,
        val_step=val,
        val_data=[a, b],
        max_epochs=2,
        limit_val_batches=2,
        logger=False,
        callbacks=[Watch()],
        num_sanity_val_steps=1,
        default_root_dir=str(tmp_path),
        checkpoint=ft.checkpoint.top_k(1, monitor="val_loss/dataloader_idx_1"),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    assert len(seen) == 2 and all(len(s) == 2 for s in seen)
    assert result.best_model_score == pytest.approx(
        min(s["val_loss/dataloader_idx_1"] for s in seen)
    )
    first_two = ft.TensorLoader(b.tensors[0][:16], b.tensors[1][:16], batch_size=8, shuffle=False)
    alone = ft.validate(result.state, val, first_two)["val_loss"]
    assert result.metrics["val_loss/dataloader_idx_1"] == pytest.approx(alone)


def test_a_list_of_batches_is_one_loader() -> None:
    """A plain list of batches stays one source (no suffix)."""
    state, a, _, val = _setup()
    batches = list(a)
    assert list(ft.validate(state, val, batches)) == ["val_loss"]
