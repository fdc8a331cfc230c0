"""train_step, eval_step and custom_step against a hand-written PyTorch loop."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import torch
from torch import nn

import ftrain as ft
from ftrain.testing import classification_loss, tiny_batches, tiny_model, tiny_state


def _make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=0.01)


def _hand_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any) -> torch.Tensor:
    """One step of the nanoGPT-order loop."""
    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_plain_step_equals_hand_step(kind: str) -> None:
    """Each plain train_step gives bit-identical params and loss to the hand loop."""
    model = tiny_model()
    hand = copy.deepcopy(model)
    state = ft.TrainState.create(model, _make_optimizer(kind, model))
    hand_opt = _make_optimizer(kind, hand)
    step = ft.train_step(classification_loss)
    for batch in tiny_batches(3):
        state, metrics = step(state, batch)
        loss = _hand_step(hand, hand_opt, batch)
        assert torch.equal(metrics["loss"], loss)
        _assert_same_params(state.model, hand)
    for p, q in zip(state.model.parameters(), hand.parameters(), strict=True):
        assert p.grad is None  # zero_grad(set_to_none=True) after the step
        for key, value in hand_opt.state[q].items():
            assert torch.equal(state.optimizer.state[p][key], value), key


def test_step_advances_the_counters() -> None:
    """A step counts one optimizer step, one micro-step and one batch of the epoch."""
    state = tiny_state()
    step = ft.train_step(classification_loss)
    for batch in tiny_batches(2):
        state, _ = step(state, batch)
    assert (state.step, state.micro_step, state.batch_idx, state.epoch) == (2, 2, 2, 0)


def test_metrics_are_detached_tensors() -> None:
    """Metrics stay tensors (no .item()), detached from the graph; loss is the undivided loss."""
    step = ft.accumulate(2)(ft.train_step(classification_loss))
    _, metrics = step(tiny_state(), tiny_batches(1)[0])
    assert set(metrics) == {"loss", "acc"}
    for value in metrics.values():
        assert isinstance(value, torch.Tensor) and not value.requires_grad
    loss, _ = classification_loss(tiny_model(), tiny_batches(1)[0])
    assert torch.equal(metrics["loss"], loss.detach())


@pytest.mark.parametrize(
    "form",
    [
        lambda m, b: classification_loss(m, b)[0],
        lambda m, b: classification_loss(m, b),
        lambda m, b: {"loss": classification_loss(m, b)[0], "acc": classification_loss(m, b)[1]},
    ],
    ids=["tensor", "tuple", "dict"],
)
def test_loss_fn_output_forms_train_alike(form: Any) -> None:
    """A bare loss, (loss, metrics) and {"loss": ...} all train the same."""
    reference, _ = ft.train_step(classification_loss)(tiny_state(), tiny_batches(1)[0])
    state, metrics = ft.train_step(form)(tiny_state(), tiny_batches(1)[0])
    _assert_same_params(state.model, reference.model)
    assert "loss" in metrics


def test_non_scalar_loss_is_refused() -> None:
    """A loss_fn returning a non-scalar tensor raises, giving its shape."""
    step = ft.train_step(lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1], reduction="none"))
    with pytest.raises(ValueError, match=r"scalar loss \(0-dim tensor\), got shape \(8,\)"):
        step(tiny_state(), tiny_batches(1)[0])


def test_bad_loss_fn_output_is_refused() -> None:
    """A loss_fn returning something that holds no loss raises a TypeError naming the type."""
    step = ft.train_step(lambda m, b: [1.0])
    with pytest.raises(TypeError, match=r"loss_fn must return a scalar loss tensor.*got list"):
        step(tiny_state(), tiny_batches(1)[0])


def test_train_step_checks_its_arguments() -> None:
    """train_step refuses a non-callable, both clip forms, and a state without optimizer."""
    with pytest.raises(TypeError, match="train_step: loss_fn must be callable, got int"):
        ft.train_step(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give clip_norm or clip_value, not both"):
        ft.train_step(classification_loss, clip_norm=1.0, clip_value=1.0)
    state = ft.TrainState.create(tiny_model(), None)
    with pytest.raises(ValueError, match="train_step: the state has no optimizer"):
        ft.train_step(classification_loss)(state, tiny_batches(1)[0])


def test_step_is_reproducible_in_isolation() -> None:
    """The same (state, batch) stepped from two clones gives identical params and metrics.

    The model has dropout, and torch's global generator is used in between: the
    step's randomness comes from (seed, micro_step, rank) only.
    """
    state = tiny_state("adam", dropout=0.5).replace(micro_step=5)
    batch = tiny_batches(1)[0]
    step = ft.train_step(classification_loss)
    first, m1 = step(state.clone(), batch)
    torch.rand(100)
    torch.randn(3, 3)
    second, m2 = step(state.clone(), batch)
    _assert_same_params(first.model, second.model)
    assert m1.keys() == m2.keys()
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    # Control: another micro_step draws another dropout mask, so the check above can fail.
    other, _ = step(state.clone().replace(micro_step=6), batch)
    assert not all(
        torch.equal(p, q)
        for p, q in zip(first.model.parameters(), other.model.parameters(), strict=True)
    )


def test_different_seeds_draw_different_dropout() -> None:
    """The run seed enters the step's randomness."""
    batch = tiny_batches(1)[0]
    step = ft.train_step(classification_loss)
    a, _ = step(tiny_state(dropout=0.5, seed=0), batch)
    b, _ = step(tiny_state(dropout=0.5, seed=0).replace(seed=1), batch)
    assert not all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )


def _lr(state: ft.TrainState) -> float:
    return float(state.optimizer.param_groups[0]["lr"])


def test_step_interval_scheduler_steps_once_per_optimizer_step() -> None:
    """A step-interval scheduler is stepped after each update, never on accumulating batches.

    Parameters match a hand loop with ``sched.step()`` after ``opt.step()``.
    """
    model = tiny_model()
    hand = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    state = ft.TrainState.create(model, opt, ft.SchedulerConfig(sched, interval="step"))
    hand_opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    hand_sched = torch.optim.lr_scheduler.StepLR(hand_opt, 1, gamma=0.5)
    step = ft.accumulate(2)(ft.train_step(classification_loss))
    batches = tiny_batches(4)
    lrs = []
    for batch in batches:
        state, _ = step(state, batch)
        lrs.append(_lr(state))
    assert lrs == [0.1, 0.05, 0.05, 0.025]
    assert (state.step, sched.last_epoch) == (2, 2)
    for i in range(0, 4, 2):
        for batch in batches[i : i + 2]:
            (nn.functional.cross_entropy(hand(batch[0]), batch[1]) / 2).backward()
        hand_opt.step()
        hand_sched.step()
        hand_opt.zero_grad(set_to_none=True)
    _assert_same_params(state.model, hand)


def test_scheduler_frequency_and_epoch_interval() -> None:
    """frequency=2 steps the scheduler every second update; an epoch scheduler is left alone."""
    step = ft.train_step(classification_loss)
    every_two = tiny_state(
        scheduler=lambda o: ft.SchedulerConfig(
            torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5), interval="step", frequency=2
        )
    )
    per_epoch = tiny_state(scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5))
    for batch in tiny_batches(4):
        every_two, _ = step(every_two, batch)
        per_epoch, _ = step(per_epoch, batch)
    assert _lr(every_two) == pytest.approx(0.025)
    assert _lr(per_epoch) == pytest.approx(0.1)


def test_eval_step_runs_without_grad_in_eval_mode() -> None:
    """eval_step: no grad, eval mode during the call, the mode restored, the state unchanged."""
    seen: dict[str, bool] = {}

    def metric_fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        seen["grad"] = torch.is_grad_enabled()
        seen["training"] = model.training
        loss, metrics = classification_loss(model, batch)
        seen["requires_grad"] = loss.requires_grad
        return {"val_loss": loss, **metrics}

    state = tiny_state(dropout=0.5)
    before = [p.detach().clone() for p in state.model.parameters()]
    new, metrics = ft.eval_step(metric_fn)(state, tiny_batches(1)[0])
    assert seen == {"grad": False, "training": False, "requires_grad": False}
    assert new is state
    assert state.model.training
    assert set(metrics) == {"val_loss", "acc"}
    assert all(p.grad is None for p in state.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, state.model.parameters(), strict=True))
    state.model.eval()
    ft.eval_step(metric_fn)(state, tiny_batches(1)[0])
    assert not state.model.training


def test_eval_step_names_a_bare_tensor_loss_and_refuses_other_outputs() -> None:
    """A tensor result is reported as "loss"; a non-mapping result is a TypeError."""
    state = tiny_state()
    _, metrics = ft.eval_step(lambda m, b: classification_loss(m, b)[0])(state, tiny_batches(1)[0])
    assert list(metrics) == ["loss"]
    with pytest.raises(
        TypeError, match=re.escape("eval_step: fn must return a {name: value} mapping")
    ):
        ft.eval_step(lambda m, b: [1])(state, tiny_batches(1)[0])
    with pytest.raises(TypeError, match="eval_step: fn must be callable, got str"):
        ft.eval_step("f")  # type: ignore[arg-type]


def _gan_state(seed: int = 0) -> ft.TrainState:
    gen, disc = tiny_model(4, 8, 4, seed=seed + 1), tiny_model(4, 8, 1, dropout=0.5, seed=seed + 2)
    opts = {
        "gen": torch.optim.Adam(gen.parameters(), lr=0.01),
        "disc": torch.optim.Adam(disc.parameters(), lr=0.01),
    }
    return ft.TrainState.create({"gen": gen, "disc": disc}, opts, seed=seed)


def _gan_body(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, ft.Metrics]:
    """One discriminator and one generator update."""
    gen, disc = state.model["gen"], state.model["disc"]
    real = batch[0]
    fake = gen(torch.randn_like(real))
    bce = nn.functional.binary_cross_entropy_with_logits
    d_loss = bce(disc(real), torch.ones(len(real), 1)) + bce(
        disc(fake.detach()), torch.zeros(len(real), 1)
    )
    d_loss.backward()
    state.optimizer["disc"].step()
    state.optimizer["disc"].zero_grad(set_to_none=True)
    g_loss = bce(disc(fake), torch.ones(len(real), 1))
    g_loss.backward()
    state.optimizer["gen"].step()
    for opt in state.optimizers:
        opt.zero_grad(set_to_none=True)
    return state, {"d_loss": d_loss, "g_loss": g_loss}


def test_custom_step_drives_a_mapping_of_models() -> None:
    """custom_step advances the counters, detaches metrics, and is reproducible from clones."""
    step = ft.custom_step(_gan_body)
    state = _gan_state()
    batches = tiny_batches(2)
    first, m1 = step(state.clone(), batches[0])
    torch.rand(10)
    second, m2 = step(state.clone(), batches[0])
    assert (first.step, first.micro_step, first.batch_idx) == (1, 1, 1)
    assert all(not v.requires_grad for v in m1.values())
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    for key in ("gen", "disc"):
        _assert_same_params(first.model[key], second.model[key])
        changed = [
            not torch.equal(p, q)
            for p, q in zip(
                state.model[key].parameters(), first.model[key].parameters(), strict=True
            )
        ]
        assert all(changed), key
    assert step.__name__ == "_gan_body"


def test_custom_step_keeps_a_step_count_set_by_the_body() -> None:
    """When the body sets state.step itself, custom_step does not add one."""

    def body(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, ft.Metrics]:
        return state.replace(step=state.step + 2), {}

    new, _ = ft.custom_step(body)(tiny_state(), None)
    assert (new.step, new.micro_step) == (2, 1)
    with pytest.raises(TypeError, match="custom_step: fn must be callable"):
        ft.custom_step(None)  # type: ignore[arg-type]

    def swapped(state: ft.TrainState, batch: Any) -> Any:
        return {}, state

    with pytest.raises(TypeError, match=r"custom_step: swapped must return \(state, metrics\)"):
        ft.custom_step(swapped)(tiny_state(), None)
