"""The loop parts of ftrain.loop, with plain numbers: positions, intervals, stops, reducers."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ftrain as ft
from ftrain import loop
from ftrain.checkpoint import CheckpointInfo, Delete, Save


def _due(interval: loop.ValInterval, epochs: int, n: int) -> list[tuple[int, int]]:
    out = []
    for epoch in range(epochs):
        for pos in loop.Position.whole_epoch(epoch, n, first_total=epoch * n):
            if interval.due(pos):
                out.append((pos.epoch, pos.batch_idx))
    return out


# positions ------------------------------------------------------------------------


def test_batches_know_the_last_batch_sized_and_unsized() -> None:
    """batches() marks the last batch by count, or by reading one ahead without a count."""
    assert list(loop.batches("abcd", 3)) == [(0, "a", False), (1, "b", False), (2, "c", True)]
    assert list(loop.batches("ab", None)) == [(0, "a", False), (1, "b", True)]
    assert list(loop.batches("", None)) == []


def test_batches_resume_inside_an_epoch_and_stop_on_short_data() -> None:
    """A start index continues the numbering; data shorter than the count ends early."""
    assert list(loop.batches("xy", 4, start=2)) == [(2, "x", False), (3, "y", True)]
    assert list(loop.batches("x", 3)) == [(0, "x", False)]


def test_epoch_batches_and_reloads() -> None:
    """limit_train_batches and fast_dev_run cut an epoch; a factory reloads every n epochs."""
    assert loop.epoch_batches(10, 0.3) == 3
    assert loop.epoch_batches(10, 4) == 4
    assert loop.epoch_batches(None, 1.0) is None
    assert loop.epoch_batches(None, 1.0, fast_dev_batches=2) == 2
    with pytest.raises(ValueError, match="limit_train_batches"):
        loop.epoch_batches(None, 0.5)
    reloads, last = [], None
    for epoch in range(7):
        if loop.reload_due(epoch, last, 3):
            reloads.append(epoch)
            last = epoch
    assert reloads == [0, 3, 6]
    assert [e for e in range(4) if loop.reload_due(e, 0 if e else None, 0)] == [0]


# validation intervals ----------------------------------------------------------------


def test_fraction_int_and_epoch_end_intervals() -> None:
    """0.5 of 10 batches validates after batches 4 and 9; int 3 after 2, 5, 8; None at the end."""
    assert _due(loop.val_interval(0.5), 1, 10) == [(0, 4), (0, 9)]
    assert _due(loop.val_interval(3), 1, 10) == [(0, 2), (0, 5), (0, 8)]
    assert _due(loop.val_interval(None), 2, 4) == [(0, 3), (1, 3)]
    assert _due(loop.val_interval(1.0, 2), 4, 3) == [(1, 2), (3, 2)]


def test_int_interval_across_epochs() -> None:
    """check_val_every_n_epoch=None counts an int interval over all batches."""
    assert _due(loop.val_interval(4, None), 3, 3) == [(1, 0), (2, 1)]


def test_time_interval_follows_the_clock() -> None:
    """A time interval is due when the clock says so, or when the run is stopping."""
    v = loop.val_interval(datetime.timedelta(seconds=30))
    assert v.seconds == 30.0
    pos = loop.Position(0, 5, 5, 10, False)
    assert (v.due(pos), v.due(pos, time_due=True), v.due(pos, stopping=True)) == (False, True, True)
    assert loop.val_interval({"minutes": 2}).seconds == 120.0


def test_stopping_validates_once_more() -> None:
    """A stop request that takes effect now validates after this batch (Lightning)."""
    v = loop.val_interval(1.0)
    assert not v.due(loop.Position(0, 2, 2, 10, False))
    assert v.due(loop.Position(0, 2, 2, 10, False), stopping=True)
    assert not loop.val_interval(1.0, 2).due(loop.Position(0, 2, 2, 10, False), stopping=True)


def test_bad_intervals_are_refused() -> None:
    """Bad values fail naming the argument; an int longer than the epoch fails at its start."""
    with pytest.raises(ValueError, match="val_check_interval"):
        loop.val_interval(1.5)
    with pytest.raises(ValueError, match="val_check_interval"):
        loop.val_interval(0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        loop.val_interval(1.0, 0)
    with pytest.raises(ValueError, match="larger than the 4 training batches"):
        loop.val_interval(5).check_batch(4)
    with pytest.raises(ValueError, match="fraction"):
        loop.val_interval(0.5).check_batch(None)


def test_at_epoch_end() -> None:
    """Once per epoch at its end: the rhythm for epoch-triggered checkpoints at train end."""
    assert loop.val_interval(1.0).at_epoch_end and loop.val_interval(None).at_epoch_end
    assert not loop.val_interval(0.5).at_epoch_end
    assert not loop.val_interval(1.0, 2).at_epoch_end
    assert not loop.val_interval("00:00:00:10").at_epoch_end


@given(
    n=st.integers(1, 30),
    epochs=st.integers(1, 4),
    every=st.integers(1, 30),
    per_epoch=st.sampled_from([1, 2, None]),
)
def test_int_interval_is_lightnings_modulo_rule(
    n: int, epochs: int, every: int, per_epoch: int | None
) -> None:
    """An int interval validates when (index + 1) % every == 0, in validating epochs."""
    if per_epoch is not None and every > n:
        return
    v = loop.val_interval(every, per_epoch)
    expected = [
        (e, b)
        for e in range(epochs)
        for b in range(n)
        if (per_epoch is None or (e + 1) % per_epoch == 0)
        and ((e * n + b if per_epoch is None else b) + 1) % every == 0
    ]
    assert _due(v, epochs, n) == expected


@given(
    n=st.integers(1, 30),
    epochs=st.integers(1, 4),
    interval=st.one_of(
        st.integers(1, 30), st.floats(0.01, 1.0), st.none(), st.sampled_from([1.0, 0.5])
    ),
    per_epoch=st.sampled_from([1, 2, 3, None]),
)
def test_counted_is_due_before_an_epochs_last_batch(
    n: int, epochs: int, interval: int | float | None, per_epoch: int | None
) -> None:
    """``counted`` (fit's per-batch shortcut) gives ``due``'s answer at every batch but
    the epoch's last, without a stop."""
    if isinstance(interval, int) and per_epoch is not None and interval > n:
        return  # refused: longer than the epoch
    v = loop.val_interval(interval, per_epoch)
    for e in range(epochs):
        counted = v.counted(e, n)
        for b in range(n - 1):
            total = e * n + b
            by_count = counted is not None and ((total if counted[1] else b) + 1) % counted[0] == 0
            assert by_count == v.due(loop.Position(e, b, total, n, False)), (e, b)


# stop conditions -------------------------------------------------------------------


def test_stop_conditions_with_lightnings_defaults() -> None:
    """1000 epochs unless steps or time bound the run; min_steps alone implies min_epochs=1."""
    assert loop.stop_conditions().max_epochs == 1000
    assert loop.stop_conditions(max_steps=10).max_epochs == -1
    assert loop.stop_conditions(max_time="00:00:01:00").max_seconds == 60.0
    assert loop.stop_conditions(min_steps=5).min_epochs == 1
    stop = loop.stop_conditions(max_epochs=2, max_steps=7, min_epochs=1, min_steps=3)
    assert [stop.reached(epoch=e, step=s) for e, s in [(1, 6), (2, 0), (0, 7)]] == [
        False,
        True,
        True,
    ]
    assert not stop.may_stop(epochs_done=0, step=5)
    assert not stop.may_stop(epochs_done=1, step=2)
    assert stop.may_stop(epochs_done=1, step=3)
    assert not stop.out_of_time(1e9)
    assert loop.stop_conditions(max_time={"seconds": 5}).out_of_time(5.0)


def test_stop_conditions_refuse_bad_values() -> None:
    """A bad limit fails when built, naming it."""
    with pytest.raises(ValueError, match="max_steps"):
        loop.StopConditions(max_steps=-2)
    with pytest.raises(ValueError, match="min_steps"):
        loop.StopConditions(min_steps=-1)
    with pytest.raises(ValueError):
        loop.stop_conditions(max_epochs=-5)


# checkpoint reducers ---------------------------------------------------------------


def _val(r: loop.CheckpointReducer, states: list, step: int, epoch: int, loss: float):  # type: ignore[no-untyped-def]
    event = loop.checkpoint_event(
        "validation_end", step=step, epoch=epoch, batch_idx=1, metrics={"val_loss": loss}
    )
    return r.update(states, event)


def test_reducer_keeps_the_best_two_and_the_last() -> None:
    """top_k(2, val_loss) | last(): saves ranked files, deletes the worst, rewrites last."""
    r = loop.checkpoint_reducer(
        ft.checkpoint.top_k(2, "val_loss", filename="{step}") | ft.checkpoint.last()
    ).resolve(save_on_train_epoch_end=False)
    states = r.init()
    decisions = []
    for step, loss in [(2, 0.5), (4, 0.3), (6, 0.4), (8, 0.9)]:
        states, actions = _val(r, states, step, 0, loss)
        decisions.append([(type(a).__name__, a.name) for _, a in actions])
    assert decisions == [
        [("Save", "step=2.ckpt"), ("Save", "last.ckpt")],
        [("Save", "step=4.ckpt"), ("Save", "last.ckpt")],
        [("Save", "step=6.ckpt"), ("Save", "last.ckpt"), ("Delete", "step=2.ckpt")],
        [],
    ]
    assert r.best(states)[1:] == ("step=4.ckpt", 0.3)


def test_reducer_tags_actions_with_their_policy_and_recovers_from_files() -> None:
    """Two policies keep their own files; recover() rebuilds the states from file metadata."""
    r = loop.checkpoint_reducer(ft.checkpoint.last(), ft.checkpoint.every(n_train_steps=2))
    states = r.init()
    event = loop.checkpoint_event("train_step", step=2, epoch=0, batch_idx=2, metrics={})
    assert r.may_act(states, "train_step")
    states, actions = r.update(states, event)
    assert [(i, type(a).__name__) for i, a in actions] == [(1, "Save")]
    saved = [a.info for _, a in actions if isinstance(a, Save)]
    recovered = r.recover(None, [[], saved])
    assert r.best(recovered) == (1, saved[0].name, None)
    files = [CheckpointInfo("last.ckpt", 2, 0, {}, None, "last")]
    assert r.recover([r.init()[0]], [files, []])[0]["parts"]


def test_checkpoint_event_names_the_epoch_of_the_last_batch() -> None:
    """At an epoch boundary the counters point at the next epoch; the event does not."""
    e = loop.checkpoint_event("train_epoch_end", step=6, epoch=3, batch_idx=0, metrics={"a": 1.0})
    assert (e.epoch, e.metrics["epoch"], e.metrics["step"], e.metrics["a"]) == (2, 2, 6, 1.0)
    inside = loop.checkpoint_event("train_step", step=5, epoch=3, batch_idx=2, metrics={})
    assert inside.epoch == 3


def test_reducer_refuses_what_is_not_a_policy() -> None:
    """checkpoint_reducer takes ftrain.checkpoint policies only."""
    with pytest.raises(TypeError, match="checkpoint_reducer"):
        loop.checkpoint_reducer("last")  # type: ignore[arg-type]
    assert len(loop.checkpoint_reducer(default=True).policies) == 1
    assert isinstance(Delete("x.ckpt"), Delete)


def test_run_files_refuses_bad_arguments(tmp_path: Path) -> None:
    """RunFiles names the argument that is wrong and what it takes."""
    logger = ft.loggers.CSVLogger(str(tmp_path), version=0)
    with pytest.raises(TypeError, match="RunFiles: logger must be an ftrain logger"):
        loop.RunFiles(object(), ft.checkpoint.last())
    with pytest.raises(TypeError, match=r"RunFiles: policy must be an ftrain\.checkpoint policy"):
        loop.RunFiles(logger, "last")
    with pytest.raises(TypeError, match=r"RunFiles: interval must be a loop\.val_interval"):
        loop.RunFiles(logger, ft.checkpoint.last(), interval=0.5)  # type: ignore[arg-type]


def test_run_files_resumes_what_it_wrote(tmp_path: Path) -> None:
    """A state written at fit_end comes back through resume; rows of its step are carried."""
    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    files = loop.RunFiles(ft.loggers.CSVLogger(str(tmp_path), version=0), ft.checkpoint.last())
    assert files.resume(state) is state  # nothing written yet
    with torch.no_grad():
        net.weight.fill_(3.0)
    files.log({"loss": 0.5}, 2)
    [path] = files.checkpoint("fit_end", state.replace(step=2, epoch=1))
    files.close()
    with torch.no_grad():
        net.weight.zero_()
    again = loop.RunFiles(ft.loggers.CSVLogger(str(tmp_path), version=0), ft.checkpoint.last())
    resumed = again.resume(state)
    assert resumed.step == 2 and torch.equal(resumed.model.weight, torch.full((1, 2), 3.0))
    assert again.rows == [({"loss": 0.5}, 2)]
    assert Path(path).name == "last.ckpt"
