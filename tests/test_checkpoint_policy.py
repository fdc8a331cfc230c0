"""Checkpoint policies as pure folds: which files exist after each event.

A directory is simulated as a dict name -> CheckpointInfo: each Save writes, then
each Delete removes. No model, no file, no torch.
"""

from __future__ import annotations

import copy
import datetime
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftrain.checkpoint import (
    CheckpointInfo,
    Delete,
    Event,
    MissingMetricError,
    ModelCheckpoint,
    Policy,
    Save,
    default_policy,
    every,
    last,
    top_k,
    union,
)

NAN = math.nan
Dir = dict[str, CheckpointInfo]


def apply(directory: Dir, actions: list[Save | Delete]) -> None:
    """Carry out actions like the driver: all Saves, then the Deletes of existing files."""
    kinds = [type(a) for a in actions]
    assert kinds == sorted(kinds, key=lambda k: k is Delete), "Saves must come before Deletes"
    saved = {a.name for a in actions if isinstance(a, Save)}
    for action in actions:
        if isinstance(action, Save):
            directory[action.name] = action.info
        else:
            assert action.name not in saved, "never delete the file being saved"
            assert action.name in directory, f"delete of unknown file {action.name}"
            del directory[action.name]


def fold(
    policy: Policy,
    events: Iterable[Event],
    state: Mapping[str, Any] | None = None,
    directory: Dir | None = None,
) -> tuple[dict[str, Any], Dir, list[list[Save | Delete]]]:
    """Run events through the policy; returns the final state, directory and actions."""
    pstate = policy.init() if state is None else state
    directory = {} if directory is None else directory
    log = []
    for event in events:
        pstate, actions = policy.update(pstate, event)
        apply(directory, actions)
        log.append(actions)
        own = {f["name"] for part in pstate["parts"] for f in part["files"]}
        assert own <= set(directory), "the state lists only files that exist"
    return pstate, directory, log


def epochs(
    val_losses: list[float],
    steps_per_epoch: int = 2,
    *,
    seconds_per_step: float = 1.0,
    train_metric: bool = False,
) -> list[Event]:
    """Lightning's order per epoch: train steps, validation_end, train_epoch_end."""
    events = []
    step, metrics = 0, {}
    for epoch, value in enumerate(val_losses):
        for batch in range(steps_per_epoch):
            step += 1
            if train_metric:
                metrics = {**metrics, "loss": 1.0 / step}
            events.append(Event("train_step", step, epoch, batch, step * seconds_per_step, metrics))
        metrics = {**metrics, "val_loss": value}
        last_batch = steps_per_epoch - 1
        for stage in ("validation_end", "train_epoch_end"):
            events.append(Event(stage, step, epoch, last_batch, step * seconds_per_step, metrics))
    return events


def files_after_each_epoch(policy: Policy, val_losses: list[float]) -> list[list[str]]:
    """Sorted directory listing after each epoch's events."""
    pstate, directory, listing = policy.init(), {}, []
    events = epochs(val_losses)
    for i in range(0, len(events), 4):
        pstate, directory, _ = fold(policy, events[i : i + 4], pstate, directory)
        listing.append(sorted(directory))
    return listing


def val_end(k: int | None = None, **kw: Any) -> Policy:
    """A monitored top-k policy saving at validation end."""
    return top_k(k if k is not None else 1, "val_loss", save_on_train_epoch_end=False, **kw)


# --------------------------------------------------------------------------- top-k


def test_top1_min_keeps_the_best() -> None:
    """k=1, mode=min: a better score replaces the file; worse scores save nothing."""
    listing = files_after_each_epoch(val_end(1), [0.5, 0.4, 0.6, 0.3])
    assert listing == [
        ["epoch=0-step=2.ckpt"],
        ["epoch=1-step=4.ckpt"],
        ["epoch=1-step=4.ckpt"],
        ["epoch=3-step=8.ckpt"],
    ]


def test_top3_min_evicts_the_worst() -> None:
    """k=3: fill up to three, then a save must beat the third best, which is deleted."""
    listing = files_after_each_epoch(val_end(3), [0.5, 0.4, 0.6, 0.3, 0.7, 0.45])
    assert listing[2] == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]
    assert listing[3] == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]
    assert listing[4] == listing[3]
    assert listing[5] == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt", "epoch=5-step=12.ckpt"]


def test_top2_max_keeps_the_largest() -> None:
    """mode=max ranks larger values first."""
    listing = files_after_each_epoch(val_end(2, mode="max"), [0.5, 0.4, 0.6, 0.3, 0.9])
    assert listing[-1] == ["epoch=2-step=6.ckpt", "epoch=4-step=10.ckpt"]


def test_best_and_best_score() -> None:
    """best() names the best file and best_score() its value, as a Python float."""
    policy = val_end(2)
    pstate, _, _ = fold(policy, epochs([0.5, 0.25, 0.4]))
    assert policy.best(pstate) == "epoch=1-step=4.ckpt"
    assert policy.best_score(pstate) == 0.25
    assert policy.best(policy.init()) is None
    assert policy.best_score(policy.init()) is None


def test_keep_all() -> None:
    """k=-1 saves at every trigger and deletes nothing, still tracking the best."""
    policy = val_end(-1)
    pstate, directory, _ = fold(policy, epochs([0.5, 0.6, 0.4, 0.7]))
    assert len(directory) == 4
    assert policy.best(pstate) == "epoch=2-step=6.ckpt"


def test_k0_saves_nothing() -> None:
    """k=0 never writes a file."""
    _, directory, _ = fold(val_end(0), epochs([0.5, 0.4, 0.3]))
    assert directory == {}


def test_ties_keep_the_older() -> None:
    """A score equal to the k-th best is not saved (strict comparison)."""
    assert files_after_each_epoch(val_end(1), [0.5, 0.5])[-1] == ["epoch=0-step=2.ckpt"]
    listing = files_after_each_epoch(val_end(2), [0.3, 0.5, 0.5, 0.4])
    assert listing[2] == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
    assert listing[3] == ["epoch=0-step=2.ckpt", "epoch=3-step=8.ckpt"]


def test_nan_never_saved_nor_named_and_warned_once() -> None:
    """NaN scores are skipped with one warning; later finite scores are ranked normally."""
    policy = val_end(-1)
    with pytest.warns(UserWarning, match="NaN scores are never saved") as record:
        pstate, directory, _ = fold(policy, epochs([NAN, 0.5, NAN, 0.4]))
    assert len([w for w in record if "NaN" in str(w.message)]) == 1
    assert sorted(directory) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]
    assert not any("nan" in name for name in directory)
    assert policy.best_score(pstate) == 0.4


def test_nan_does_not_count_towards_k() -> None:
    """With k=1 a NaN neither replaces the best nor blocks a later better score."""
    with pytest.warns(UserWarning, match="NaN"):
        listing = files_after_each_epoch(val_end(1), [0.5, NAN, 0.4])
    assert listing == [["epoch=0-step=2.ckpt"], ["epoch=0-step=2.ckpt"], ["epoch=2-step=6.ckpt"]]


def test_monitor_none_keeps_newest() -> None:
    """monitor=None, k=1: each save replaces the previous; best() is the newest."""
    policy = ModelCheckpoint(save_on_train_epoch_end=True)
    listing = files_after_each_epoch(policy, [0.5, 0.4, 0.6])
    assert listing == [["epoch=0-step=2.ckpt"], ["epoch=1-step=4.ckpt"], ["epoch=2-step=6.ckpt"]]
    pstate, _, _ = fold(policy, epochs([0.5, 0.4, 0.6]))
    assert policy.best(pstate) == "epoch=2-step=6.ckpt"
    assert policy.best_score(pstate) is None


def test_monitor_none_keep_all() -> None:
    """monitor=None, k=-1 keeps every epoch's file."""
    policy = ModelCheckpoint(save_top_k=-1, save_on_train_epoch_end=True)
    _, directory, _ = fold(policy, epochs([0.5, 0.4, 0.6]))
    assert len(directory) == 3


def test_template_and_metrics_in_info() -> None:
    """Files are named by the template; the info records step, epoch, score and metrics."""
    policy = val_end(1, filename="{epoch:02d}-{val_loss:.2f}")
    _, directory, _ = fold(policy, epochs([0.25]))
    (info,) = directory.values()
    assert info.name == "epoch=00-val_loss=0.25.ckpt"
    assert (info.step, info.epoch, info.score, info.kind) == (2, 0, 0.25, "top_k")
    assert info.metrics == {"val_loss": 0.25}


# --------------------------------------------------------------------------- triggers


def test_every_n_train_steps_counts_optimizer_steps() -> None:
    """A step trigger fires after optimizer steps with step % n == 0, not at epoch ends."""
    policy = every(n_train_steps=3)
    _, directory, _ = fold(policy, epochs([0.5] * 4, steps_per_epoch=2))
    assert sorted(i.step for i in directory.values()) == [3, 6]


@pytest.mark.parametrize("on_train_epoch_end", [True, False])
def test_every_n_epochs(on_train_epoch_end: bool) -> None:
    """Epoch trigger when (epoch + 1) % n == 0, at the stage save_on_train_epoch_end picks."""
    policy = every(n_epochs=2, save_on_train_epoch_end=on_train_epoch_end)
    _, directory, log = fold(policy, epochs([0.5] * 5))
    assert sorted(i.epoch for i in directory.values()) == [1, 3]
    stages = [e.stage for e, acts in zip(epochs([0.5] * 5), log, strict=True) if acts]
    expected = "train_epoch_end" if on_train_epoch_end else "validation_end"
    assert stages == [expected, expected]


def test_resolve_decides_only_undecided() -> None:
    """resolve() fills save_on_train_epoch_end=None and keeps explicit choices."""
    policy = every(n_epochs=1) | top_k(1, kind="b", save_on_train_epoch_end=False)
    resolved = policy.resolve(True)
    assert [p.trigger.save_on_train_epoch_end for p in resolved.parts] == [True, False]


def test_unresolved_epoch_trigger_is_an_error() -> None:
    """An epoch trigger with save_on_train_epoch_end=None asks for resolve()."""
    policy = ModelCheckpoint()
    with pytest.raises(ValueError, match=r"must call policy.resolve"):
        policy.update(policy.init(), Event("validation_end", 2, 0))


def test_train_time_interval() -> None:
    """A time trigger fires once the interval passed since the newest save."""
    policy = every(train_time_interval=2.5)
    events = [Event("train_step", s, 0, s, float(s)) for s in range(1, 11)]
    _, directory, _ = fold(policy, events)
    assert sorted(i.step for i in directory.values()) == [3, 6, 9]
    same = every(train_time_interval=datetime.timedelta(seconds=2.5))
    assert fold(same, events)[1] == directory


def test_never_twice_at_the_same_step_nor_at_step_0() -> None:
    """A second trigger at the same global step, or any at step 0, saves nothing."""
    policy = val_end(-1)
    events = [
        Event("validation_end", 0, 0, 0, 0.0, {"val_loss": 0.1}),
        Event("validation_end", 3, 0, 2, 3.0, {"val_loss": 0.5}),
        Event("validation_end", 3, 0, 2, 4.0, {"val_loss": 0.4}),
    ]
    _, _, log = fold(policy, events)
    assert [len(a) for a in log] == [0, 1, 0]


def test_missing_monitor_defers_to_next_point() -> None:
    """A step save due before the first validation is made at validation end (warned once)."""
    policy = top_k(1, "val_loss", every_n_train_steps=1)
    events = epochs([0.5, 0.4], steps_per_epoch=3, train_metric=True)
    with pytest.warns(UserWarning, match=r"\['val_loss'\] not logged yet") as record:
        _, _, log = fold(policy, events)
    assert len(record) == 1
    first_save = next(i for i, acts in enumerate(log) if acts)
    assert events[first_save].stage == "validation_end"
    assert [a.name for a in log[first_save]] == ["epoch=0-step=3.ckpt"]


def test_missing_monitor_at_validation_end_is_an_error() -> None:
    """At validation end a monitor that was not logged raises, listing the logged names."""
    policy = top_k(1, "val_los", save_on_train_epoch_end=False)
    event = Event("validation_end", 2, 0, metrics={"val_loss": 0.3, "loss": 1.0})
    with pytest.raises(MissingMetricError, match=r"'val_los'.*\['loss', 'val_loss'\]"):
        policy.update(policy.init(), event)


def test_missing_template_metric() -> None:
    """A template metric is required like the monitor: deferred, then an error at validation."""
    policy = ModelCheckpoint(filename="{epoch}-{acc:.2f}", every_n_train_steps=1)
    assert policy.required_metrics == ("acc",)
    with pytest.warns(UserWarning, match="not logged yet"):
        pstate, actions = policy.update(policy.init(), Event("train_step", 1, 0))
    assert actions == []
    with pytest.raises(MissingMetricError, match="'acc'"):
        policy.update(pstate, Event("validation_end", 1, 0, metrics={"loss": 1.0}))


def test_required_metrics() -> None:
    """Monitors and template names, without epoch/step, without repeats."""
    policy = top_k(2, "val_loss", filename="{epoch}-{val_loss:.2f}-{acc}") | last()
    assert policy.required_metrics == ("val_loss", "acc")
    assert default_policy().required_metrics == ()


# --------------------------------------------------------------------------- last


def test_last_alone_saves_at_fit_end_and_interrupt() -> None:
    """last() with no trigger writes last.ckpt only at fit_end / interrupt."""
    policy = last()
    _, directory, _ = fold(policy, epochs([0.5, 0.4]))
    assert directory == {}
    pstate, actions = policy.update(policy.init(), Event("interrupt", 3, 1))
    assert [a.name for a in actions] == ["last.ckpt"]
    _, actions = policy.update(pstate, Event("fit_end", 5, 2))
    assert [a.name for a in actions] == ["last.ckpt"]


def test_last_holds_the_newest_state_not_the_best() -> None:
    """With monitor and k=1, last.ckpt holds the final state, the top-k file the best."""
    policy = ModelCheckpoint(monitor="val_loss", save_last=True).resolve(False)
    events = [*epochs([0.3, 0.5, 0.6]), Event("fit_end", 6, 2, 1, 6.0, {"val_loss": 0.6})]
    pstate, directory, _ = fold(policy, events)
    assert directory["last.ckpt"].step == 6
    assert policy.best(pstate) == "epoch=0-step=2.ckpt"
    assert policy.last(pstate) == "last.ckpt"


def test_last_follows_siblings() -> None:
    """In a union, last.ckpt is rewritten whenever another part saves."""
    policy = every(n_train_steps=2) | last()
    _, _, log = fold(policy, [Event("train_step", s, 0, s) for s in range(1, 5)])
    assert [[a.name for a in acts] for acts in log] == [
        [],
        ["epoch=0-step=2.ckpt", "last.ckpt"],
        [],
        ["epoch=0-step=4.ckpt", "last.ckpt"],
    ]


def test_last_refreshed_at_end_with_sparse_epochs() -> None:
    """every_n_epochs=3, save_top_k=0, save_last: last.ckpt holds the final step, 0-based epoch."""
    policy = ModelCheckpoint(save_top_k=0, save_last=True, every_n_epochs=3).resolve(True)
    events = [*epochs([0.5] * 4), Event("fit_end", 8, 3, 1, 8.0)]
    _, directory, _ = fold(policy, events)
    assert sorted(directory) == ["last.ckpt"]
    assert (directory["last.ckpt"].step, directory["last.ckpt"].epoch) == (8, 3)


def test_last_not_rewritten_at_same_step() -> None:
    """fit_end right after a save at the same step writes nothing more."""
    policy = ModelCheckpoint(save_last=True).resolve(True)
    events = [*epochs([0.5]), Event("fit_end", 2, 0, 1, 2.0)]
    _, _, log = fold(policy, events)
    assert log[-1] == []


# --------------------------------------------------------------------------- ends


def test_default_policy_is_lightnings_default() -> None:
    """The default keeps only the newest epoch=E-step=S.ckpt, saved every epoch."""
    policy = default_policy().resolve(True)
    listing = files_after_each_epoch(policy, [0.5, 0.4, 0.6])
    assert listing[-1] == ["epoch=2-step=6.ckpt"]
    assert policy.required_metrics == ()


def test_default_policy_saves_on_interrupt() -> None:
    """Ctrl+C mid-epoch leaves the interrupted state as the only file (resumable)."""
    policy = default_policy().resolve(True)
    events = [*epochs([0.5]), Event("train_step", 3, 1, 0, 3.0), Event("interrupt", 3, 1, 0, 3.0)]
    pstate, directory, log = fold(policy, events)
    assert [type(a).__name__ for a in log[-1]] == ["Save", "Delete"]
    assert sorted(directory) == ["epoch=1-step=3.ckpt"]
    assert policy.last(pstate) == "epoch=1-step=3.ckpt"


def test_default_policy_saves_final_state_at_fit_end() -> None:
    """Stopped mid-epoch by max_steps, the final state is saved at fit_end."""
    policy = default_policy().resolve(True)
    events = [*epochs([0.5]), Event("train_step", 3, 1, 0, 3.0), Event("fit_end", 3, 1, 0, 3.0)]
    _, directory, _ = fold(policy, events)
    assert [i.step for i in directory.values()] == [3]


def test_interrupt_at_saved_step_writes_nothing() -> None:
    """An interrupt at a step already on disk saves nothing."""
    policy = default_policy().resolve(True)
    _, _, log = fold(policy, [*epochs([0.5]), Event("interrupt", 2, 0, 1, 2.0)])
    assert log[-1] == []


def test_lightning_default_without_exception_save() -> None:
    """ModelCheckpoint() itself (save_on_exception=False) does not save on interrupt."""
    policy = ModelCheckpoint().resolve(True)
    _, _, log = fold(policy, [*epochs([0.5]), Event("interrupt", 3, 1, 0, 3.0)])
    assert log[-1] == []


def test_exception_save_with_monitor_is_unranked_and_temporary() -> None:
    """With a monitor the interrupt save is not ranked, and goes at the next ranked save."""
    policy = val_end(1, save_on_exception=True, filename="{epoch}-{val_loss:.2f}")
    events = [
        *epochs([0.5]),
        Event("train_step", 3, 1, 0, 3.0, {"val_loss": NAN}),
        Event("interrupt", 3, 1, 0, 3.0, {"val_loss": NAN}),
    ]
    pstate, directory, _ = fold(policy, events)
    assert sorted(directory) == ["epoch=0-val_loss=0.50.ckpt", "epoch=1-step=3.ckpt"]
    assert directory["epoch=1-step=3.ckpt"].score is None
    assert policy.best(pstate) == "epoch=0-val_loss=0.50.ckpt"
    assert policy.last(pstate) == "epoch=1-step=3.ckpt"
    later = Event("validation_end", 4, 1, 1, 4.0, {"val_loss": 0.4})
    _, directory, _ = fold(policy, [later], pstate, directory)
    assert sorted(directory) == ["epoch=1-val_loss=0.40.ckpt"]


# --------------------------------------------------------------------------- union


def test_union_parts_keep_their_own_files() -> None:
    """Each part deletes only files of its own kind; names never collide."""
    policy = (every(n_train_steps=2) | top_k(1, every_n_train_steps=2) | last()).resolve(True)
    events = [Event("train_step", s, 0, s) for s in range(1, 7)]
    pstate, directory, _ = fold(policy, events)
    assert sorted(directory) == [
        "epoch=0-step=2.ckpt",
        "epoch=0-step=4.ckpt",
        "epoch=0-step=6-v1.ckpt",
        "epoch=0-step=6.ckpt",
        "last.ckpt",
    ]
    kinds = {name: info.kind for name, info in directory.items()}
    assert kinds["epoch=0-step=6-v1.ckpt"] == "top_k"
    assert policy.best(pstate) == "epoch=0-step=6.ckpt"  # no monitor: the first part's newest
    monitored = (every(n_train_steps=2) | val_end(1)).resolve(False)
    pstate, _, _ = fold(monitored, epochs([0.5, 0.4]))
    assert monitored.best(pstate) == "epoch=1-step=4-v1.ckpt"


def test_union_operator_and_function_agree() -> None:
    """a | b equals union(a, b); union flattens."""
    a, b, c = every(n_epochs=2), top_k(2, "val_loss"), last()
    assert (a | b | c) == union(a, union(b, c))
    assert union(a) == a


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: top_k(1) | ModelCheckpoint(), "two parts keep files of kind 'top_k'"),
        (lambda: last() | last(), "kind 'last'"),
        (lambda: top_k(1, dirpath="a") | last(dirpath="b"), "different dirpaths"),
        (lambda: top_k(1, save_weights_only=True) | last(), "save_weights_only"),
        (lambda: union(), "at least one policy"),
    ],
)
def test_union_errors(make: Any, match: str) -> None:
    """Conflicting unions are refused with a message saying why."""
    with pytest.raises(ValueError, match=match):
        make()


def test_union_keeps_common_dirpath() -> None:
    """A dirpath given by one part is the union's; weights-only agrees when stated on both."""
    policy = top_k(1, dirpath="ck", save_weights_only=True) | last(save_weights_only=True)
    assert (policy.dirpath, policy.save_weights_only) == ("ck", True)


# --------------------------------------------------------------------------- versions


def test_version_counter_alternates_fixed_names() -> None:
    """A fixed name with the counter on: the new file is best-v1 while best exists."""
    policy = val_end(1, filename="best")
    listing = files_after_each_epoch(policy, [0.5, 0.4, 0.3])
    assert listing == [["best.ckpt"], ["best-v1.ckpt"], ["best.ckpt"]]


def test_version_counter_off_overwrites_own_file() -> None:
    """With the counter off, the same name is rewritten in place, with no Delete."""
    policy = val_end(1, filename="best", enable_version_counter=False)
    _, directory, log = fold(policy, epochs([0.5, 0.4]))
    assert sorted(directory) == ["best.ckpt"]
    assert directory["best.ckpt"].score == 0.4
    assert not any(isinstance(a, Delete) for acts in log for a in acts)


def test_foreign_files_are_never_touched() -> None:
    """Files the policy did not create are neither deleted nor overwritten."""
    policy = ModelCheckpoint(save_last=True, enable_version_counter=False).resolve(True)
    foreign = CheckpointInfo("last.ckpt", 9, 9, {}, None, "someone_else")
    unreadable = CheckpointInfo("epoch=0-step=2.ckpt", 1, 0, {}, None, "unreadable")
    directory = {"last.ckpt": foreign, "epoch=0-step=2.ckpt": unreadable}
    pstate = policy.recover(None, [foreign], existing=["epoch=0-step=2.ckpt", "notes.txt"])
    _, directory, log = fold(policy, epochs([0.5, 0.4]), pstate, directory)
    names = [a.name for acts in log for a in acts if isinstance(a, Save)]
    assert names[:2] == ["epoch=0-step=2-v1.ckpt", "last-v1.ckpt"]
    assert directory["last.ckpt"] is foreign
    assert directory["epoch=0-step=2.ckpt"] is unreadable
    assert sorted(directory) == [
        "epoch=0-step=2.ckpt",
        "epoch=1-step=4.ckpt",
        "last-v1.ckpt",
        "last.ckpt",
    ]


# --------------------------------------------------------------------------- state


def plain(value: object) -> bool:
    """True when value is built from dict/list/str/int/float/bool/None only."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_state_is_plain_and_update_is_pure() -> None:
    """The state holds only plain Python values; update never changes its input."""
    policy = (top_k(2, "val_loss") | last()).resolve(False)
    pstate = policy.init()
    for event in epochs([0.5, 0.4, 0.6]):
        before = copy.deepcopy(pstate)
        new, _ = policy.update(pstate, event)
        assert pstate == before
        assert plain(new)
        pstate = new


def test_wrong_state_is_refused() -> None:
    """A state made by another policy is refused with a hint."""
    with pytest.raises(ValueError, match="does not match this policy"):
        last().update(top_k(1).init(), Event("fit_end", 1, 0))


def test_recover_is_identity_on_a_consistent_directory() -> None:
    """recover(state, infos of the directory) gives back the same state."""
    policy = (top_k(2, "val_loss") | every(n_train_steps=3) | last()).resolve(False)
    pstate, directory, _ = fold(policy, epochs([0.5, 0.4, 0.6, 0.3]))
    assert policy.recover(pstate, list(directory.values())) == pstate
    without = policy.recover(None, reversed(list(directory.values())))
    assert without["parts"] == [
        {**part, "warned": [], "pending": False} for part in pstate["parts"]
    ]


def test_recover_finishes_an_interrupted_eviction() -> None:
    """A crash between a Save and its Delete leaves k+1 files; the next update deletes one."""
    policy = val_end(1)
    pstate, directory, _ = fold(policy, epochs([0.5]))
    pstate, actions = policy.update(pstate, epochs([0.5, 0.4])[6])
    assert [type(a) for a in actions] == [Save, Delete]
    apply(directory, actions[:1])  # crash before the Delete
    recovered = policy.recover(None, directory.values())
    _, actions = policy.update(recovered, Event("train_step", 5, 2, 0, 5.0))
    assert actions == [Delete("epoch=0-step=2.ckpt")]


def test_recover_keeps_a_pending_save() -> None:
    """A save put off for a missing metric survives a restart through the stored state."""
    policy = ModelCheckpoint(monitor="val_loss", every_n_train_steps=1, save_last=True)
    with pytest.warns(UserWarning, match="not logged yet"):
        pstate, actions = policy.update(policy.init(), Event("train_step", 1, 0, 0, 1.0))
    assert [a.name for a in actions] == ["last.ckpt"]  # the file the run resumes from
    infos = [a.info for a in actions if isinstance(a, Save)]
    val = Event("validation_end", 1, 0, 0, 1.0, {"val_loss": 0.5})
    for stored, expected in ((pstate, ["epoch=0-step=1.ckpt"]), (None, [])):
        recovered = policy.recover(stored, infos)
        _, actions = policy.update(recovered, val)
        assert [a.name for a in actions] == expected


# --------------------------------------------------------------------------- property

POLICIES = [
    default_policy(),
    ModelCheckpoint(monitor="val_loss"),
    ModelCheckpoint(monitor="val_loss", save_top_k=3, save_last=True),
    ModelCheckpoint(monitor="val_loss", save_top_k=2, mode="max", save_on_exception=True),
    ModelCheckpoint(monitor="val_loss", save_top_k=-1, every_n_epochs=2),
    ModelCheckpoint(monitor="val_loss", save_top_k=2, every_n_train_steps=3, save_last=True),
    ModelCheckpoint(save_top_k=-1, train_time_interval=2.5, save_on_exception=True),
    ModelCheckpoint(save_top_k=0, save_last=True, every_n_epochs=2),
    every(n_train_steps=2) | top_k(2, "val_loss") | last(),
]
VALUES = st.sampled_from([0.1, 0.2, 0.2, 0.3, 0.5, NAN])


@st.composite
def runs(draw: st.DrawFn) -> list[Event]:
    """Epochs of train steps, optional mid-epoch validations, then fit_end or interrupt."""
    n_epochs, n_steps = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    events: list[Event] = []
    step, elapsed, metrics = 0, 0.0, {}
    for epoch in range(n_epochs):
        for batch in range(n_steps):
            step += 1
            elapsed += draw(st.sampled_from([0.5, 1.0, 2.0]))
            metrics = {**metrics, "loss": draw(VALUES)}
            events.append(Event("train_step", step, epoch, batch, elapsed, metrics))
            if draw(st.integers(0, 4)) == 0:
                metrics = {**metrics, "val_loss": draw(VALUES)}
                events.append(Event("validation_end", step, epoch, batch, elapsed, metrics))
        metrics = {**metrics, "val_loss": draw(VALUES)}
        for stage in ("validation_end", "train_epoch_end"):
            events.append(Event(stage, step, epoch, n_steps - 1, elapsed, metrics))
    end = draw(st.sampled_from(["fit_end", "interrupt"]))
    events.append(Event(end, step, n_epochs - 1, n_steps - 1, elapsed, metrics))
    return events


@settings(max_examples=1000, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    on_train_epoch_end=st.booleans(),
    events=runs(),
    data=st.data(),
)
def test_resume_after_crash_matches_uninterrupted(
    policy: Policy, on_train_epoch_end: bool, events: list[Event], data: st.DataObject
) -> None:
    """Crash anywhere (even between a Save and its Deletes), resume from the newest file.

    The resumed run restores the policy state stored in that file, recovers from the
    files on disk and replays the events after it; it ends with the same files
    (names, steps, kinds, scores), the same best and the same last as a run without
    a crash.
    """
    policy = policy.resolve(on_train_epoch_end)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full_state, full_dir, _ = fold(policy, events)

        crash = data.draw(st.integers(0, len(events) - 2), label="crash event")
        directory: Dir = {}
        stored: dict[str, tuple[int, int, dict[str, Any]]] = {}  # name -> (write no., event, state)
        pstate = policy.init()
        writes = 0
        for i, event in enumerate(events[: crash + 1]):
            pstate, actions = policy.update(pstate, event)
            saves = [a for a in actions if isinstance(a, Save)]
            done = len(actions)
            if i == crash:  # all Saves or none committed, then any part of the Deletes
                done = data.draw(
                    st.sampled_from([0, *range(len(saves), len(actions) + 1)]), label="actions"
                )
            apply(directory, actions[:done])
            for action in actions[:done]:
                if isinstance(action, Save):
                    writes += 1
                    stored[action.name] = (writes, i, pstate)
        on_disk = {name: stored[name] for name in directory}
        if on_disk:
            _, resume_event, resume_state = max(on_disk.values(), key=lambda v: v[0])
        else:
            resume_event, resume_state = -1, None
        recovered = policy.recover(resume_state, list(directory.values()))
        end_state, end_dir, _ = fold(policy, events[resume_event + 1 :], recovered, directory)

    def summary(d: Dir) -> dict[str, tuple[int, float | None, str]]:
        return {name: (i.step, i.score, i.kind) for name, i in d.items()}

    assert summary(end_dir) == summary(full_dir)
    assert policy.best(end_state) == policy.best(full_state)
    assert policy.last(end_state) == policy.last(full_state)


@settings(max_examples=100, deadline=None)
@given(policy=st.sampled_from(POLICIES), events=runs())
def test_newest_saved_state_is_always_kept(policy: Policy, events: list[Event]) -> None:
    """After every update, each part still has its newest saved file on disk."""
    policy = policy.resolve(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pstate, directory = policy.init(), {}
        newest: dict[str, int] = {}
        for event in events:
            pstate, actions = policy.update(pstate, event)
            apply(directory, actions)
            for action in actions:
                if isinstance(action, Save):
                    newest[action.info.kind] = action.info.step
            for kind, step in newest.items():
                assert any(i.kind == kind and i.step == step for i in directory.values())


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_top_k": -2}, r"ModelCheckpoint: save_top_k must be an int >= -1, got -2"),
        ({"save_top_k": 1.5}, r"save_top_k must be an int >= -1, got 1.5"),
        ({"every_n_train_steps": -1}, r"every_n_train_steps must be an int >= 0, got -1"),
        ({"every_n_epochs": -3}, r"every_n_epochs must be an int >= 0, got -3"),
        (
            {"every_n_train_steps": 10, "every_n_epochs": 2},
            r"every_n_train_steps=10, every_n_epochs=2 and train_time_interval=None "
            r"are mutually exclusive",
        ),
        (
            {"every_n_epochs": 1, "train_time_interval": 60.0},
            r"mutually exclusive; set at most one",
        ),
        ({"train_time_interval": 0}, r"train_time_interval must be a positive number of seconds"),
        (
            {"save_top_k": 3},
            r"save_top_k=3 needs a monitor to rank checkpoints; with monitor=None, "
            r"save_top_k must be -1, 0 or 1",
        ),
        ({"monitor": "val_loss", "mode": "avg"}, r"mode must be 'min' or 'max', got 'avg'"),
        ({"monitor": ""}, r"monitor must be None or a metric name, got ''"),
        ({"filename": "{epoch"}, r"ModelCheckpoint: filename: filename template '\{epoch'"),
        ({"filename": "{val_loss:q}"}, r"bad format spec 'q'"),
        ({"save_last": "copy"}, r"save_last must be None, False, True or 'link', got 'copy'"),
        ({"dirpath": "nosuch://bucket/ckpts"}, r"dirpath='nosuch://bucket/ckpts': fsspec cannot"),
        ({"save_weights_only": 1}, r"save_weights_only must be a bool, got 1"),
        ({"auto_insert_metric_name": None}, r"auto_insert_metric_name must be a bool"),
        ({"save_on_train_epoch_end": "yes"}, r"save_on_train_epoch_end must be None or a bool"),
    ],
)
def test_model_checkpoint_errors(kwargs: dict[str, Any], match: str) -> None:
    """Each bad argument is refused naming the argument, accepted values and the value."""
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(**kwargs)


def test_zero_intervals_are_allowed() -> None:
    """Lightning's 0 means 'off': every_n_epochs=0 alone is a policy that never triggers."""
    policy = ModelCheckpoint(every_n_epochs=0, save_last=True).resolve(True)
    _, directory, _ = fold(policy, [*epochs([0.5]), Event("fit_end", 2, 0, 1, 2.0)])
    assert sorted(directory) == ["last.ckpt"]


def test_no_trigger_means_every_epoch() -> None:
    """With no trigger given, every_n_epochs is 1 and the others off."""
    trigger = ModelCheckpoint().parts[0].trigger
    assert (trigger.every_n_epochs, trigger.every_n_train_steps) == (1, 0)
    assert trigger.train_time_interval is None


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: top_k(3), r"top_k: save_top_k=3 needs a monitor"),
        (lambda: top_k(1, save_last=True), r"top_k: save_last is not an option here"),
        (lambda: top_k(1, kind=""), r"top_k: kind must be a non-empty str"),
        (lambda: every(n_train_steps=-1), r"every: n_train_steps must be None or an int >= 0"),
        (lambda: every(monitor="x"), r"every: monitor is not an option here"),
        (lambda: every(n_train_steps=2, n_epochs=1), r"every: .*mutually exclusive"),
        (lambda: last(every_n_epochs=-1), r"last: every_n_epochs must be an int >= 0"),
        (lambda: Event("step", 1, 0), r"stage must be one of \['train_step'"),
        (lambda: Event("train_step", -1, 0), r"step must be an int >= 0, got -1"),
        (lambda: Event("train_step", 1, 0, elapsed=-1.0), r"elapsed must be a number"),
        (lambda: CheckpointInfo("a/b.ckpt", 1, 0, {}, None, "k"), r"name must be a non-empty"),
        (
            lambda: Save("a.ckpt", CheckpointInfo("b.ckpt", 1, 0, {}, None, "k")),
            r"name 'a.ckpt' differs from info.name 'b.ckpt'",
        ),
        (lambda: CheckpointInfo.from_dict({"name": "a.ckpt"}), r"not a checkpoint info"),
    ],
)
def test_builder_and_value_errors(make: Any, match: str) -> None:
    """Builders and values refuse bad input with a message naming the field."""
    with pytest.raises(ValueError, match=match):
        make()


def test_event_metrics_dict_is_copied() -> None:
    """Event copies a metrics dict; a non-number is refused when a file records it."""
    source = {"a": 1.5}
    event = Event("train_step", 1, 0, metrics=source)
    source["a"] = 2.0
    assert event.metrics == {"a": 1.5}
    bad = Event("fit_end", 1, 0, metrics={"a": "x"})
    with pytest.raises(TypeError, match="metric 'a' must be an int or float"):
        last().update(last().init(), bad)


class Recording(Mapping[str, float]):
    """A metrics mapping that records which values were read (like lazy device values)."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values, self.read = values, set[str]()

    def __getitem__(self, key: str) -> float:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Any:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_metrics_read_only_when_a_save_is_due() -> None:
    """No metric value is read at an event where nothing is due; a mapping is not copied."""
    policy = ModelCheckpoint(monitor="val_loss", every_n_train_steps=5, save_last=True)
    quiet = Recording({"val_loss": 0.5, "loss": 1.0})
    pstate, actions = policy.update(policy.init(), Event("train_step", 1, 0, metrics=quiet))
    assert actions == [] and quiet.read == set()
    due = Recording({"val_loss": 0.5, "loss": 1.0})
    _, actions = policy.update(pstate, Event("train_step", 5, 0, metrics=due))
    assert len(actions) == 2 and due.read == {"val_loss", "loss"}
