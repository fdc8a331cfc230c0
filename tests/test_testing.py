"""ftrain.testing: check_step passes good steps and names what is wrong with bad ones."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
import torch
from torch import nn

import ftrain as ft
from ftrain.testing import (
    check_step,
    classification_loss,
    tiny_batches,
    tiny_model,
    tiny_state,
)


def test_fixtures_are_deterministic_and_leave_the_global_rng_alone() -> None:
    """tiny_model/tiny_batches depend only on their seed and do not draw from torch's RNG."""
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    x1, x2 = tiny_batches(2, seed=1), tiny_batches(2, seed=1)
    assert torch.equal(torch.rand(2), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert all(
        torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(x1, x2, strict=True)
    )
    assert not torch.equal(tiny_model(seed=4).fc1.weight, a.fc1.weight)
    assert set(tiny_batches(4, classes=3, batch_size=32)[0][1].tolist()) <= {0, 1, 2}


def test_tiny_state_builds_sgd_or_adam() -> None:
    """tiny_state gives SGD or Adam over tiny_model, and refuses other names."""
    assert isinstance(tiny_state().optimizer, torch.optim.SGD)
    assert isinstance(tiny_state("adam", lr=0.5).optimizer, torch.optim.Adam)
    assert tiny_state("adam", lr=0.5).optimizer.param_groups[0]["lr"] == 0.5
    assert tiny_state(hidden=5).model.fc1.out_features == 5
    with pytest.raises(
        ValueError, match="tiny_state: optimizer must be 'sgd' or 'adam', got 'lbfgs'"
    ):
        tiny_state("lbfgs")


def test_tiny_problem_is_learnable() -> None:
    """A few dozen steps on tiny_batches lower the loss: the fixtures make a real problem."""
    state = tiny_state("adam", lr=0.05)
    step = ft.train_step(classification_loss)
    batches = tiny_batches(40, batch_size=32)
    state, first = step(state, batches[0])
    for batch in batches[1:]:
        state, last = step(state, batch)
    assert float(last["loss"]) < 0.5 * float(first["loss"])


@pytest.mark.parametrize(
    "step",
    [
        ft.train_step(classification_loss),
        ft.train_step(classification_loss, precision="bf16-mixed", clip_norm=1.0),
    ],
    ids=["plain", "bf16-clip"],
)
def test_check_step_passes_a_good_step(step: Any) -> None:
    """A seeded train step with dropout passes and returns the run's metrics."""
    state = tiny_state("adam", dropout=0.5)
    metrics = check_step(step, state, tiny_batches(1)[0])
    assert set(metrics) >= {"loss", "acc"}
    assert state.step == 0 and state.optimizer.state == {}


def test_check_step_with_expect_change_false() -> None:
    """An accumulating batch and an eval step pass with expect_change=False, fail without it."""
    state, batch = tiny_state(), tiny_batches(1)[0]
    accumulating = ft.accumulate(2)(ft.train_step(classification_loss))
    check_step(accumulating, state, batch, expect_change=False)
    check_step(
        ft.eval_step(lambda m, b: classification_loss(m, b)[1]), state, batch, expect_change=False
    )
    with pytest.raises(AssertionError, match="parameters changed \\(expect_change=False\\)"):
        check_step(ft.train_step(classification_loss), state, batch, expect_change=False)


def test_check_step_fails_on_a_step_that_mutates_its_batch() -> None:
    """A step that writes into the batch fails, naming the changed entry."""

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        batch[0].mul_(2.0)
        return classification_loss(model, batch)

    with pytest.raises(
        AssertionError, match=re.escape("the step modified its input batch: batch[0]")
    ):
        check_step(ft.train_step(loss_fn), tiny_state(), tiny_batches(1)[0])


def test_check_step_fails_on_unseeded_randomness() -> None:
    """A step drawing from Python's global random module (not derived from the state) fails."""

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        x, y = batch
        return classification_loss(model, (x * random.random(), y))

    with pytest.raises(
        AssertionError,
        match=re.escape("two runs from the same state differ in state['fc1.weight']"),
    ):
        check_step(ft.train_step(loss_fn), tiny_state(), tiny_batches(1)[0])


def test_check_step_fails_when_params_do_not_change() -> None:
    """A step whose loss ignores some parameters fails, listing the unchanged ones."""

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        return model.fc2.bias.sum() * 0.0 + nn.functional.cross_entropy(
            model.fc1(batch[0])[:, :2], batch[1]
        )

    with pytest.raises(
        AssertionError,
        match=re.escape("parameters did not change (expect_change=True): fc2.weight, fc2.bias"),
    ):
        check_step(ft.train_step(loss_fn), tiny_state(), tiny_batches(1)[0])


def test_check_step_checks_frozen_parameters() -> None:
    """Frozen prefixes pass when really frozen and fail, naming them, when they train."""
    state = tiny_state()
    for p in state.model.fc1.parameters():
        p.requires_grad_(False)
    frozen_state = ft.TrainState.create(
        state.model, torch.optim.SGD(state.model.fc2.parameters(), lr=0.1)
    )
    check_step(
        ft.train_step(classification_loss), frozen_state, tiny_batches(1)[0], frozen=("fc1.",)
    )
    with pytest.raises(
        AssertionError, match=re.escape("frozen parameters changed: fc1.weight, fc1.bias")
    ):
        check_step(
            ft.train_step(classification_loss), tiny_state(), tiny_batches(1)[0], frozen=("fc1",)
        )
    with pytest.raises(ValueError, match="frozen prefix 'encoder' matches no parameter"):
        check_step(
            ft.train_step(classification_loss),
            tiny_state(),
            tiny_batches(1)[0],
            frozen=("encoder",),
        )


def test_check_step_fails_on_non_finite_metrics() -> None:
    """A NaN metric fails, naming it."""

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        loss, _ = classification_loss(model, batch)
        return loss, {"ratio": torch.tensor(float("nan"))}

    with pytest.raises(AssertionError, match="non-finite metrics: ratio="):
        check_step(ft.train_step(loss_fn), tiny_state(), tiny_batches(1)[0])


def test_check_step_fails_when_the_step_trains_something_else() -> None:
    """A hand-written step that trains a captured model instead of state.model fails."""
    state = tiny_state()
    captured_model, captured_opt = state.model, state.optimizer

    def body(s: ft.TrainState, batch: Any) -> tuple[ft.TrainState, ft.Metrics]:
        loss, metrics = classification_loss(captured_model, batch)
        loss.backward()
        captured_opt.step()
        captured_opt.zero_grad(set_to_none=True)
        return s, {"loss": loss, **metrics}

    with pytest.raises(AssertionError, match="the state passed in changed"):
        check_step(ft.custom_step(body), state, tiny_batches(1)[0])


def test_check_step_refuses_a_step_with_the_wrong_return() -> None:
    """A step that does not return (TrainState, metrics) fails with what it returned."""
    with pytest.raises(AssertionError, match="must return \\(TrainState, metrics\\), got dict"):
        check_step(lambda s, b: {}, tiny_state(), tiny_batches(1)[0])


def test_check_step_with_a_mapping_of_models() -> None:
    """Parameter names of a mapping state are prefixed with the model's key."""
    gen, disc = tiny_model(seed=1), tiny_model(seed=2)
    state = ft.TrainState.create(
        {"gen": gen, "disc": disc},
        {
            "gen": torch.optim.SGD(gen.parameters(), lr=0.1),
            "disc": torch.optim.SGD(disc.parameters(), lr=0.1),
        },
    )

    def body(s: ft.TrainState, batch: Any) -> tuple[ft.TrainState, ft.Metrics]:
        loss, _ = classification_loss(s.model["gen"], batch)
        loss.backward()
        s.optimizer["gen"].step()
        s.optimizer["gen"].zero_grad(set_to_none=True)
        return s, {"loss": loss}

    check_step(ft.custom_step(body), state, tiny_batches(1)[0], frozen=("disc.",))
    with pytest.raises(
        AssertionError, match=re.escape("did not change (expect_change=True): disc.fc1.weight")
    ):
        check_step(ft.custom_step(body), state, tiny_batches(1)[0])


def test_check_step_tolerance() -> None:
    """atol allows small differences between runs; 0 demands bit-identical results."""
    noise = iter([0.0, 1e-7, 0.0, 1e-7])

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        loss, metrics = classification_loss(model, batch)
        return loss + next(noise), metrics

    batch = tiny_batches(1)[0]
    with pytest.raises(
        AssertionError, match="two runs from the same state differ in metrics\\['loss'\\]"
    ):
        check_step(ft.train_step(loss_fn), tiny_state(), batch)
    check_step(ft.train_step(loss_fn), tiny_state(), batch, atol=1e-5)
