"""Hand-written steps as first-class steps, and randomness that does not leak."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ftrain as ft
from ftrain._seed import set_rng_states
from ftrain.testing import classification_loss, tiny_batches, tiny_state

QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _step_lr(opt: torch.optim.Optimizer) -> ft.SchedulerConfig:
    return ft.SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), interval="step")


def _accumulating(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, dict[str, Any]]:
    """Accumulates 4 batches itself, then one optimizer step."""
    loss, _ = classification_loss(state.model, batch)
    (loss / 4).backward()
    if ft.accumulation_boundary(state, 4):
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
    return state, {"loss": loss}


def _hand_accumulating(model: nn.Module, batches: list[Any]) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    for start in range(0, len(batches), 4):
        for x, y in batches[start : start + 4]:
            (nn.functional.cross_entropy(model(x), y) / 4).backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return [g["lr"] for g in opt.param_groups]


def test_a_hand_written_step_that_accumulates_counts_real_updates(tmp_path: Path) -> None:
    """A custom step accumulating 4 of 8 batches itself: state.step == 2, the step-interval
    scheduler stepped twice, parameters equal to the hand loop's."""
    batches = tiny_batches(8)
    state = tiny_state(scheduler=_step_lr)
    hand = copy.deepcopy(state.model)
    result = ft.fit(
        state, ft.custom_step(_accumulating), batches, max_epochs=1,
        default_root_dir=tmp_path, **QUIET,
    )  # fmt: skip
    lrs = _hand_accumulating(hand, batches)
    assert (result.state.step, result.state.micro_step) == (2, 8)
    assert result.state.scheduler.scheduler.last_epoch == 2
    assert [g["lr"] for g in result.state.optimizer.param_groups] == lrs
    assert _same(result.state.model, hand)


def test_a_hand_written_accumulating_step_resumes_exactly(tmp_path: Path) -> None:
    """Checkpointed after 6 of 12 batches (mid-window), restored into a fresh state, it ends
    bit-identical to the straight run: gradients, counters and scheduler included."""
    batches = tiny_batches(12)
    step = ft.custom_step(_accumulating)
    straight = tiny_state(scheduler=_step_lr)
    for b in batches:
        straight, _ = step(straight, b)
    first = tiny_state(scheduler=_step_lr)
    for b in batches[:6]:
        first, _ = step(first, b)
    ft.save_checkpoint(first, tmp_path / "mid.ckpt")
    resumed = ft.restore(tiny_state(scheduler=_step_lr), tmp_path / "mid.ckpt")
    for b in batches[6:]:
        resumed, _ = step(resumed, b)
    assert resumed.step == straight.step == 3
    assert resumed.scheduler.scheduler.last_epoch == 3
    assert _same(resumed.model, straight.model)


def test_a_body_that_steps_its_scheduler_is_not_stepped_twice() -> None:
    """A body that calls scheduler.step() itself keeps its own count."""

    def body(state: ft.TrainState, batch: Any) -> Any:
        classification_loss(state.model, batch)[0].backward()
        state.optimizer.step()
        state.scheduler.scheduler.step()
        state.optimizer.zero_grad()
        return state, {}

    state = tiny_state(scheduler=_step_lr)
    for b in tiny_batches(3):
        state, _ = ft.custom_step(body)(state, b)
    assert state.step == 3 and state.scheduler.scheduler.last_epoch == 3


def test_a_hand_written_step_uses_the_update_phase_with_transforms() -> None:
    """apply_update inside a custom step runs the same clip as train_step (bit-identical),
    and keeps the transforms' state in extras."""
    batches = tiny_batches(4)

    def body(state: ft.TrainState, batch: Any) -> Any:
        loss, _ = classification_loss(state.model, batch)
        loss.backward()
        state, metrics = ft.apply_update(state, [ft.clip_grad_norm(0.1), ft.skip_nonfinite()])
        return state, {"loss": loss, **metrics}

    mine, builtin = tiny_state(), tiny_state()
    a = ft.custom_step(body)
    b = ft.train_step(classification_loss, clip_norm=0.1, skip_nonfinite=True)
    for batch in batches:
        mine, ma = a(mine, batch)
        builtin, mb = b(builtin, batch)
        assert torch.equal(ma["grad_norm"], mb["grad_norm"])
    assert mine.step == builtin.step == 4
    assert mine.extras == builtin.extras == {"skip_nonfinite": 0}
    assert _same(mine.model, builtin.model)
    with pytest.raises(TypeError, match="apply_update: transforms must be GradientTransform"):
        ft.apply_update(mine, [ft.accumulate(2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="accumulation_boundary: n must be an int >= 1, got 0"):
        ft.accumulation_boundary(mine, 0)


# ------------------------------------------------------------ randomness


@pytest.mark.parametrize("kind", ["train_step", "custom_step"])
def test_steps_do_not_move_the_global_streams(kind: str) -> None:
    """Draws from torch's global generator between steps (with dropout inside them) are
    those of a run without the steps; python's and numpy's streams are untouched too."""

    def body(state: ft.TrainState, batch: Any) -> Any:
        loss, _ = classification_loss(state.model, batch)
        loss.backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        return state, {}

    step = ft.train_step(classification_loss) if kind == "train_step" else ft.custom_step(body)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    alone = [(torch.randint(0, 100, (3,)), random.random(), np.random.rand()) for _ in range(4)]
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    state = tiny_state(dropout=0.5)
    between = []
    for batch in tiny_batches(4):
        between.append((torch.randint(0, 100, (3,)), random.random(), np.random.rand()))
        state, _ = step(state, batch)
    for (a, b, c), (x, y, z) in zip(alone, between, strict=True):
        assert torch.equal(a, x) and b == y and c == z


class _RandomWindows:
    """nanoGPT's get_batch: each batch draws its rows with torch.randint from the global
    generator; records what it drew."""

    def __init__(self, batches: int) -> None:
        self.x, self.y = tiny_batches(1, batch_size=64)[0]
        self.batches = batches
        self.drawn: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.batches):
            rows = torch.randint(0, 64, (8,))
            self.drawn.append(rows)
            yield self.x[rows], self.y[rows]


def test_kill_and_resume_with_a_data_iterator_on_the_global_generator(tmp_path: Path) -> None:
    """A run stopped after epoch 2 and resumed in a scrambled process (global generators
    reseeded) draws the same batches and ends bit-identical: the checkpoint holds the
    global generators' states."""
    flags = dict(QUIET, enable_checkpointing=True, default_root_dir=tmp_path)
    torch.manual_seed(3)
    straight_data = _RandomWindows(4)
    straight = ft.fit(
        tiny_state(dropout=0.1), ft.train_step(classification_loss), straight_data,
        max_epochs=4, **{**flags, "default_root_dir": tmp_path / "a"},
    )  # fmt: skip
    torch.manual_seed(3)
    first_data = _RandomWindows(4)
    ft.fit(
        tiny_state(dropout=0.1), ft.train_step(classification_loss), first_data,
        max_epochs=2, **flags,
    )  # fmt: skip
    torch.manual_seed(12345)
    random.seed(12345)
    np.random.seed(12345)
    resumed_data = _RandomWindows(4)
    resumed = ft.fit(
        tiny_state(dropout=0.1), ft.train_step(classification_loss), resumed_data,
        max_epochs=4, ckpt_path="last", **flags,
    )  # fmt: skip
    drawn = first_data.drawn + resumed_data.drawn
    assert all(torch.equal(a, b) for a, b in zip(drawn, straight_data.drawn, strict=True))
    assert resumed.state.step == straight.state.step == 16
    assert _same(resumed.state.model, straight.state.model)


def test_ambient_randomness_matches_a_hand_loop_with_dropout_and_shuffle(tmp_path: Path) -> None:
    """randomness="ambient" with dropout 0.1 and DataLoader(shuffle=True), a validation
    loader and the sanity pass: bit-identical to the hand loop over two epochs."""
    x, y = tiny_batches(1, batch_size=48)[0]
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(x, y), batch_size=16)
    state = tiny_state(dropout=0.1)
    hand = copy.deepcopy(state.model)
    opt = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(0)
    for _ in range(2):
        for xb, yb in loader:
            nn.functional.cross_entropy(hand(xb), yb).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    result = ft.fit(
        state,
        ft.train_step(classification_loss),
        loader,
        val_step=ft.eval_step(lambda m, b: {"val_loss": classification_loss(m, b)[0]}),
        val_data=val,
        max_epochs=2,
        randomness="ambient",
        default_root_dir=tmp_path,
        **{**QUIET, "num_sanity_val_steps": 2, "check_val_every_n_epoch": 5},
    )
    assert result.state.step == 12
    assert _same(result.state.model, hand)
    with pytest.raises(ValueError, match="randomness: mode must be 'step' or 'ambient'"):
        ft.randomness("global")


def test_checkpoints_hold_the_global_generators(tmp_path: Path) -> None:
    """save_checkpoint stores torch, python and numpy states loadable with weights_only."""
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    ft.save_checkpoint(tiny_state(), tmp_path / "c.ckpt")
    expected = (torch.rand(2), random.random(), np.random.rand())
    payload = torch.load(tmp_path / "c.ckpt", weights_only=True)
    set_rng_states(payload["rng"])
    assert torch.equal(torch.rand(2), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]
