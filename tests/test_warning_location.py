"""Warnings raised deep inside ftrain name the user's line (their ``fit(...)`` call)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

import ftrain as ft


def _parts() -> tuple[ft.TrainState, Any, ft.TensorLoader]:
    model = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4, 2)
    return (
        state,
        ft.train_step(lambda m, b: m(b[0]).pow(2).mean()),
        ft.TensorLoader(x, x, batch_size=2),
    )


def test_warnings_point_at_the_fit_call(tmp_path: Path) -> None:
    """The 1000-epoch default warning (from the loop) and EarlyStopping's missing monitor
    (from a callback the loop calls) both carry this file and the fit line."""
    state, step, data = _parts()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ft.fit(
            state, step, data, val_step=ft.eval_step(lambda m, b: {"v": m(b[0]).mean()}),
            val_data=data, max_steps=2, callbacks=[ft.EarlyStopping("nope", strict=False)],
            logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path,
        )  # fmt: skip
    ours = [w for w in caught if "nope" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    for w in ours:
        assert w.filename == __file__, (w.filename, str(w.message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, step, data = _parts()
        ft.fit(state, step, data, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_train_batches=0)  # fmt: skip
    default = [w for w in caught if "1000 epochs" in str(w.message)]
    assert default and default[0].filename == __file__
