"""Gradient and after-update transforms, user wrappers and fit's flags, against hand loops."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import toolz
import torch
from torch import nn

import ftrain as ft
from ftrain.testing import classification_loss, tiny_batches, tiny_state

Batch = tuple[torch.Tensor, torch.Tensor]
QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


# ------------------------------------------------------------ two user transforms


def _halve_fn(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    torch._foreach_mul_(list(grads.values()), 0.5)
    return grads


def _noise_fn(grads: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """New tensors (not in place): seeded noise from the transform's own update count."""
    g = torch.Generator().manual_seed(1000 + count)
    return {n: x + 1e-3 * torch.randn(x.shape, generator=g) for n, x in grads.items()}


def _halve() -> ft.GradientTransform:
    return ft.gradient_transform(lambda grads, st, state: (_halve_fn(grads), st, {}), name="halve")


def _noisy() -> ft.GradientTransform:
    def update(grads: dict[str, torch.Tensor], count: int, state: ft.TrainState) -> Any:
        return _noise_fn(grads, count), count + 1, {"noise_updates": torch.tensor(count + 1)}

    return ft.gradient_transform(update, name="noise", init=lambda state: 0)


_USER = {"halve": _halve, "noise": _noisy}


def _apply_user(kind: str, model: nn.Module, count: int) -> None:
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    out = _halve_fn(grads) if kind == "halve" else _noise_fn(grads, count)
    for n, p in model.named_parameters():
        p.grad = out[n]


def _hand(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Sequence[Batch],
    *,
    n: int,
    transforms: Sequence[str],
    autocast: bool,
    max_norm: float = 1.0,
) -> list[torch.Tensor]:
    """nanoGPT order with ``transforms`` ("clip" or a user kind) applied before opt.step()."""
    norms = []
    for w, start in enumerate(range(0, len(batches), n)):
        window = batches[start : start + n]
        for x, y in window:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(model(x), y)
            (loss / n).backward()
        for kind in transforms:
            if kind == "clip":
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            else:
                _apply_user(kind, model, w)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return norms


def _run(step: Any, state: ft.TrainState, batches: Sequence[Batch]) -> tuple[ft.TrainState, list]:
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("kind", ["halve", "noise"])
def test_a_user_transform_in_every_position_equals_the_hand_loop(kind: str) -> None:
    """A user gradient transform piped in any of the 24 orders with accumulate(4),
    clip_grad_norm(0.1) and bf16-mixed equals the hand loop that applies it at the same
    point relative to clipping (torch.equal), with the norms reported equal too."""
    batches = _scaled_batches(8)
    base = tiny_state("sgd", lr=0.1)
    parts = [_USER[kind](), ft.clip_grad_norm(0.1), ft.accumulate(4), ft.precision("bf16-mixed")]
    results: dict[bool, nn.Module] = {}
    for order in itertools.permutations(parts):
        user_first = order.index(parts[0]) < order.index(parts[1])
        step = toolz.pipe(ft.train_step(classification_loss), *order)
        state, history = _run(step, base.clone(), batches)
        hand = copy.deepcopy(base.model)
        opt = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
        chain = [kind, "clip"] if user_first else ["clip", kind]
        norms = _hand(hand, opt, batches, n=4, transforms=chain, autocast=True, max_norm=0.1)
        assert _same(state.model, hand), order
        assert torch.equal(history[3]["grad_norm"], norms[0]), order
        assert torch.equal(history[7]["grad_norm"], norms[1]), order
        assert state.step == 2
        if kind == "noise":
            assert state.extras["noise"] == 2
        results[user_first] = state.model
    assert not _same(results[True], results[False])  # the position matters, and is honoured


@pytest.mark.parametrize("kind", ["halve", "noise"])
def test_a_user_transform_with_fit_flags_equals_the_hand_loop(kind: str, tmp_path: Path) -> None:
    """fit's accumulate/clip/precision flags around a step holding a user transform: the
    user transform runs first, then the flag's clip (torch.equal with the hand loop)."""
    batches = tiny_batches(8)
    state = tiny_state("adam", lr=0.01)
    hand = copy.deepcopy(state.model)
    opt = torch.optim.Adam(hand.parameters(), lr=0.01)
    step = _USER[kind]()(ft.train_step(classification_loss))
    result = ft.fit(
        state,
        step,
        batches,
        max_epochs=1,
        accumulate_grad_batches=4,
        gradient_clip_val=1.0,
        precision="bf16-mixed",
        default_root_dir=tmp_path,
        **QUIET,
    )
    _hand(hand, opt, batches, n=4, transforms=[kind, "clip"], autocast=True)
    assert result.state.step == 2
    assert _same(result.state.model, hand)


@pytest.mark.parametrize("kind", ["halve", "noise"])
def test_a_user_transform_resumes_exactly_from_a_mid_window_checkpoint(
    kind: str, tmp_path: Path
) -> None:
    """Saved after 6 of 12 batches (inside a window of 4) and restored into a fresh state,
    the run ends bit-identical to the straight run, the transform's state included."""
    batches = tiny_batches(12)
    step = toolz.pipe(
        ft.train_step(classification_loss),
        ft.accumulate(4),
        _USER[kind](),
        ft.clip_grad_norm(1.0),
        ft.precision("bf16-mixed"),
    )
    straight, _ = _run(step, tiny_state("adam", lr=0.01), batches)
    first, _ = _run(step, tiny_state("adam", lr=0.01), batches[:6])
    ft.save_checkpoint(first, tmp_path / "mid.ckpt")
    fresh = ft.restore(tiny_state("adam", lr=0.01), tmp_path / "mid.ckpt")
    assert fresh.extras == first.extras
    resumed, _ = _run(step, fresh, batches[6:])
    assert resumed.step == straight.step == 3
    assert _same(resumed.model, straight.model)
    assert resumed.extras == straight.extras


# ------------------------------------------------------------ parameter-group order


def _grouped(state_seed: int = 0) -> tuple[ft.TrainState, nn.Module, torch.optim.Optimizer]:
    """nanoGPT's configure_optimizers: a decay group (matrices) then a no-decay group
    (biases), with the matrices in reverse order: unlike model.parameters()."""
    state = tiny_state(seed=state_seed)
    model = state.model
    hand = copy.deepcopy(model)

    def groups(m: nn.Module) -> list[dict[str, Any]]:
        params = list(m.parameters())
        decay = [p for p in params if p.dim() >= 2][::-1]
        no_decay = [p for p in params if p.dim() < 2]
        return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]

    opt = torch.optim.AdamW(groups(model), lr=0.01, betas=(0.9, 0.95))
    hand_opt = torch.optim.AdamW(groups(hand), lr=0.01, betas=(0.9, 0.95))
    return ft.TrainState.create(model, opt, seed=state_seed), hand, hand_opt


def _scaled_batches(n: int) -> list[Batch]:
    # Big inputs: norms well above 1, so clipping acts on every update.
    return [(10 * x, y) for x, y in tiny_batches(n)]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_clip_norm_follows_model_order_whatever_the_group_order(precision: str) -> None:
    """Two AdamW groups ordered unlike model.parameters(): the clip norm and the final
    parameters equal the hand loop's clip_grad_norm_(model.parameters()) bit for bit."""
    batches = _scaled_batches(16)
    state, hand, hand_opt = _grouped()
    step = ft.train_step(classification_loss, accumulate=4, clip_norm=0.25, precision=precision)
    state, history = _run(step, state, batches)
    autocast = precision == "bf16-mixed"
    norms = _hand(
        hand, hand_opt, batches, n=4, transforms=["clip"], autocast=autocast, max_norm=0.25
    )
    assert [history[i]["grad_norm"] for i in (3, 7, 11, 15)] == norms
    assert all(float(x) > 0.25 for x in norms)
    assert _same(state.model, hand)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fit_flags_with_parameter_groups_equal_the_hand_loop(
    precision: str, tmp_path: Path
) -> None:
    """fit(accumulate_grad_batches=4, gradient_clip_val=1.0, precision) over nanoGPT-style
    groups is bit-identical to the hand loop."""
    batches = _scaled_batches(16)
    state, hand, hand_opt = _grouped()
    result = ft.fit(
        state,
        ft.train_step(classification_loss),
        batches,
        max_epochs=1,
        accumulate_grad_batches=4,
        gradient_clip_val=0.25,
        precision=precision,
        default_root_dir=tmp_path,
        **QUIET,
    )
    autocast = precision == "bf16-mixed"
    _hand(hand, hand_opt, batches, n=4, transforms=["clip"], autocast=autocast, max_norm=0.25)
    assert _same(result.state.model, hand)


# ------------------------------------------------------------ skipping, EMA


def test_a_transform_returning_none_skips_the_update() -> None:
    """A gradient transform that returns None as grads skips optimizer.step() and the later
    transforms; the gradients are dropped; the counters still advance."""
    seen = []

    def later(grads: Any, st: Any, state: Any) -> Any:
        seen.append(state.step)
        return grads, st, {}

    veto = ft.gradient_transform(lambda g, st, s: (None, st, {}), name="veto")
    step = toolz.pipe(
        ft.train_step(classification_loss), veto, ft.gradient_transform(later, name="later")
    )
    state = tiny_state()
    before = copy.deepcopy(state.model)
    state, _ = _run(step, state, tiny_batches(2))
    assert _same(state.model, before) and seen == [] and state.step == 2
    assert all(p.grad is None for p in state.model.parameters())


def test_ema_equals_a_hand_average_and_resumes(tmp_path: Path) -> None:
    """ema(0.9) keeps avg = 0.9 avg + 0.1 param after each update (starting from the
    weights before the first update), survives a checkpoint, and ema_weights swaps it in
    and back out."""
    batches = tiny_batches(6)
    state = tiny_state()
    hand = copy.deepcopy(state.model)
    opt = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    avg = [p.detach().clone() for p in hand.parameters()]
    step = ft.ema(0.9)(ft.train_step(classification_loss))
    first, _ = _run(step, state, batches[:3])
    ft.save_checkpoint(first, tmp_path / "e.ckpt")
    resumed, _ = _run(step, ft.restore(tiny_state(), tmp_path / "e.ckpt"), batches[3:])
    for x, y in batches:
        nn.functional.cross_entropy(hand(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch._foreach_lerp_(avg, [p.detach() for p in hand.parameters()], 0.1)
    assert _same(resumed.model, hand)
    averaged = list(resumed.extras["ema"].values())
    assert all(torch.equal(a, b) for a, b in zip(averaged, avg, strict=True))
    weights = [p.detach().clone() for p in resumed.model.parameters()]
    with ft.ema_weights(resumed) as inside:
        assert all(torch.equal(p, a) for p, a in zip(inside.model.parameters(), avg, strict=True))
    assert all(torch.equal(p, w) for p, w in zip(resumed.model.parameters(), weights, strict=True))
    exported = ft.ema_state_dict(resumed)
    assert torch.equal(exported["fc1.weight"], avg[0])
    with pytest.raises(KeyError, match="no averages under 'swa'"):
        ft.ema_state_dict(resumed, "swa")
    with pytest.raises(ValueError, match=r"ema: decay must be a number in \[0, 1\), got 1"):
        ft.ema(1)


# ------------------------------------------------------------ user wrappers


@ft.step_combinator
def _count_calls(step: Any) -> Any:
    def run(state: ft.TrainState, batch: Any) -> Any:
        state, metrics = step(state, batch)
        return state, {**metrics, "wrapped": torch.tensor(1.0)}

    return run


def test_a_user_wrapper_composes_with_builtins_in_any_order() -> None:
    """A step -> step function made with step_combinator, piped anywhere among the
    built-ins, gives the same parameters as the built-ins alone, and keeps its output."""
    batches = tiny_batches(8)
    reference, _ = _run(
        ft.train_step(classification_loss, accumulate=4, clip_norm=0.5), tiny_state(), batches
    )
    parts = [_count_calls, ft.accumulate(4), ft.clip_grad_norm(0.5)]
    for order in itertools.permutations(parts):
        step = toolz.pipe(ft.train_step(classification_loss), *order)
        assert isinstance(step, ft.WrappedStep), order
        state, history = _run(step, tiny_state(), batches)
        assert _same(state.model, reference.model), order
        assert "wrapped" in history[-1] and "grad_norm" in history[-1]
    with pytest.raises(ValueError, match="accumulate: the step already accumulates"):
        toolz.pipe(
            ft.train_step(classification_loss), ft.accumulate(2), _count_calls, ft.accumulate(2)
        )


def test_fit_flags_reach_the_step_inside_a_wrapper(tmp_path: Path) -> None:
    """fit's accumulate/clip flags configure the train step inside a user wrapper."""
    batches = tiny_batches(8)
    reference, _ = _run(
        ft.train_step(classification_loss, accumulate=4, clip_norm=0.5), tiny_state(), batches
    )
    result = ft.fit(
        tiny_state(),
        _count_calls(ft.train_step(classification_loss)),
        batches,
        max_epochs=1,
        accumulate_grad_batches=4,
        gradient_clip_val=0.5,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.step == 2
    assert _same(result.state.model, reference.model)


def test_a_plain_wrapper_is_refused_with_the_way_out() -> None:
    """A plain step -> step function hides its step: a combinator says how to expose it."""

    def plain(step: Any) -> Callable[..., Any]:
        return lambda state, batch: step(state, batch)

    with pytest.raises(TypeError, match=re.escape("built with ftrain.step_combinator")):
        ft.clip_grad_norm(1.0)(plain(ft.train_step(classification_loss)))
    with pytest.raises(TypeError, match="step_combinator: wrap must be callable"):
        ft.step_combinator(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transform: name must be a non-empty str"):
        ft.gradient_transform(lambda g, s, t: (g, s, {}), name="")
    with pytest.raises(ValueError, match="noise: the step already has a transform named 'noise'"):
        toolz.pipe(ft.train_step(classification_loss), _noisy(), _noisy())


# ------------------------------------------------------------ step outputs


def test_logged_loss_keeps_its_options_and_the_automatic_loss_can_be_renamed(
    tmp_path: Path,
) -> None:
    """(loss, {"loss": ft.log(loss, on_step=True, on_epoch=True)}) is kept as given, so
    fit reports loss_step and loss_epoch; loss_name renames or drops the automatic entry."""

    def logged(model: nn.Module, batch: Batch) -> Any:
        loss, _ = classification_loss(model, batch)
        return loss, {"loss": ft.log(loss, on_step=True, on_epoch=True)}

    _, metrics = ft.train_step(logged)(tiny_state(), tiny_batches(1)[0])
    assert isinstance(metrics["loss"], ft.Logged) and metrics["loss"].on_epoch
    result = ft.fit(
        tiny_state(), ft.train_step(logged), tiny_batches(4), max_epochs=1,
        default_root_dir=tmp_path, **QUIET,
    )  # fmt: skip
    assert {"loss_step", "loss_epoch"} <= set(result.metrics)
    _, renamed = ft.train_step(classification_loss, loss_name="train_loss")(
        tiny_state(), tiny_batches(1)[0]
    )
    assert sorted(renamed) == ["acc", "train_loss"]
    _, none = ft.train_step(classification_loss, loss_name=None)(tiny_state(), tiny_batches(1)[0])
    assert sorted(none) == ["acc"]
    with pytest.raises(ValueError, match="loss_name must be a non-empty str or None, got ''"):
        ft.train_step(classification_loss, loss_name="")
