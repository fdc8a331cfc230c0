"""validate / test / predict: evaluation before and after fit, without side effects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
    )
    return net


def _state() -> ft.TrainState:
    net = _model()
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))


def _loader(batches: int = 4, seed: int = 1) -> ft.TensorLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batches * 4, 3, generator=g), torch.randn(batches * 4, 1, generator=g)
    return ft.TensorLoader(x, y, batch_size=4, shuffle=False)


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def _metrics(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
    return {"val_loss": _loss(model, batch)}


def _snapshot(state: ft.TrainState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_validate_and_test_before_and_after_fit(tmp_path: Path) -> None:
    """validate/test on the same state before and after fit: nothing is trained or changed
    (BatchNorm running stats included), train/eval modes come back as they were (a submodule
    left in eval mode stays so), repeated calls agree, and fit changes the result."""
    state = _state()
    state.model[1].eval()  # a frozen dropout the user set: must stay in eval mode
    before = _snapshot(state)
    v1 = ft.validate(state, ft.eval_step(_metrics), _loader())
    t1 = ft.test(state, ft.eval_step(lambda m, b: {"test_loss": _loss(m, b)}), _loader())
    assert _same(before, _snapshot(state))
    assert state.model.training and not state.model[1].training and state.model[2].training
    assert state.step == 0 and state.micro_step == 0
    assert v1 == ft.validate(state, ft.eval_step(_metrics), _loader())
    assert v1["val_loss"] == pytest.approx(t1["test_loss"])

    result = ft.fit(
        state,
        ft.train_step(_loss),
        _loader(),
        max_epochs=2,
        default_root_dir=tmp_path,
        **QUIET,
    )
    trained = result.state
    after = _snapshot(trained)
    v2 = ft.validate(trained, ft.eval_step(_metrics), _loader())
    assert _same(after, _snapshot(trained))
    assert trained.model.training and not trained.model[1].training
    assert v2 != v1
    assert v2 == ft.validate(trained, ft.eval_step(_metrics), _loader())
    assert trained.step == 8


def test_validate_equals_in_fit_validation(tmp_path: Path) -> None:
    """validate after fit gives the value fit's own last validation reported."""
    result = ft.fit(
        _state(),
        ft.train_step(_loss),
        _loader(),
        val_step=ft.eval_step(_metrics),
        val_data=_loader(seed=2),
        max_epochs=2,
        default_root_dir=tmp_path,
        **QUIET,
    )
    again = ft.validate(result.state, ft.eval_step(_metrics), _loader(seed=2))
    assert again["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-6)


def test_limits_and_fast_dev_run_in_evaluation() -> None:
    """limit_val_batches / limit_test_batches / fast_dev_run bound the batches evaluated."""
    seen: list[int] = []

    def count(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        seen.append(1)
        return _metrics(model, batch)

    state = _state()
    ft.validate(state, ft.eval_step(count), _loader(), limit_val_batches=0.5)
    assert len(seen) == 2
    seen.clear()
    ft.test(state, ft.eval_step(count), _loader(), limit_test_batches=3)
    assert len(seen) == 3
    seen.clear()
    ft.validate(state, ft.eval_step(count), _loader(), fast_dev_run=True)
    assert len(seen) == 1
    with pytest.raises(TypeError, match=r"unknown flags \['limit_vall_batches'\]"):
        ft.validate(state, ft.eval_step(count), _loader(), limit_vall_batches=1)


def test_verbose_prints_the_metrics(capsys: Any) -> None:
    """verbose=True prints a small table with each metric."""
    ft.test(
        _state(), ft.eval_step(lambda m, b: {"test_loss": _loss(m, b)}), _loader(), verbose=True
    )
    out = capsys.readouterr().out
    assert "Test metric" in out and "test_loss" in out


def test_plain_function_eval_step() -> None:
    """A hand-written (state, batch) -> (state, metrics) step works as an eval step."""

    def step(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
        return state, {"val_loss": _loss(state.model, batch)}

    state = _state()
    assert ft.validate(state, step, _loader()) == ft.validate(
        state, ft.eval_step(_metrics), _loader()
    )


def test_evaluate_checkpoint_weights(tmp_path: Path) -> None:
    """ckpt_path evaluates the weights saved in that checkpoint, loaded into the state."""
    trained = ft.fit(
        _state(),
        ft.train_step(_loss),
        _loader(),
        max_epochs=1,
        default_root_dir=tmp_path,
        **QUIET,
    ).state
    path = tmp_path / "w.ckpt"
    ft.save_checkpoint(trained, path)
    expected = ft.validate(trained, ft.eval_step(_metrics), _loader())
    fresh = _state()
    got = ft.validate(fresh, ft.eval_step(_metrics), _loader(), ckpt_path=str(path))
    assert got == expected


def test_predict_returns_outputs_and_writes_output_path(tmp_path: Path) -> None:
    """predict returns one output per batch, computed in eval mode without gradients, and
    writes them (on the CPU) to output_path atomically; return_predictions=False returns None
    but still writes the file; limit_predict_batches bounds the batches."""
    state = _state()
    before = _snapshot(state)
    modes: list[bool] = []

    def fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        modes.append(model.training)
        out = model(batch[0])
        assert not out.requires_grad
        return out

    outputs = ft.predict(state, fn, _loader())
    assert outputs is not None and len(outputs) == 4
    assert all(o.shape == (4, 1) for o in outputs)
    assert modes == [False] * 4 and state.model.training
    assert _same(before, _snapshot(state))
    state.model.eval()
    with torch.no_grad():
        expected = [state.model(b[0]) for b in _loader()]
    state.model.train()
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))

    path = tmp_path / "preds" / "out.pt"
    assert ft.predict(state, fn, _loader(), output_path=str(path), return_predictions=False) is None
    saved = torch.load(path, weights_only=True)
    assert len(saved) == 4 and all(torch.equal(a, b) for a, b in zip(saved, outputs, strict=True))
    assert [p.name for p in path.parent.iterdir()] == ["out.pt"]  # no temp file left

    short = ft.predict(state, fn, _loader(), limit_predict_batches=2)
    assert short is not None and len(short) == 2
