"""Bad flags and data fail before the first batch, naming the flag; errors from user code
carry their position; EarlyStopping resolves when it checks like Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

QUIET: dict[str, Any] = dict(
    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    return model(batch[0]).pow(2).mean()


class Batches:
    """Counts the training batches a run consumed."""

    def __init__(self) -> None:
        self.count = 0

    def on_train_batch_start(self, **_: Any) -> None:
        self.count += 1


@pytest.mark.parametrize(
    ("max_time", "match"),
    [({"weeks": "x"}, "max_time: 'weeks' must be a number"), ({"days": True}, "max_time")],
)
def test_max_time_parts_are_checked(max_time: Any, match: str) -> None:
    """A dict max_time with a non-number part names max_time and the part."""
    with pytest.raises(ValueError, match=match):
        ft.FitConfig(max_time=max_time)


@pytest.mark.parametrize("data", [[], ft.TensorLoader(torch.randn(0, 2), batch_size=2)])
def test_empty_training_data_is_named(tmp_path: Path, data: Any) -> None:
    """Empty training data: "the training data is empty", not a limit_train_batches message."""
    with pytest.raises(ValueError, match=r"^the training data is empty") as info:
        ft.fit(
            _state(), ft.train_step(_loss), data, max_epochs=1, default_root_dir=tmp_path, **QUIET
        )
    assert "limit_train_batches" not in str(info.value)


def test_unwritable_checkpoint_dir_fails_before_the_first_batch(tmp_path: Path) -> None:
    """A checkpoint dirpath under a file fails before any batch runs (not after an epoch)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    seen = Batches()
    flags = {**QUIET, "enable_checkpointing": True}
    with pytest.raises(ValueError, match="checkpoint dirpath"):
        ft.fit(
            _state(),
            ft.train_step(_loss),
            ft.TensorLoader(torch.randn(4, 2), batch_size=2),
            max_epochs=1,
            checkpoint=ft.checkpoint.ModelCheckpoint(dirpath=blocker / "ckpts"),
            callbacks=[seen],
            default_root_dir=tmp_path,
            **flags,
        )
    assert seen.count == 0


class BadBatches:
    """Yields good batches, then raises KeyError at batch ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __len__(self) -> int:
        return 4

    def __iter__(self) -> Any:
        for i in range(4):
            if i == self.at:
                raise KeyError("broken sample")
            yield (torch.randn(2, 2),)


def test_errors_from_data_and_step_carry_their_position(tmp_path: Path) -> None:
    """A data iterator's KeyError and a step's ValueError keep their type and get a note
    with epoch, batch index and global step."""
    with pytest.raises(KeyError, match="broken sample") as info:
        ft.fit(
            _state(),
            ft.train_step(_loss),
            BadBatches(2),
            max_epochs=1,
            default_root_dir=tmp_path,
            **QUIET,
        )
    assert info.value.__notes__ == ["during training: epoch 0, batch index 2, global step 2"]

    def failing(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if model.weight.grad is not None:  # from the second batch on
            raise ValueError("bad loss")
        return _loss(model, batch)

    data = ft.TensorLoader(torch.randn(8, 2), batch_size=2)
    with pytest.raises(ValueError, match="bad loss") as info2:
        ft.fit(
            _state(),
            ft.custom_step(_custom(failing)),
            data,
            max_epochs=2,
            default_root_dir=tmp_path,
            **QUIET,
        )
    assert info2.value.__notes__ == ["during training: epoch 0, batch index 1, global step 1"]


def _custom(loss_fn: Any) -> Any:
    def step(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
        state.optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(state.model, batch)
        loss.backward()
        state.optimizer.step()
        return state, {"loss": loss.detach()}

    return step


def test_early_stopping_on_a_training_metric_without_validation(tmp_path: Path) -> None:
    """EarlyStopping("loss") without validation checks at each epoch's end (Lightning's
    resolution of check_on_train_epoch_end) and stops a run whose loss stops improving."""
    data = ft.TensorLoader(torch.ones(2, 2), batch_size=2)
    es = ft.EarlyStopping("loss", patience=1, min_delta=10.0)
    ft.fit(
        _state(),
        ft.train_step(_loss),
        data,
        max_epochs=20,
        callbacks=[es],
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert es.stopped_epoch == 1  # epoch 0 sets the best, epoch 1 does not improve by 10


def test_early_stopping_resolution_follows_validation_rhythm() -> None:
    """None resolves to the epoch's end for once-per-epoch validation, to after validation
    for several validations per epoch or validation every other epoch; explicit stays."""
    cases = [
        ({}, True),
        ({"val_check_interval": 0.5}, False),
        ({"check_val_every_n_epoch": 2}, False),
    ]
    for flags, at_epoch_end in cases:
        es = ft.EarlyStopping("val_loss")
        es.resolve(ft.FitConfig(**flags))
        assert es._at_epoch_end() is at_epoch_end, flags
    explicit = ft.EarlyStopping("val_loss", check_on_train_epoch_end=False)
    explicit.resolve(ft.FitConfig())
    assert explicit._at_epoch_end() is False


def test_early_stopping_warns_when_it_never_checks(tmp_path: Path) -> None:
    """Set to check after validation in a run without validation, it warns at the end."""
    data = ft.TensorLoader(torch.ones(2, 2), batch_size=2)
    es = ft.EarlyStopping("val_loss", check_on_train_epoch_end=False)
    with pytest.warns(UserWarning, match="never checked 'val_loss'"):
        ft.fit(
            _state(),
            ft.train_step(_loss),
            data,
            max_epochs=1,
            callbacks=[es],
            default_root_dir=tmp_path,
            **QUIET,
        )
