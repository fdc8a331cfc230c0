"""``save_last="link"``: ``last.ckpt`` is a relative symbolic link to the file saved at
the same event, a full file where no other file is saved or links are impossible, and
resuming from it is exact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.checkpoint import Event, ModelCheckpoint, Save, list_checkpoints

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    return ft.TrainState.create(net, torch.optim.Adam(net.parameters(), lr=0.01), seed=1)


def _data() -> ft.TensorLoader:
    g = torch.Generator().manual_seed(0)
    return ft.TensorLoader(
        torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g), batch_size=4
    )


def _loss(net: torch.nn.Module, batch: Any) -> torch.Tensor:
    return torch.nn.functional.mse_loss(net(batch[0]), batch[1])


def _fit(root: Path, state: ft.TrainState, max_steps: int, **kw: Any) -> ft.FitResult:
    policy = ModelCheckpoint(dirpath=str(root), every_n_train_steps=2, save_last="link")
    return ft.fit(state, ft.train_step(_loss), _data(), max_steps=max_steps, checkpoint=policy,
                  default_root_dir=str(root), **QUIET, **kw)  # fmt: skip


def test_policy_links_to_the_save_of_the_same_event() -> None:
    """The last part links to the file saved at the same event; at fit_end with no other
    save it writes a full file."""
    policy = ModelCheckpoint(every_n_train_steps=2, save_last="link")
    pstate, actions = policy.update(policy.init(), Event("train_step", step=2, epoch=0))
    saves = [a for a in actions if isinstance(a, Save)]
    assert [(s.name, s.link_to) for s in saves] == [
        ("epoch=0-step=2.ckpt", None),
        ("last.ckpt", "epoch=0-step=2.ckpt"),
    ]
    _, actions = policy.update(pstate, Event("fit_end", step=3, epoch=0))
    assert [(a.name, a.link_to) for a in actions if isinstance(a, Save)] == [("last.ckpt", None)]
    with pytest.raises(
        ValueError, match="save_last must be None, False, True or 'link', got 'copy'"
    ):
        ModelCheckpoint(save_last="copy")


def test_last_is_a_link_and_resume_follows_it_exactly(tmp_path: Path) -> None:
    """After 4 steps last.ckpt links to step 4's file; resuming from "last" to step 6
    equals 6 uninterrupted steps, and the link moves to step 6's file."""
    whole = _fit(tmp_path / "whole", _state(), 6)
    _fit(tmp_path / "cut", _state(), 4)
    last = tmp_path / "cut" / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch=0-step=4.ckpt"
    assert {i.name: i.kind for i in list_checkpoints(tmp_path / "cut")} == {
        "epoch=0-step=4.ckpt": "top_k",
        "last.ckpt": "last",
    }
    resumed = _fit(tmp_path / "cut", _state(), 6, ckpt_path="last")
    for a, b in zip(resumed.state.model.parameters(), whole.state.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sorted(os.listdir(tmp_path / "cut")) == ["epoch=1-step=6.ckpt", "last.ckpt"]
    assert os.readlink(tmp_path / "cut" / "last.ckpt") == "epoch=1-step=6.ckpt"


def test_last_is_a_full_file_without_a_save_at_that_step(tmp_path: Path) -> None:
    """Ending at step 5 (no periodic save there), last.ckpt becomes a full file holding
    step 5, replacing the link atomically."""
    _fit(tmp_path, _state(), 5)
    last = tmp_path / "last.ckpt"
    assert not last.is_symlink()
    assert ft.checkpoint.safe_load(last)["checkpoint_info"]["step"] == 5


def test_without_links_last_is_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where links cannot be made, last.ckpt is a full file of its own kind."""

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError("links are not supported here")

    monkeypatch.setattr(os, "symlink", no_links)
    _fit(tmp_path, _state(), 4)
    last = tmp_path / "last.ckpt"
    assert last.is_file() and not last.is_symlink()
    info = ft.checkpoint.safe_load(last)["checkpoint_info"]
    assert (info["name"], info["kind"], info["step"]) == ("last.ckpt", "last", 4)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_dangling_link_is_cleaned_on_resume(tmp_path: Path) -> None:
    """A link whose target vanished (a crash between writes) is not a checkpoint to
    resume from, is replaced by the next run, and is removed by clean_temp_files."""
    _fit(tmp_path, _state(), 4)
    os.remove(tmp_path / "epoch=0-step=4.ckpt")
    with pytest.warns(RuntimeWarning, match="no checkpoint found"):  # the link is not one
        result = _fit(tmp_path, _state(), 2, ckpt_path="last")
    assert result.state.step == 2
    assert os.readlink(tmp_path / "last.ckpt") == "epoch=0-step=2.ckpt"
    os.remove(tmp_path / "epoch=0-step=2.ckpt")
    assert ft.checkpoint.clean_temp_files(tmp_path) == [str(tmp_path / "last.ckpt")]
    assert not os.path.lexists(tmp_path / "last.ckpt")
