"""Data arguments with one meaning each: per_epoch, per_batch_size, per_validation, and the
checks that refuse a wrong form before the first batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def make_state(seed: int = 0) -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.05), seed=seed)


def loader(seed: int = 0, n: int = 16) -> ft.TensorLoader:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=4, shuffle=False)


VAL = ft.eval_step(lambda m, b: {"val_loss": mse(m, b)})


def test_per_validation_is_called_once_per_run_with_the_documented_seed(tmp_path: Path) -> None:
    """Every validation run (val_check_interval=2 over 8 steps: 4 runs, plus the sanity
    check drawing run 0's data) calls fn(validation_seed(seed, index)) once; the logged
    val_loss of each run is that of its own data. A run resumed from the checkpoint after
    the second validation continues at index 2 and ends bit-identical."""
    seeds: list[int] = []

    def make_val(seed: int) -> ft.TensorLoader:
        seeds.append(seed)
        return loader(seed % 1000, n=8)

    seen: list[float] = []

    class Watch(ft.Callback):
        def on_validation_end(self, state: ft.TrainState, metrics: Any) -> None:
            seen.append(metrics["val_loss"])

    step = ft.train_step(mse)
    flags = {**QUIET, "val_check_interval": 2, "max_steps": 8, "default_root_dir": str(tmp_path)}
    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    whole = ft.fit(
        make_state(seed=5),
        step,
        loader(),
        val_step=VAL,
        val_data=ft.per_validation(make_val),
        callbacks=[Watch()],
        checkpoint=policy,
        **flags,
    )
    expected = [ft.validation_seed(5, i) for i in range(4)]
    assert seeds == [expected[0], *expected]
    assert ft.validation_seed(5, 2) == ft.mix_seed(5, -1, 2)
    assert len(seen) == 4 and len(set(seen)) == 4

    seeds.clear()
    path = next(tmp_path.glob("**/*step=5.ckpt"))
    resumed = ft.fit(
        make_state(seed=5),
        step,
        loader(),
        val_step=VAL,
        val_data=ft.per_validation(make_val),
        ckpt_path=str(path),
        checkpoint=False,
        **{**flags, "default_root_dir": str(tmp_path / "again")},
    )
    assert seeds == expected[2:]
    assert torch.equal(resumed.state.model.weight, whole.state.model.weight)
    assert resumed.metrics["val_loss"] == whole.metrics["val_loss"]


def test_per_epoch_equals_a_bare_callable() -> None:
    """per_epoch(fn) is called with the epoch, as a bare fn is: the same run."""
    calls: list[int] = []

    def make(epoch: int) -> ft.TensorLoader:
        calls.append(epoch)
        return loader(epoch)

    step = ft.train_step(mse)
    a = ft.fit(make_state(), step, ft.per_epoch(make), max_epochs=3, **QUIET, checkpoint=False)
    b = ft.fit(make_state(), step, make, max_epochs=3, **QUIET, checkpoint=False)
    assert calls == [0, 0]
    c = ft.fit(
        make_state(),
        step,
        ft.per_epoch(make),
        max_epochs=3,
        reload_dataloaders_every_n_epochs=1,
        checkpoint=False,
        **QUIET,
    )
    assert calls == [0, 0, 0, 1, 2]
    assert torch.equal(a.state.model.weight, b.state.model.weight)
    assert not torch.equal(a.state.model.weight, c.state.model.weight)


def test_wrong_data_forms_are_refused_before_the_first_batch() -> None:
    """A map-style Dataset (the message names its batch-less items and the wrapping), a
    per_batch_size factory without auto_scale_batch_size, per_validation as train_data,
    a non-callable factory function, and a factory of the wrong kind for the tuner."""
    x = torch.randn(8, 3)
    dataset = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    calls: list[int] = []

    def loss(m: torch.nn.Module, b: Any) -> torch.Tensor:
        calls.append(1)
        return mse(m, b)

    cases: list[tuple[Any, type[Exception], str]] = [
        (dataset, TypeError, r"train_data is a map-style TensorDataset of 8 samples.*TensorLoader"),
        (
            torch.utils.data.Subset(dataset, [0, 1]),
            TypeError,
            r"DataLoader\(train_data, batch_size=64, shuffle=True\)",
        ),
        (ft.per_batch_size(lambda n: loader()), ValueError, "is for auto_scale_batch_size"),
        (ft.per_validation(lambda s: loader()), ValueError, "pass it as val_data"),
    ]
    for data, error, message in cases:
        with pytest.raises(error, match=message):
            ft.fit(make_state(), ft.train_step(loss), data, max_steps=1, **QUIET)
    assert calls == []
    with pytest.raises(TypeError, match="per_epoch: fn must be a function epoch -> data"):
        ft.per_epoch(loader())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a factory of another kind"):
        ft.tune.scale_batch_size(ft.per_epoch(lambda e: loader()), make_state(), ft.train_step(mse))
    assert repr(ft.per_batch_size(len)) == "per_batch_size(<built-in function len>)"
    val = ft.eval_step(lambda m, b: {"val_loss": mse(m, b)})
    with pytest.raises(
        TypeError, match=r"test_data: per_validation\(\.\.\.\) is for fit's val_data"
    ):
        ft.test(make_state(), val, ft.per_validation(lambda s: loader()))
