"""restore checks every part of a checkpoint before it touches the state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.checkpoint import CheckpointError

Optim = Callable[[Any], torch.optim.Optimizer]
SGD: Optim = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
ADAM: Optim = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731


def _trained(optim: Optim, width: int = 3, scheduler: Any = None, seed: int = 0) -> ft.TrainState:
    """A state after two optimizer steps (so optimizer state exists)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Linear(width, 1))
    opt = optim(net.parameters())
    state = ft.TrainState.create(net, opt, scheduler=None if scheduler is None else scheduler(opt))
    step = ft.train_step(lambda m, b: m(b).pow(2).mean())
    for _ in range(2):
        state, _ = step(state, torch.randn(4, 2))
    return state


def _snapshot(state: ft.TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    params = {k: v.clone() for k, v in state.model.state_dict().items()}
    opt = state.optimizer.state_dict()
    opt_state = {i: {k: v.clone() for k, v in s.items()} for i, s in opt["state"].items()}
    return params, {"state": opt_state, "groups": [dict(g) for g in opt["param_groups"]]}


def _assert_unchanged(state: ft.TrainState, snap: Any) -> None:
    params, opt = _snapshot(state)
    for key, value in snap[0].items():
        assert torch.equal(params[key], value), key
    assert opt["groups"] == snap[1]["groups"]
    assert opt["state"].keys() == snap[1]["state"].keys()
    for i, entry in snap[1]["state"].items():
        assert entry.keys() == opt["state"][i].keys()
        for k, v in entry.items():
            assert torch.equal(opt["state"][i][k], v)


CASES = [
    ("sgd into adam", SGD, ADAM, {}, "optimizer is a torch.optim.sgd.SGD"),
    ("adam into sgd", ADAM, SGD, {}, "optimizer is a torch.optim.adam.Adam"),
    ("model shape", SGD, SGD, {"width": 4}, "shape mismatch for model parameter '0.weight'"),
]


@pytest.mark.parametrize(("name", "saved_opt", "target_opt", "target_kw", "match"), CASES)
def test_a_mismatch_names_the_file_and_part_and_changes_nothing(
    tmp_path: Path, name: str, saved_opt: Optim, target_opt: Optim, target_kw: dict, match: str
) -> None:
    """A checkpoint that does not fit (another optimizer class, another layer width) is a
    CheckpointError naming the file and the part; parameters and optimizer state are
    exactly as before."""
    path = tmp_path / "a.ckpt"
    ft.save_checkpoint(_trained(saved_opt, seed=1), path)
    target = _trained(target_opt, seed=2, **target_kw)
    snap = _snapshot(target)
    with pytest.raises(CheckpointError, match=match) as info:
        ft.restore(target, path)
    assert str(info.value).startswith(f"{path}:")
    _assert_unchanged(target, snap)


def test_files_without_class_names_are_checked_by_layout(tmp_path: Path) -> None:
    """A checkpoint without the stored class names (older files) is still refused by its
    parameter-group settings: Adam's betas are not SGD's."""
    path = tmp_path / "a.ckpt"
    payload = ft.checkpoint.safe_load(_save(_trained(ADAM), path))
    del payload["classes"]
    target = _trained(SGD)
    snap = _snapshot(target)
    with pytest.raises(CheckpointError, match=r"group 0 has settings.*another optimizer class"):
        ft.restore(target, payload, name="old.ckpt")
    _assert_unchanged(target, snap)


def _save(state: ft.TrainState, path: Path) -> Path:
    ft.save_checkpoint(state, path)
    return path


def test_layout_and_scheduler_mismatches(tmp_path: Path) -> None:
    """Another parameter-group layout, another scheduler class: refused, named."""
    path = _save(
        _trained(SGD, scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 2)),
        tmp_path / "a.ckpt",
    )
    target = _trained(SGD, scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9))
    with pytest.raises(CheckpointError, match=r"scheduler is a torch\.optim\.lr_scheduler\.StepLR"):
        ft.restore(target, path)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    groups = [{"params": net[0].parameters()}, {"params": net[1].parameters()}]
    two = ft.TrainState.create(net, torch.optim.SGD(groups, lr=0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match=r"groups of sizes \[4\], this optimizer \[2, 2\]"):
        ft.restore(two, _save(_trained(SGD), tmp_path / "b.ckpt"))


def test_fit_names_the_file_of_a_mismatch(tmp_path: Path) -> None:
    """Through fit(ckpt_path=...), a model mismatch message starts with the file's name."""
    path = _save(_trained(SGD, width=4), tmp_path / "a.ckpt")
    target = _trained(SGD)
    with pytest.raises(CheckpointError, match=f"^{path}: shape mismatch"):
        ft.fit(
            target,
            ft.train_step(lambda m, b: m(b).pow(2).mean()),
            [torch.randn(2, 2)],
            max_epochs=1,
            ckpt_path=path,
            logger=False,
            default_root_dir=tmp_path,
            enable_progress_bar=False,
            enable_model_summary=False,
        )


def test_a_list_of_schedulers_is_refused_at_create() -> None:
    """TrainState.create refuses a list of schedulers at once, pointing to a mapping."""
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scheds = [torch.optim.lr_scheduler.StepLR(opt, 1), torch.optim.lr_scheduler.StepLR(opt, 2)]
    with pytest.raises(TypeError, match=r"scheduler.*list.*mapping"):
        ft.TrainState.create(net, opt, scheduler=scheds)
