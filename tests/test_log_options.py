"""The last ``self.log`` options: enable_graph, add_dataloader_idx, sync_dist_group, and a
logged ``step`` value as the loggers' x-axis (the group is exercised across processes in
tests/test_fork_strategies.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))


def test_log_detaches_unless_enable_graph() -> None:
    """A logged tensor is detached by default; enable_graph=True keeps its graph."""
    w = torch.ones(3, requires_grad=True)
    value = (w * 2).sum()
    assert ft.log(value).value.grad_fn is None
    kept = ft.log(value, enable_graph=True).value
    assert kept is value and kept.grad_fn is not None
    kept.backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0))


def test_enable_graph_reaches_callbacks_in_fit(tmp_path: Path) -> None:
    """In fit, a value logged with enable_graph=True arrives with its graph, the default
    one without it."""
    seen: list[tuple[bool, bool]] = []

    def loss_fn(net: torch.nn.Module, batch: Any) -> Any:
        loss = ((net(batch[0]) - batch[1]) ** 2).mean()
        return loss, {"g": ft.log(loss * 2, enable_graph=True), "d": ft.log(loss * 3)}

    class Look(ft.Callback):
        def on_train_batch_end(self, metrics: Any, **_: Any) -> None:
            seen.append((metrics["g"].requires_grad, metrics["d"].requires_grad))

    x = torch.randn(8, 2)
    ft.fit(_state(), ft.train_step(loss_fn), ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=4),
           max_epochs=1, logger=False, enable_checkpointing=False, callbacks=[Look()],
           default_root_dir=str(tmp_path), **QUIET)  # fmt: skip
    assert seen == [(True, False), (True, False)]


def _loaders() -> tuple[ft.TensorLoader, ft.TensorLoader]:
    torch.manual_seed(1)
    xa, xb = torch.randn(24, 2), torch.randn(40, 2) * 3
    a = ft.TensorLoader(xa, xa.sum(1, keepdim=True), batch_size=8, shuffle=False)
    b = ft.TensorLoader(xb, xb.sum(1, keepdim=True), batch_size=10, shuffle=False)
    return a, b


def _per_size(net: torch.nn.Module, batch: Any) -> dict[str, Any]:
    x, y = batch
    loss = ((net(x) - y) ** 2).mean()
    # The name tells the loaders apart (their batch sizes differ), so no index is needed.
    return {f"loss_bs{x.shape[0]}": ft.log(loss, add_dataloader_idx=False), "plain": loss}


def test_add_dataloader_idx_false_keeps_the_name() -> None:
    """add_dataloader_idx=False logs the bare name; other names keep their suffix; the
    values equal validating each loader alone."""
    a, b = _loaders()
    state = _state()
    step = ft.eval_step(_per_size)
    both = ft.validate(state, step, [a, b])
    assert sorted(both) == [
        "loss_bs10",
        "loss_bs8",
        "plain/dataloader_idx_0",
        "plain/dataloader_idx_1",
    ]
    assert both["loss_bs8"] == ft.validate(state, step, a)["loss_bs8"]
    assert both["loss_bs10"] == ft.validate(state, step, b)["loss_bs10"]


def test_add_dataloader_idx_false_clash_is_an_error() -> None:
    """Two loaders logging the same name without the index is a clear error."""
    a, b = _loaders()
    step = ft.eval_step(
        lambda net, batch: {"same": ft.log(net(batch[0]).mean(), add_dataloader_idx=False)}
    )
    with pytest.raises(ValueError, match="add_dataloader_idx=False by dataloaders 0 and 1"):
        ft.validate(_state(), step, [a, b])


def test_a_logged_step_value_is_the_x_axis(tmp_path: Path) -> None:
    """A metric named ``step`` sets the row's x-axis (here 100 * the batch's first
    label) and is not itself a column, as Lightning's logger connector does."""
    x = torch.arange(16.0).reshape(8, 2)
    y = torch.arange(8.0).reshape(8, 1)

    def loss_fn(net: torch.nn.Module, batch: Any) -> Any:
        loss = ((net(batch[0]) - batch[1]) ** 2).mean()
        return loss, {"step": batch[1][0, 0] * 100, "loss_copy": loss}

    logger = ft.loggers.CSVLogger(str(tmp_path))
    ft.fit(_state(), ft.train_step(loss_fn), ft.TensorLoader(x, y, batch_size=2, shuffle=False),
           max_epochs=1, log_every_n_steps=1, logger=logger, enable_checkpointing=False,
           default_root_dir=str(tmp_path), **QUIET)  # fmt: skip
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss_copy")]
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600]
    assert all("step_step" not in r for r in rows)
