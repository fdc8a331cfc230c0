"""The driver's per-step fast path: a policy says whether a step event could act."""

from __future__ import annotations

import pytest

import ftrain as ft
from ftrain.checkpoint import Event


def test_epoch_policy_cannot_act_after_a_step() -> None:
    """An epoch-triggered policy never acts on "train_step" events, so none is built."""
    policy = ft.checkpoint.default_policy().resolve(save_on_train_epoch_end=True)
    state = policy.init()
    assert not policy.may_act(state, "train_step")
    assert policy.may_act(state, "train_epoch_end")
    for step in range(1, 20):
        state, actions = policy.update(state, Event("train_step", step, 0))
        assert actions == []


def test_step_and_time_triggers_can_act() -> None:
    """Step- and time-triggered policies may act after any step."""
    by_steps = ft.checkpoint.every(n_train_steps=5).resolve(save_on_train_epoch_end=True)
    by_time = ft.checkpoint.every(train_time_interval=60.0).resolve(save_on_train_epoch_end=True)
    assert by_steps.may_act(by_steps.init(), "train_step")
    assert by_time.may_act(by_time.init(), "train_step")


def test_a_save_put_off_keeps_step_events_eligible() -> None:
    """A step save put off for a monitor not yet logged stays due until it can happen."""
    policy = ft.checkpoint.ModelCheckpoint(monitor="val_loss", every_n_train_steps=5).resolve(
        save_on_train_epoch_end=True
    )
    state = policy.init()
    with pytest.warns(UserWarning, match="val_loss"):
        state, actions = policy.update(state, Event("train_step", 5, 0, metrics={}))
    assert actions == []
    assert any(p["pending"] for p in state["parts"])
    assert policy.may_act(state, "train_step")
    state, actions = policy.update(state, Event("train_step", 6, 0, metrics={"val_loss": 0.5}))
    assert [type(a).__name__ for a in actions] == ["Save"]
