"""validate/test/predict with ckpt_path="best" or "last", as Lightning after fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ftrain as ft


def _parts() -> tuple[ft.TrainState, ft.TrainStep, ft.EvalStep, ft.TensorLoader]:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.05))
    x = torch.randn(64, 4)
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)
    step = ft.train_step(lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
    val = ft.eval_step(lambda m, b: {"val_loss": ((m(b[0]) - b[1]) ** 2).mean()})
    return state, step, val, data


def test_best_and_last_name_the_files_fit_left(tmp_path: Path) -> None:
    """After fit, validate(ckpt_path="best") evaluates the best file's weights and "last"
    the newest's; the results equal validating those files by path."""
    state, step, val, data = _parts()
    policy = ft.checkpoint.top_k(1, monitor="val_loss") | ft.checkpoint.last()
    result = ft.fit(
        state,
        step,
        data,
        val_step=val,
        val_data=data,
        max_epochs=3,
        checkpoint=policy,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=4,
    )
    assert result.best_checkpoint is not None and result.last_checkpoint is not None
    fresh = _parts()[0]
    by_name = ft.validate(
        fresh, val, data, ckpt_path="best", checkpoint=policy, default_root_dir=str(tmp_path)
    )
    by_path = ft.validate(fresh, val, data, ckpt_path=result.best_checkpoint)
    assert by_name == by_path
    assert by_name["val_loss"] == pytest.approx(result.best_model_score)
    last = ft.test(fresh, val, data, ckpt_path="last", default_root_dir=str(tmp_path))
    final = ft.test(result.state, val, data)
    assert last == final


def test_named_checkpoint_missing_is_a_clear_error(tmp_path: Path) -> None:
    """With no checkpoint under default_root_dir, "best" is an error naming the folder."""
    state, _, val, data = _parts()
    with pytest.raises(ValueError, match="no best checkpoint"):
        ft.validate(state, val, data, ckpt_path="best", default_root_dir=str(tmp_path))
