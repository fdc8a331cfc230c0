"""accumulate, clip_grad_norm/value, skip_nonfinite and composition, against hand loops."""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import toolz
import torch
from torch import nn

import ftrain as ft
from ftrain.testing import classification_loss, tiny_batches, tiny_model, tiny_state

Batch = tuple[torch.Tensor, torch.Tensor]


def _pair(kind: str = "sgd", **model_kwargs: Any) -> tuple[ft.TrainState, nn.Module, Any]:
    """A state and an identical hand-loop model with its own optimizer."""
    state = tiny_state(kind, lr=0.1 if kind == "sgd" else 0.01, **model_kwargs)
    hand = copy.deepcopy(state.model)
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.Adam(hand.parameters(), lr=0.01)
    return state, hand, opt


def _hand_loop(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    windows: Sequence[Sequence[Batch]],
    *,
    divide_by: Callable[[int], int] | None = None,
    clip: Callable[[nn.Module], Any] | None = None,
) -> list[Any]:
    """nanoGPT order: per window, loss / n and backward per batch; clip; step; zero_grad."""
    clipped = []
    for window in windows:
        n = divide_by(len(window)) if divide_by else len(window)
        for x, y in window:
            loss = nn.functional.cross_entropy(model(x), y) / n
            loss.backward()
        if clip is not None:
            clipped.append(clip(model))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return clipped


def _run(step: Any, state: ft.TrainState, batches: Sequence[Batch]) -> tuple[ft.TrainState, list]:
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _close(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> bool:
    return all(
        torch.allclose(p, q, rtol=0.0, atol=atol)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


# ---------------------------------------------------------------- accumulate


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_accumulate_equals_the_hand_loop(kind: str) -> None:
    """accumulate(4) over 8 batches == hand loop with loss/4 and a step every 4 (bit-identical)."""
    state, hand, opt = _pair(kind)
    batches = tiny_batches(8)
    state, _ = _run(ft.accumulate(4)(ft.train_step(classification_loss)), state, batches)
    _hand_loop(hand, opt, [batches[:4], batches[4:]])
    assert (state.step, state.micro_step) == (2, 8)
    assert _same(state.model, hand)
    assert all(p.grad is None for p in state.model.parameters())


def test_accumulate_equals_one_step_on_the_big_batch() -> None:
    """accumulate(4) on four equal micro-batches == one step on their concatenation (1e-6)."""
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(4)
    state, _ = _run(ft.accumulate(4)(ft.train_step(classification_loss)), state, batches)
    big = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    _hand_loop(hand, opt, [[big]])
    assert _close(state.model, hand)
    assert not _same(state.model, tiny_model())


def test_accumulate_does_not_step_before_the_window_closes() -> None:
    """Accumulating batches leave params and the step count alone but gather gradients."""
    state = tiny_state()
    before = copy.deepcopy(state.model)
    step = ft.accumulate(3)(ft.train_step(classification_loss))
    state, _ = _run(step, state, tiny_batches(2))
    assert (state.step, state.micro_step, state.batch_idx) == (0, 2, 2)
    assert _same(state.model, before)
    assert all(p.grad is not None for p in state.model.parameters())


def test_accumulate_schedule_switches_at_its_epoch() -> None:
    """accumulate({0: 1, 2: 3}): one batch per update in epochs 0-1, three from epoch 2 on."""
    state, hand, opt = _pair("sgd")
    step = ft.accumulate({0: 1, 2: 3})(ft.train_step(classification_loss))
    batches = tiny_batches(6)
    steps_after_epoch = []
    for epoch in range(3):
        state = state.replace(epoch=epoch, batch_idx=0, epoch_length=len(batches))
        state, _ = _run(step, state, batches)
        steps_after_epoch.append(state.step)
        n = 3 if epoch >= 2 else 1
        _hand_loop(hand, opt, [batches[i : i + n] for i in range(0, len(batches), n)])
    assert steps_after_epoch == [6, 12, 14]
    assert _same(state.model, hand)
    assert [step.n_for_epoch(e) for e in range(4)] == [1, 1, 3, 3]


def test_schedule_without_epoch_zero_starts_at_one() -> None:
    """Epochs before the schedule's first key accumulate nothing (n=1), as in Lightning."""
    step = ft.accumulate({1: 4})(ft.train_step(classification_loss))
    assert [step.n_for_epoch(e) for e in range(3)] == [1, 4, 4]


def test_short_last_window_is_an_exact_mean() -> None:
    """With epoch_length=7 and accumulate(4), batches 5-7 form a window whose update uses
    the exact mean of their three losses (1e-6), not 3/4 of it.
    """
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(7)
    state = state.replace(epoch_length=7)
    state, _ = _run(ft.accumulate(4)(ft.train_step(classification_loss)), state, batches)
    assert (state.step, state.batch_idx) == (2, 7)
    _hand_loop(hand, opt, [batches[:4], batches[4:]])
    assert _close(state.model, hand)
    # Control: Lightning's r/n scaling differs, so the check above can fail.
    _, lightning, l_opt = _pair("sgd")
    _hand_loop(lightning, l_opt, [batches[:4], batches[4:]], divide_by=lambda r: 4)
    assert not _close(state.model, lightning)


def test_windows_restart_each_epoch() -> None:
    """A new epoch (batch_idx=0) starts a new window even after a short one."""
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(3)
    step = ft.accumulate(2)(ft.train_step(classification_loss))
    for epoch in range(2):
        state = state.replace(epoch=epoch, batch_idx=0, epoch_length=3)
        state, _ = _run(step, state, batches)
        _hand_loop(hand, opt, [batches[:2], batches[2:]])
    assert state.step == 4
    assert _close(state.model, hand)


# ---------------------------------------------------------------- clipping


def test_clip_grad_norm_equals_the_hand_loop() -> None:
    """clip_grad_norm(0.5) == torch's clip_grad_norm_ in the hand loop (bit-identical);
    grad_norm is the pre-clip norm, and clipping really happened.
    """
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(4)
    state, history = _run(
        ft.clip_grad_norm(0.5)(ft.train_step(classification_loss)), state, batches
    )
    norms = _hand_loop(
        hand,
        opt,
        [[b] for b in batches],
        clip=lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.5),
    )
    assert _same(state.model, hand)
    for metrics, norm in zip(history, norms, strict=True):
        assert torch.equal(metrics["grad_norm"], norm)
    assert max(float(n) for n in norms) > 0.5


def test_clip_grad_norm_with_inf_norm() -> None:
    """norm_type=inf matches clip_grad_norm_(..., norm_type=inf)."""
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(3)
    state, _ = _run(
        ft.clip_grad_norm(0.1, math.inf)(ft.train_step(classification_loss)), state, batches
    )
    _hand_loop(
        hand,
        opt,
        [[b] for b in batches],
        clip=lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.1, norm_type=math.inf),
    )
    assert _same(state.model, hand)


def test_clip_grad_value_equals_the_hand_loop() -> None:
    """clip_grad_value(0.05) == torch's clip_grad_value_ (bit-identical), and it clipped."""
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(3)
    state, _ = _run(ft.clip_grad_value(0.05)(ft.train_step(classification_loss)), state, batches)
    seen = []

    def clip(m: nn.Module) -> None:
        seen.append(max(float(p.grad.abs().max()) for p in m.parameters()))
        nn.utils.clip_grad_value_(m.parameters(), 0.05)

    _hand_loop(hand, opt, [[b] for b in batches], clip=clip)
    assert _same(state.model, hand)
    assert max(seen) > 0.05


def test_clipping_with_accumulate_clips_the_accumulated_gradient_once() -> None:
    """With accumulate(4), the norm is clipped once per window, on the summed gradient."""
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(8)
    step = toolz.pipe(ft.train_step(classification_loss), ft.clip_grad_norm(0.3), ft.accumulate(4))
    state, history = _run(step, state, batches)
    norms = _hand_loop(
        hand,
        opt,
        [batches[:4], batches[4:]],
        clip=lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.3),
    )
    assert _same(state.model, hand)
    assert [("grad_norm" in m) for m in history] == [False, False, False, True] * 2
    assert torch.equal(history[3]["grad_norm"], norms[0])
    assert torch.equal(history[7]["grad_norm"], norms[1])


def test_clipping_covers_param_groups_added_later() -> None:
    """Parameters added with optimizer.add_param_group (unfreezing) are clipped too.

    Equals a hand loop that clips model.parameters() after the same unfreezing.
    """
    state, hand, opt = _pair("sgd")
    head = list(state.model.fc2.parameters())
    state = ft.TrainState.create(
        state.model, torch.optim.SGD(state.model.fc1.parameters(), lr=0.1, momentum=0.9)
    )
    opt = torch.optim.SGD(hand.fc1.parameters(), lr=0.1, momentum=0.9)
    for p in [*head, *hand.fc2.parameters()]:
        p.requires_grad_(False)
    step = ft.clip_grad_norm(0.05)(ft.train_step(classification_loss))

    def clip(m: nn.Module) -> Any:
        return nn.utils.clip_grad_norm_([p for p in m.parameters() if p.grad is not None], 0.05)

    b0, b1 = tiny_batches(2)
    state, _ = step(state, b0)
    _hand_loop(hand, opt, [[b0]], clip=clip)
    for p in [*head, *hand.fc2.parameters()]:
        p.requires_grad_(True)
    state.optimizer.add_param_group({"params": head})
    opt.add_param_group({"params": list(hand.fc2.parameters())})
    state, metrics = step(state, b1)
    norms = _hand_loop(hand, opt, [[b1]], clip=clip)
    assert _same(state.model, hand)
    assert torch.equal(metrics["grad_norm"], norms[0])


# ---------------------------------------------------------------- skip_nonfinite


def test_skip_nonfinite_leaves_params_and_optimizer_state_untouched() -> None:
    """A NaN batch changes neither params nor Adam's state, is counted, and a finite batch
    afterwards trains exactly as if the NaN batch had never come.
    """
    state, hand, opt = _pair("adam")
    good0, good1 = tiny_batches(2)
    bad = (torch.full_like(good0[0], math.nan), good0[1])
    step = ft.skip_nonfinite()(ft.train_step(classification_loss))

    state, metrics = step(state, good0)
    assert int(metrics["skipped_steps"]) == 0
    params = [p.detach().clone() for p in state.model.parameters()]
    opt_state = copy.deepcopy(state.optimizer.state_dict())

    state, metrics = step(state, bad)
    assert int(metrics["skipped_steps"]) == 1
    assert state.extras["skip_nonfinite"] == 1
    assert state.step == 2  # counted, as Lightning counts scaler-skipped steps
    assert all(torch.equal(a, b) for a, b in zip(params, state.model.parameters(), strict=True))
    after = state.optimizer.state_dict()
    for key, value in opt_state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor), name
    assert all(p.grad is None for p in state.model.parameters())

    state, metrics = step(state, good1)
    assert int(metrics["skipped_steps"]) == 1
    _hand_loop(hand, opt, [[good0], [good1]])
    assert _same(state.model, hand)


def test_skip_nonfinite_with_clipping_and_accumulation() -> None:
    """A NaN anywhere in a window skips that window's update; clipping does not hide it."""
    state = tiny_state("adam")
    good = tiny_batches(3)
    bad = (torch.full_like(good[0][0], math.inf), good[0][1])
    step = ft.train_step(classification_loss, accumulate=2, clip_norm=1.0, skip_nonfinite=True)
    before = copy.deepcopy(state.model)
    state, history = _run(step, state, [good[0], bad])
    assert int(history[-1]["skipped_steps"]) == 1
    assert _same(state.model, before)
    state, history = _run(step, state, [good[1], good[2]])
    assert int(history[-1]["skipped_steps"]) == 1
    assert not _same(state.model, before)


# ---------------------------------------------------------------- composition

_COMBINATORS = [
    ft.clip_grad_norm(0.5),
    ft.accumulate(4),
    ft.precision("bf16-mixed"),
    ft.skip_nonfinite(),
]


def test_keyword_form_equals_every_composition_order() -> None:
    """train_step(f, accumulate=4, clip_norm=0.5, precision="bf16-mixed", skip_nonfinite=True)
    gives bit-identical params to the combinators piped in any of the 24 orders; the
    steps are equal values when the two gradient transforms come in the keyword order.
    """
    batches = tiny_batches(8)
    keyword = ft.train_step(
        classification_loss,
        accumulate=4,
        clip_norm=0.5,
        precision="bf16-mixed",
        skip_nonfinite=True,
    )
    reference, ref_history = _run(keyword, tiny_state("adam"), batches)
    assert reference.step == 2
    for order in itertools.permutations(_COMBINATORS):
        step = toolz.pipe(ft.train_step(classification_loss), *order)
        clip_first = order.index(_COMBINATORS[0]) < order.index(_COMBINATORS[3])
        assert (step == keyword) == clip_first, order
        state, history = _run(step, tiny_state("adam"), batches)
        assert _same(state.model, reference.model), order
        assert torch.equal(history[-1]["grad_norm"], ref_history[-1]["grad_norm"]), order


def test_compose_and_pipe_agree() -> None:
    """toolz.compose(c2, c1)(step) is toolz.pipe(step, c1, c2)."""
    base = ft.train_step(classification_loss)
    piped = toolz.pipe(base, ft.accumulate(2), ft.clip_grad_value(0.1))
    composed = toolz.compose(ft.clip_grad_value(0.1), ft.accumulate(2))(base)
    assert piped == composed
    assert piped == ft.train_step(classification_loss, accumulate=2, clip_value=0.1)


def test_combinators_have_readable_reprs() -> None:
    """Combinators and steps print as the code that builds them."""
    assert repr(ft.accumulate(4)) == "accumulate(4)"
    assert repr(ft.accumulate({0: 1, 2: 3})) == "accumulate({0: 1, 2: 3})"
    assert repr(ft.clip_grad_norm(1.0)) == "clip_grad_norm(1.0)"
    assert repr(ft.clip_grad_norm(1.0, math.inf)) == "clip_grad_norm(1.0, inf)"
    assert repr(ft.clip_grad_value(0.5)) == "clip_grad_value(0.5)"
    assert repr(ft.precision(16)) == "precision('16-mixed')"
    assert repr(ft.skip_nonfinite()) == "skip_nonfinite()"
    step = ft.train_step(classification_loss, accumulate=4, clip_norm=1.0, precision="bf16")
    assert repr(step) == (
        "train_step(classification_loss, accumulate=4, clip_norm=1.0, precision='bf16-mixed')"
    )


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: ft.accumulate(0),
            ValueError,
            "accumulate: n must be an int >= 1 or a dict {epoch: n}, got 0",
        ),
        (
            lambda: ft.accumulate(2.0),
            ValueError,
            "accumulate: n must be an int >= 1 or a dict {epoch: n}, got 2.0",
        ),
        (
            lambda: ft.accumulate({0: 0}),
            ValueError,
            "accumulate: n must be an int >= 1, got 0 for epoch 0",
        ),
        (
            lambda: ft.accumulate({-1: 2}),
            ValueError,
            "accumulate: schedule keys must be epochs (int >= 0), got -1",
        ),
        (
            lambda: ft.accumulate({}),
            ValueError,
            "accumulate: the schedule {epoch: n} must not be empty",
        ),
        (
            lambda: ft.clip_grad_norm("a"),
            TypeError,
            "clip_grad_norm: max_norm must be a number, got str 'a'",
        ),
        (lambda: ft.clip_grad_norm(0), ValueError, "clip_grad_norm: max_norm must be > 0, got 0"),
        (
            lambda: ft.clip_grad_norm(1.0, 0),
            ValueError,
            "clip_grad_norm: norm_type must be > 0, got 0",
        ),
        (
            lambda: ft.clip_grad_value(-1),
            ValueError,
            "clip_grad_value: clip_value must be > 0, got -1",
        ),
        (
            lambda: ft.precision("fp8"),
            ValueError,
            "precision: unknown value 'fp8'; accepted: '64-true', '32-true'",
        ),
        (
            lambda: ft.train_step(classification_loss, accumulate=0),
            ValueError,
            "accumulate: n must be an int >= 1",
        ),
        (
            lambda: ft.train_step(classification_loss, clip_norm=-1),
            ValueError,
            "clip_norm must be > 0, got -1",
        ),
        (
            lambda: ft.train_step(classification_loss, skip_nonfinite=1),
            TypeError,
            "skip_nonfinite must be a bool, got 1",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_precise_message(
    build: Callable[[], Any], error: type[Exception], message: str
) -> None:
    """Each bad setting raises when built, naming the setting, what is accepted and the value."""
    with pytest.raises(error, match=re.escape(message)):
        build()


@pytest.mark.parametrize(
    ("combinator", "message"),
    [
        (ft.accumulate(2), "accumulate: the step already accumulates; apply accumulate once"),
        (ft.clip_grad_norm(1.0), "clip_grad_norm: the step already clips gradients; clip once"),
        (ft.clip_grad_value(1.0), "clip_grad_value: the step already clips gradients; clip once"),
        (ft.precision("bf16"), "precision: the step already runs at 'bf16-mixed'; set it once"),
        (ft.skip_nonfinite(), "skip_nonfinite: the step already skips non-finite updates"),
    ],
)
def test_applying_a_setting_twice_is_an_error(combinator: ft.Combinator, message: str) -> None:
    """A second combinator for the same setting raises instead of silently overriding."""
    step = ft.train_step(
        classification_loss, accumulate=3, clip_value=2.0, precision="bf16", skip_nonfinite=True
    )
    if "clip_grad_norm" in message:
        step = ft.train_step(classification_loss, clip_norm=2.0)
    with pytest.raises(ValueError, match=re.escape(message)):
        combinator(step)


@pytest.mark.parametrize(
    ("combinator", "message"),
    [
        (ft.accumulate(2), "accumulate applies to steps built by ftrain.train_step, got function"),
        (ft.clip_grad_norm(1.0), "clip_grad_norm applies to steps built by ftrain.train_step"),
        (ft.skip_nonfinite(), "skip_nonfinite applies to steps built by ftrain.train_step"),
        (
            ft.precision(32),
            "precision applies to steps built by ftrain.train_step or ftrain.eval_step, got function",
        ),
    ],
)
def test_combinators_refuse_plain_functions(combinator: ft.Combinator, message: str) -> None:
    """A combinator applied to a hand-written step function raises a TypeError saying why."""

    def hand_written(state: ft.TrainState, batch: Any) -> tuple[ft.TrainState, ft.Metrics]:
        return state, {}

    with pytest.raises(TypeError, match=re.escape(message)):
        combinator(hand_written)


def test_combinators_are_values_and_leave_their_input_alone() -> None:
    """Applying a combinator returns a new step; the input step keeps its settings."""
    base = ft.train_step(classification_loss)
    bigger = ft.accumulate(4)(base)
    assert base.accumulate is None and bigger.accumulate == 4
    assert ft.accumulate(4)(base) == bigger
