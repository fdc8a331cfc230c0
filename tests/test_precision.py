"""precision(...): autocast, GradScaler and true low-precision weights, against hand loops."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import torch
from torch import nn

import ftrain as ft
from ftrain._precision import PRECISIONS, cast_floats, parse_precision
from ftrain.testing import classification_loss, tiny_batches, tiny_state


def _pair(kind: str = "sgd") -> tuple[ft.TrainState, nn.Module, torch.optim.Optimizer]:
    state = tiny_state(kind, lr=0.1 if kind == "sgd" else 0.01)
    hand = copy.deepcopy(state.model)
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.Adam(hand.parameters(), lr=0.01)
    return state, hand, opt


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _run(step: Any, state: ft.TrainState, batches: list) -> tuple[ft.TrainState, list]:
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_bf16_mixed_equals_hand_autocast_loop(kind: str) -> None:
    """bf16-mixed == a hand loop with torch.autocast("cpu", dtype=torch.bfloat16), bit-identical;
    weights stay float32.
    """
    state, hand, opt = _pair(kind)
    batches = tiny_batches(3)
    state, history = _run(
        ft.precision("bf16-mixed")(ft.train_step(classification_loss)), state, batches
    )
    losses = []
    for x, y in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(hand(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    assert _same(state.model, hand)
    assert all(torch.equal(m["loss"], loss) for m, loss in zip(history, losses, strict=True))
    assert all(p.dtype == torch.float32 for p in state.model.parameters())
    # Control: autocast really changed the numbers, so the equality above can fail.
    plain, _ = _run(ft.train_step(classification_loss), _pair(kind)[0], batches)
    assert not _same(state.model, plain.model)


def test_16_mixed_equals_hand_gradscaler_loop() -> None:
    """16-mixed == a hand loop with GradScaler("cpu") and float16 autocast, including clipping
    after unscale_; the scaler lives in state.scaler.
    """
    state, hand, opt = _pair("sgd")
    batches = tiny_batches(4)
    step = ft.train_step(classification_loss, precision="16-mixed", clip_norm=0.5)
    try:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            hand(batches[0][0])
    except (RuntimeError, ValueError):  # pragma: no cover - depends on the torch build
        with pytest.raises(RuntimeError, match="precision='16-mixed' needs a GradScaler"):
            step(state, batches[0])
        return
    state, history = _run(step, state, batches)
    for x, y in batches:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(hand(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = nn.utils.clip_grad_norm_(hand.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    assert isinstance(state.scaler, torch.amp.GradScaler)
    assert state.scaler.get_scale() == scaler.get_scale()
    assert torch.equal(history[-1]["grad_norm"], norm)
    assert _same(state.model, hand)


def test_16_mixed_scaler_state_travels_with_the_state() -> None:
    """The GradScaler is created on the first (even accumulating) batch and kept in the state."""
    step = ft.train_step(classification_loss, precision=16, accumulate=2)
    state, _ = step(tiny_state(), tiny_batches(1)[0])
    assert isinstance(state.scaler, torch.amp.GradScaler)
    scaler = state.scaler
    state, _ = step(state, tiny_batches(2)[1])
    assert state.scaler is scaler and state.step == 1


def test_64_true_casts_model_and_float_inputs() -> None:
    """64-true: weights become float64, float inputs are cast, integer labels are not;
    the result equals a hand loop on model.double() and x.double().
    """
    state, hand, opt = _pair("sgd")
    hand.double()
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def loss_fn(model: nn.Module, batch: Any) -> Any:
        seen.append((batch[0].dtype, batch[1].dtype))
        return classification_loss(model, batch)

    batches = tiny_batches(3)
    state, history = _run(ft.precision("64-true")(ft.train_step(loss_fn)), state, batches)
    for x, y in batches:
        nn.functional.cross_entropy(hand(x.double()), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert all(p.dtype == torch.float64 for p in state.model.parameters())
    assert seen == [(torch.float64, torch.int64)] * 3
    assert history[0]["loss"].dtype == torch.float64
    assert _same(state.model, hand)
    assert batches[0][0].dtype == torch.float32  # the caller's batch is not cast in place


@pytest.mark.parametrize(
    ("name", "dtype"), [("bf16-true", torch.bfloat16), ("16-true", torch.float16)]
)
def test_true_half_precisions_cast_weights(name: str, dtype: torch.dtype) -> None:
    """bf16-true / 16-true: weights, optimizer state and float inputs take the half dtype."""
    state = tiny_state("adam")
    state, _ = _run(ft.precision(name)(ft.train_step(classification_loss)), state, tiny_batches(2))
    assert all(p.dtype == dtype for p in state.model.parameters())
    for p in state.model.parameters():
        assert state.optimizer.state[p]["exp_avg"].dtype == dtype
    assert state.step == 2


def test_bf16_true_equals_hand_loop() -> None:
    """bf16-true == a hand loop on model.to(bfloat16) with bfloat16 inputs, bit-identical."""
    state, hand, opt = _pair("sgd")
    hand.to(torch.bfloat16)
    batches = tiny_batches(3)
    state, _ = _run(ft.precision("bf16-true")(ft.train_step(classification_loss)), state, batches)
    for x, y in batches:
        nn.functional.cross_entropy(hand(x.to(torch.bfloat16)), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert _same(state.model, hand)


def test_eval_step_precision() -> None:
    """eval_step(precision=...) runs the metric function under the same autocast."""
    dtypes = []

    def fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        out = model(batch[0])
        dtypes.append(out.dtype)
        return {"out": out.float().sum()}

    state = tiny_state()
    ft.eval_step(fn, precision="bf16-mixed")(state, tiny_batches(1)[0])
    ft.precision("bf16")(ft.eval_step(fn))(state, tiny_batches(1)[0])
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert repr(ft.eval_step(fn, precision="bf16")) == "eval_step(fn, precision='bf16-mixed')"


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        (64, "64-true"),
        ("64", "64-true"),
        (32, "32-true"),
        ("32", "32-true"),
        (16, "16-mixed"),
        ("16", "16-mixed"),
        ("bf16", "bf16-mixed"),
        *[(p, p) for p in PRECISIONS],
    ],
)
def test_lightning_precision_names_resolve(flag: Any, name: str) -> None:
    """Lightning's names and short forms resolve to the canonical precision."""
    assert parse_precision(flag).name == name
    assert ft.precision(flag) is not None


@pytest.mark.parametrize("flag", ["fp8", 8, None, "bf16-true-ish", "16-bit"])
def test_unknown_precision_lists_the_accepted_values(flag: Any) -> None:
    """An unknown precision raises a ValueError naming the value and every accepted one."""
    accepted = ", ".join(repr(p) for p in PRECISIONS)
    with pytest.raises(
        ValueError, match=re.escape(f"unknown value {flag!r}; accepted: {accepted}")
    ):
        ft.precision(flag)


def test_cast_floats_walks_nested_batches() -> None:
    """cast_floats casts float tensors in tuples, lists, dicts and namedtuples, nothing else."""
    from collections import namedtuple

    Pair = namedtuple("Pair", "x y")
    batch = {"a": [torch.ones(2), torch.arange(2)], "b": Pair(torch.zeros(1), "text")}
    out = cast_floats(batch, torch.float64)
    assert out["a"][0].dtype == torch.float64
    assert out["a"][1].dtype == torch.int64
    assert isinstance(out["b"], Pair) and out["b"].x.dtype == torch.float64 and out["b"].y == "text"
    assert batch["a"][0].dtype == torch.float32
