"""TrainState: construction checks, replace, and clone as an exact, independent copy."""

from __future__ import annotations

import re

import attrs
import pytest
import torch

import ftrain as ft
from ftrain.testing import classification_loss, tiny_batches, tiny_model, tiny_state


def _storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


def test_create_starts_at_zero_and_checks_the_seed() -> None:
    """`create` gives counters at zero, keeps the seed, and wraps a bare scheduler."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    state = ft.TrainState.create(model, opt, sched, seed=7)
    assert (state.step, state.micro_step, state.epoch, state.batch_idx) == (0, 0, 0, 0)
    assert state.seed == 7
    assert state.extras == {}
    assert isinstance(state.scheduler, ft.SchedulerConfig)
    assert state.scheduler.scheduler is sched
    assert state.scheduler.interval == "epoch"


def test_replace_returns_a_new_value_and_state_is_frozen() -> None:
    """`replace` leaves the original alone; assigning a field raises."""
    state = tiny_state()
    new = state.replace(step=3, epoch=1)
    assert (new.step, new.epoch) == (3, 1)
    assert (state.step, state.epoch) == (0, 0)
    assert new.model is state.model
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.step = 1  # type: ignore[misc]


def test_create_refuses_an_optimizer_over_another_models_parameters() -> None:
    """An optimizer built from a different model's parameters is refused at create."""
    model, other = tiny_model(), tiny_model()
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="holds a parameter that belongs to none of the models"):
        ft.TrainState.create(model, opt)


def test_create_refuses_wrong_types() -> None:
    """A non-module model or a non-optimizer optimizer is refused, naming the field."""
    model = tiny_model()
    with pytest.raises(
        TypeError, match=re.escape("model must be a torch.nn.Module or a non-empty mapping")
    ):
        ft.TrainState.create("net", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be .* got dict"):
        ft.TrainState.create({}, None)
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer.*got str"):
        ft.TrainState.create(model, "sgd")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5])
def test_create_refuses_a_seed_out_of_range(seed: object) -> None:
    """The seed must be an int in [0, 2**32 - 1]."""
    model = tiny_model()
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\], got"):
        ft.TrainState.create(model, None, seed=seed)  # type: ignore[arg-type]


def test_counters_must_be_non_negative_ints() -> None:
    """Counters refuse negative values, naming the field."""
    state = tiny_state()
    with pytest.raises(ValueError, match=r"TrainState: micro_step must be an int >= 0, got -1"):
        state.replace(micro_step=-1)


def test_scheduler_config_validates() -> None:
    """SchedulerConfig refuses a bad interval/frequency and a plateau scheduler without monitor."""
    opt = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(ValueError, match="interval must be 'epoch' or 'step', got 'batch'"):
        ft.SchedulerConfig(sched, interval="batch")
    with pytest.raises(ValueError, match="frequency must be an int >= 1, got 0"):
        ft.SchedulerConfig(sched, frequency=0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs monitor="):
        ft.SchedulerConfig(plateau)


def test_clone_shares_no_storage_and_rewires_the_optimizer() -> None:
    """`clone` copies model, optimizer state and extras; the copy's optimizer holds its params."""
    state = tiny_state("adam")
    state, _ = ft.train_step(classification_loss)(state, tiny_batches(1)[0])
    state = state.replace(extras={"mine": {"t": torch.ones(2)}})
    copy = state.clone()

    assert _storages(copy.model).isdisjoint(_storages(state.model))
    params = list(copy.model.parameters())
    opt_params = copy.optimizer.param_groups[0]["params"]
    assert len(opt_params) == len(params)
    assert all(a is b for a, b in zip(opt_params, params, strict=True))
    for p, q in zip(state.model.parameters(), params, strict=True):
        assert torch.equal(p, q)
        old, new = state.optimizer.state[p], copy.optimizer.state[q]
        assert torch.equal(old["exp_avg"], new["exp_avg"])
        assert old["exp_avg"].data_ptr() != new["exp_avg"].data_ptr()
    assert copy.extras["mine"]["t"] is not state.extras["mine"]["t"]
    assert (copy.step, copy.micro_step, copy.seed) == (state.step, state.micro_step, state.seed)


def test_stepping_a_clone_leaves_the_original_alone() -> None:
    """Training the clone changes neither the original's parameters nor its optimizer state."""
    state = tiny_state("adam")
    before = [p.detach().clone() for p in state.model.parameters()]
    copy = state.clone()
    copy, _ = ft.train_step(classification_loss)(copy, tiny_batches(1)[0])
    assert copy.step == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, copy.model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, state.model.parameters(), strict=True))
    assert state.optimizer.state == {}


def test_clone_keeps_gradients_accumulated_mid_window() -> None:
    """A clone taken inside an accumulation window carries the accumulated gradients.

    Finishing the window on the clone gives the same parameters as finishing it
    on the original.
    """
    step = ft.accumulate(2)(ft.train_step(classification_loss))
    b0, b1 = tiny_batches(2)
    state, _ = step(tiny_state(), b0)
    copy = state.clone()
    for p, q in zip(state.model.parameters(), copy.model.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert torch.equal(p.grad, q.grad)
        assert p.grad.data_ptr() != q.grad.data_ptr()
    copy, _ = step(copy, b1)
    state, _ = step(state, b1)
    for p, q in zip(state.model.parameters(), copy.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_clone_of_a_fresh_state_with_a_step_scheduler_steps_cleanly() -> None:
    """A clone's scheduler drives the clone's optimizer, without torch's call-order warning."""
    state = tiny_state(
        scheduler=lambda opt: ft.SchedulerConfig(
            torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), interval="step"
        )
    )
    copy = state.clone()
    assert copy.scheduler.scheduler.optimizer is copy.optimizer
    copy, _ = ft.train_step(classification_loss)(copy, tiny_batches(1)[0])  # warnings are errors
    assert copy.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert state.scheduler.scheduler.last_epoch == 0


def test_clone_works_on_mappings_of_models_and_optimizers() -> None:
    """With name -> model / optimizer mappings, each cloned optimizer holds its cloned model."""
    gen, disc = tiny_model(seed=1), tiny_model(seed=2)
    opts = {
        "gen": torch.optim.Adam(gen.parameters(), lr=0.1),
        "disc": torch.optim.SGD(disc.parameters(), lr=0.1),
    }
    state = ft.TrainState.create({"gen": gen, "disc": disc}, opts)
    copy = state.clone()
    assert set(copy.model) == {"gen", "disc"}
    for key in ("gen", "disc"):
        params = list(copy.model[key].parameters())
        held = copy.optimizer[key].param_groups[0]["params"]
        assert all(a is b for a, b in zip(held, params, strict=True))
        assert _storages(copy.model[key]).isdisjoint(_storages(state.model[key]))
    assert len(copy.models) == 2 and len(copy.optimizers) == 2


def test_create_refuses_a_mapping_optimizer_over_a_foreign_model() -> None:
    """In a mapping, an optimizer over a model outside the state is refused, with its index."""
    gen, disc, stray = tiny_model(), tiny_model(), tiny_model()
    opts = {
        "gen": torch.optim.SGD(gen.parameters(), lr=0.1),
        "disc": torch.optim.SGD(stray.parameters(), lr=0.1),
    }
    with pytest.raises(ValueError, match="optimizer #1 holds a parameter"):
        ft.TrainState.create({"gen": gen, "disc": disc}, opts)


def test_advance_carries_every_field() -> None:
    """advance() equals replace() of the step's fields, for every field of TrainState."""
    from ftrain._state import advance

    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=5)
    state = state.replace(epoch=3, epoch_length=7, rank=1, extras={"a": 1})
    new = advance(state, 4, 9, 2, None, {"b": 2})
    expected = state.replace(step=4, micro_step=9, batch_idx=2, scaler=None, extras={"b": 2})
    for field in attrs.fields(ft.TrainState):
        assert getattr(new, field.name) is getattr(expected, field.name) or getattr(
            new, field.name
        ) == getattr(expected, field.name), field.name
