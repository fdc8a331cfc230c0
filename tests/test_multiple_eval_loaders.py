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


def test_a_list_of_batches_is_refused_with_what_to_pass() -> None:
    """A list means several sets: a list of batches is an error naming the loader to use
    (DataLoader(batches, batch_size=None)), which then gives the single-loader result."""
    state, a, _, val = _setup()
    batches = list(a)
    with pytest.raises(TypeError, match=r"item 'dataloader_idx_0' is a tuple, which is a batch"):
        ft.validate(state, val, batches)
    wrapped = torch.utils.data.DataLoader(batches, batch_size=None)
    assert ft.validate(state, val, wrapped) == ft.validate(state, val, a)


def test_named_sets_and_lists_of_any_iterables() -> None:
    """{name: loader} suffixes metric names with the name; a list of iterables that are
    not DataLoaders (here generators' owners: plain re-iterable objects) counts as
    several sets; a one-item list is one set."""
    state, a, b, val = _setup()

    class Plain:
        def __init__(self, loader: ft.TensorLoader) -> None:
            self.loader = loader

        def __iter__(self) -> Any:
            return iter(self.loader)

    named = ft.validate(state, val, {"small": a, "wide": Plain(b)})
    assert named == {
        "val_loss/small": ft.validate(state, val, a)["val_loss"],
        "val_loss/wide": ft.validate(state, val, b)["val_loss"],
    }
    listed = ft.validate(state, val, [Plain(a), Plain(b)])
    assert sorted(listed) == ["val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"]
    assert ft.validate(state, val, [a]) == ft.validate(state, val, a)


def test_bad_eval_data_is_refused_before_the_first_batch() -> None:
    """fit refuses a list holding a batch, a map-style Dataset (naming the wrapping) and
    a per_batch_size factory as val_data before training anything."""
    state, a, _, val = _setup()
    calls: list[int] = []

    def loss(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        calls.append(1)
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    x, y = a.tensors
    bad = [
        ([a, (x, y)], TypeError, "item 'dataloader_idx_1' is a tuple"),
        (
            {"a": a, "b": torch.utils.data.TensorDataset(x, y)},
            TypeError,
            r"val_data\['b'\] is a map-style TensorDataset of 24 samples.*TensorLoader",
        ),
        (
            torch.utils.data.TensorDataset(x, y),
            TypeError,
            r"ftrain.TensorLoader\(\*val_data.tensors",
        ),
        (ft.per_batch_size(lambda n: a), TypeError, "per_batch_size"),
        ({}, TypeError, "empty"),
    ]
    for data, error, message in bad:
        with pytest.raises(error, match=message):
            ft.fit(state, ft.train_step(loss), a, val_step=val, val_data=data, max_steps=1)
    assert calls == []
