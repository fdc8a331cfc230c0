"""Callbacks: hook order, stop requests, errors; EarlyStopping as a pure update and in fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ftrain as ft
from ftrain._callbacks._base import HOOKS, EarlyStoppingState, early_stopping_update

QUIET: dict[str, Any] = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _setup(batches: int = 2) -> tuple[ft.TrainState, ft.TensorLoader]:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x, y = torch.randn(batches * 2, 2), torch.randn(batches * 2, 1)
    return state, ft.TensorLoader(x, y, batch_size=2, shuffle=False)


class Log:
    """Records every hook call by name (any object with hook methods is a callback)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.calls: list[str] = []
        self.kwargs: dict[str, dict[str, Any]] = {}
        for hook in HOOKS:
            setattr(self, hook, self._recorder(hook))

    def _recorder(self, hook: str) -> Any:
        def record(**kwargs: Any) -> None:
            self.calls.append(self.tag + hook)
            self.kwargs[hook] = kwargs

        return record


def _val_step(values: list[float] | None = None) -> Any:
    it = iter(values or [])

    def fn(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        return {"val_loss": torch.tensor(next(it)) if values else _loss(model, batch)}

    return ft.eval_step(fn)


def test_hook_order_for_a_short_run(tmp_path: Path) -> None:
    """Two epochs of two batches with epoch-end validation call the hooks in Lightning's
    order; the sanity check calls only its own start and end."""
    log = Log()
    state, loader = _setup()
    ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        val_step=_val_step(),
        val_data=_setup(1)[1],
        callbacks=[log],
        max_epochs=2,
        default_root_dir=tmp_path,
        **{**QUIET, "num_sanity_val_steps": 1},
    )
    epoch = [
        "on_train_epoch_start",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_validation_start",
        "on_validation_epoch_start",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_validation_epoch_end",
        "on_validation_end",
        "on_train_epoch_end",
    ]
    assert log.calls == [
        "setup",
        "on_fit_start",
        "on_sanity_check_start",
        "on_sanity_check_end",
        "on_train_start",
        *epoch,
        *epoch,
        "on_train_end",
        "on_fit_end",
        "teardown",
    ]
    assert log.kwargs["setup"]["stage"] == log.kwargs["teardown"]["stage"] == "fit"
    assert log.kwargs["on_validation_batch_end"]["dataloader_idx"] == 0
    assert set(log.kwargs["on_train_batch_end"]) == {"state", "metrics", "batch", "batch_idx"}
    assert "loss" in log.kwargs["on_train_batch_end"]["metrics"]
    assert "val_loss" in log.kwargs["on_validation_end"]["metrics"]
    result = log.kwargs["on_fit_end"]["result"]
    assert isinstance(result, ft.FitResult) and result.state.step == 4


def test_callbacks_called_in_list_order(tmp_path: Path) -> None:
    """Several callbacks: each hook runs on them in the order given."""
    a, b = Log("a:"), Log("b:")
    state, loader = _setup(1)
    ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        callbacks=[a, b],
        max_epochs=1,
        default_root_dir=tmp_path,
        **QUIET,
    )
    merged = [c for pair in zip(a.calls, b.calls, strict=True) for c in pair]
    assert merged[:6] == [
        "a:setup",
        "b:setup",
        "a:on_fit_start",
        "b:on_fit_start",
        "a:on_train_start",
        "b:on_train_start",
    ]


class StopOnValidation(ft.Callback):
    def __init__(self) -> None:
        self.epochs_seen: list[int] = []

    def on_validation_end(self, state: Any, metrics: Any) -> bool:
        self.epochs_seen.append(state.epoch)
        return True


@pytest.mark.parametrize(("min_epochs", "epochs"), [(None, 1), (3, 3)])
def test_on_validation_end_true_stops_subject_to_min_epochs(
    min_epochs: int | None, epochs: int, tmp_path: Path
) -> None:
    """A callback returning True from on_validation_end stops the run after that epoch, or
    once min_epochs are done; on_train_end is still called once."""
    stop, log = StopOnValidation(), Log()
    state, loader = _setup()
    result = ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        val_step=_val_step(),
        val_data=_setup(1)[1],
        callbacks=[stop, log],
        max_epochs=10,
        min_epochs=min_epochs,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.epoch == epochs
    assert stop.epochs_seen == list(range(epochs))
    assert log.calls.count("on_train_end") == 1
    assert result.interrupted is False


def test_on_train_batch_end_true_stops_after_that_batch(tmp_path: Path) -> None:
    """A stop request from on_train_batch_end ends training after that batch."""

    class StopAtThird(ft.Callback):
        def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> bool:
            return state.micro_step == 3

    state, loader = _setup(5)
    result = ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        callbacks=[StopAtThird()],
        max_epochs=10,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.micro_step == 3


def test_on_exception_called_on_an_error_in_the_step(tmp_path: Path) -> None:
    """An error in the step reaches on_exception with the exception, then propagates; the
    run's end hooks are not called."""
    log = Log()

    def broken(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        raise RuntimeError("boom in the step")

    state, loader = _setup()
    with pytest.raises(RuntimeError, match="boom in the step"):
        ft.fit(
            state,
            ft.train_step(broken),
            loader,
            callbacks=[log],
            max_epochs=1,
            default_root_dir=tmp_path,
            **QUIET,
        )
    assert log.calls[-2:] == ["on_exception", "teardown"]
    assert "on_train_end" not in log.calls and "on_fit_end" not in log.calls
    exc = log.kwargs["on_exception"]["exception"]
    assert isinstance(exc, RuntimeError) and str(exc) == "boom in the step"


# --- EarlyStopping: the pure update ----------------------------------------------------


def _decisions(scores: list[float], **kw: Any) -> list[bool]:
    state = EarlyStoppingState()
    out = []
    for score in scores:
        state, stop = early_stopping_update(state, score, **kw)
        out.append(stop)
    return out


def test_early_stopping_update_patience_and_mode() -> None:
    """Stop after `patience` checks without improvement; mode 'max' looks for increases."""
    kw: dict[str, Any] = dict(mode="min", patience=2, min_delta=0.0)
    assert _decisions([1.0, 0.9, 0.95, 0.97], **kw) == [False, False, False, True]
    assert _decisions([1.0, 0.9, 0.95, 0.8, 0.85, 0.86], **kw) == [False] * 5 + [True]
    assert _decisions([1.0, 1.0, 1.0], **kw) == [False, False, True]  # ties never improve
    kw["mode"] = "max"
    assert _decisions([0.1, 0.2, 0.15, 0.1], **kw) == [False, False, False, True]
    assert _decisions([5.0, 4.0, 9.0], mode="min", patience=0, min_delta=0.0) == [
        False,
        False,
        True,
    ]


def test_early_stopping_update_min_delta() -> None:
    """An improvement must beat the best by more than min_delta (its sign is ignored)."""
    kw: dict[str, Any] = dict(mode="min", patience=1)
    assert _decisions([1.0, 0.95], min_delta=0.1, **kw) == [False, True]
    assert _decisions([1.0, 0.85], min_delta=0.1, **kw) == [False, False]
    assert _decisions([1.0, 0.85], min_delta=-0.1, **kw) == [False, False]
    state, _ = early_stopping_update(EarlyStoppingState(), 1.0, min_delta=0.1, **kw)
    state, _ = early_stopping_update(state, 0.95, min_delta=0.1, **kw)
    assert (state.best, state.wait, state.stopped) == (1.0, 1, True)


def test_early_stopping_update_thresholds_and_non_finite() -> None:
    """stopping_threshold stops once the score is strictly better than it, divergence_threshold
    once strictly worse (Lightning's comparisons); NaN/inf stop at once."""
    kw: dict[str, Any] = dict(mode="min", patience=10, min_delta=0.0)
    assert _decisions([0.5, 0.1], stopping_threshold=0.1, **kw) == [False, False]
    assert _decisions([0.5, 0.09], stopping_threshold=0.1, **kw) == [False, True]
    assert _decisions([0.5, 5.0], divergence_threshold=5.0, **kw) == [False, False]
    assert _decisions([0.5, 5.1], divergence_threshold=5.0, **kw) == [False, True]
    assert _decisions([0.5, math.nan], **kw) == [False, True]
    assert _decisions([math.inf], **kw) == [True]
    kw["mode"] = "max"
    assert _decisions([0.5, 0.91], stopping_threshold=0.9, **kw) == [False, True]
    assert _decisions([0.5, 0.01], divergence_threshold=0.02, **kw) == [False, True]


@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30),
    st.integers(0, 5),
    st.floats(0, 1),
    st.sampled_from(["min", "max"]),
)
def test_early_stopping_update_matches_reference(
    scores: list[float], patience: int, min_delta: float, mode: str
) -> None:
    """The update equals a direct reading of Lightning's rule on any sequence of scores."""
    best, wait, expected = None, 0, []
    for s in scores:
        better = best is None or (s + min_delta < best if mode == "min" else s - min_delta > best)
        if better:
            best, wait = s, 0
            expected.append(False)
        else:
            wait += 1
            expected.append(wait >= patience)
    assert _decisions(scores, mode=mode, patience=patience, min_delta=min_delta) == expected


def test_early_stopping_state_dict_round_trip() -> None:
    """state_dict / load_state_dict restore best, wait and stopped; decisions continue alike."""
    a = ft.EarlyStopping("val_loss", patience=3)
    for v in [1.0, 0.8, 0.9]:
        a.on_validation_end(None, {"val_loss": v})
    saved = a.state_dict()
    assert saved == {"best": 0.8, "wait": 1, "stopped": False, "stopped_epoch": 0}
    b = ft.EarlyStopping("val_loss", patience=3)
    b.load_state_dict(saved)
    assert b.state == a.state
    for v in [0.85, 0.95]:
        assert a.on_validation_end(None, {"val_loss": v}) == b.on_validation_end(
            None, {"val_loss": v}
        )
    assert b.state.stopped and b.state_dict()["wait"] == 3


def test_early_stopping_argument_checks() -> None:
    """Bad mode, patience or monitor are refused with messages naming them."""
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'avg'"):
        ft.EarlyStopping("val_loss", mode="avg")
    with pytest.raises(ValueError, match="patience must be an int >= 0, got -1"):
        ft.EarlyStopping("val_loss", patience=-1)
    with pytest.raises(ValueError, match="monitor must be a metric name, got ''"):
        ft.EarlyStopping("")
    assert repr(ft.EarlyStopping("acc", mode="max", patience=2)) == (
        "EarlyStopping(monitor='acc', mode='max', patience=2)"
    )


# --- EarlyStopping in fit ------------------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_early_stopping_in_fit(verbose: bool, tmp_path: Path, capsys: Any) -> None:
    """val_loss 1.0, 0.5, 0.6, 0.7 with patience=2: the run stops after epoch 3 (0-based),
    says so, and the callback holds Lightning's stopped_epoch, wait_count, best_score;
    verbose=True also prints each check."""
    state, loader = _setup()
    es = ft.EarlyStopping("val_loss", patience=2, verbose=verbose)
    assert es.best_score == math.inf and es.wait_count == 0 and es.stopped_epoch == 0
    result = ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        val_step=_val_step([1.0, 0.5, 0.6, 0.7, 0.1, 0.1]),
        val_data=_setup(1)[1],
        callbacks=[es],
        max_epochs=10,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.epoch == 4
    assert result.metrics["val_loss"] == pytest.approx(0.7)
    assert result.stop_reason == "early_stopping"
    assert (es.stopped_epoch, es.wait_count, es.best_score) == (3, 2, 0.5)
    lines = capsys.readouterr().out.splitlines()
    stop = "EarlyStopping: val_loss did not improve for 2 checks (best 0.5); stopping."
    assert lines[-1] == stop and es.stop_message in stop
    if verbose:
        assert lines[:-1] == [
            "EarlyStopping: val_loss improved to 1",
            "EarlyStopping: val_loss improved from 1 to 0.5",
            "EarlyStopping: val_loss = 0.6 did not improve on 0.5 (1/2 checks)",
        ]
    else:
        assert lines == [stop]


def test_early_stopping_messages_for_thresholds() -> None:
    """The stop message names the threshold crossed, or the non-finite value."""
    cases = [
        (dict(stopping_threshold=0.2), 0.1, "val_loss = 0.1 is below stopping_threshold=0.2"),
        (dict(divergence_threshold=5.0), 6.0, "val_loss = 6 is above divergence_threshold=5.0"),
        ({}, math.nan, "val_loss = nan is not finite"),
    ]
    for kwargs, value, message in cases:
        es = ft.EarlyStopping("val_loss", **kwargs)
        assert es.on_validation_end(None, {"val_loss": value}) is True
        assert es.stop_message == message


def _stop_reason(tmp_path: Path, batches: int = 2, **kw: Any) -> ft.FitResult:
    state, loader = _setup(batches)
    return ft.fit(state, ft.train_step(_loss), loader, default_root_dir=tmp_path, **{**QUIET, **kw})


def test_stop_reason(tmp_path: Path) -> None:
    """FitResult.stop_reason says which limit or request ended training."""

    class StopAtThird(ft.Callback):
        def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> bool:
            return state.micro_step == 3

    ticks = iter(range(1000))
    assert _stop_reason(tmp_path, max_epochs=2).stop_reason == "max_epochs"
    assert _stop_reason(tmp_path, max_steps=3).stop_reason == "max_steps"
    assert _stop_reason(tmp_path, max_steps=4).stop_reason == "max_steps"  # at an epoch end
    timed = _stop_reason(tmp_path, max_time={"seconds": 3}, clock=lambda: float(next(ticks)))
    assert timed.stop_reason == "max_time"
    held = _stop_reason(tmp_path, max_epochs=3, callbacks=[StopAtThird()], min_epochs=3)
    assert held.stop_reason == "max_epochs" and held.state.epoch == 3
    assert _stop_reason(tmp_path, max_epochs=9, callbacks=[StopAtThird()]).stop_reason == "callback"
    assert _stop_reason(tmp_path, max_epochs=2, limit_train_batches=0).stop_reason == "no_data"
    clock = iter(float(i) for i in range(1000))
    timer = ft.Timer({"seconds": 3}, clock=lambda: next(clock), verbose=False)
    timed = _stop_reason(tmp_path, max_epochs=9, callbacks=[timer])
    assert timed.stop_reason == "max_time" and timed.state.epoch < 9


def test_early_stopping_missing_monitor(tmp_path: Path) -> None:
    """strict=True: a monitor that was never logged is an error naming the logged metrics;
    strict=False: a warning, and training goes on."""
    flags: dict[str, Any] = dict(max_epochs=2, default_root_dir=tmp_path, **QUIET)
    state, loader = _setup()
    with pytest.raises(ValueError, match=r"'val_acc' was not logged; logged: \[.*'val_loss'"):
        ft.fit(
            state,
            ft.train_step(_loss),
            loader,
            val_step=_val_step(),
            val_data=loader,
            callbacks=[ft.EarlyStopping("val_acc")],
            **flags,
        )
    state, loader = _setup()
    with pytest.warns(RuntimeWarning, match="'val_acc' was not logged"):
        result = ft.fit(
            state,
            ft.train_step(_loss),
            loader,
            val_step=_val_step(),
            val_data=loader,
            callbacks=[ft.EarlyStopping("val_acc", strict=False)],
            **flags,
        )
    assert result.state.epoch == 2


def test_early_stopping_on_train_epoch_end(tmp_path: Path) -> None:
    """check_on_train_epoch_end=True watches a training metric at each epoch's end."""
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 1.0, 1.0])

    def loss_fn(model: torch.nn.Module, batch: Any) -> Any:
        loss = _loss(model, batch)
        return loss, {"score": ft.log(torch.tensor(next(losses)), on_epoch=True, on_step=False)}

    state, loader = _setup(1)
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        loader,
        callbacks=[ft.EarlyStopping("score", patience=2, check_on_train_epoch_end=True)],
        max_epochs=8,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result.state.epoch == 4


def test_learning_rate_monitor_names_and_interval() -> None:
    """LearningRateMonitor names lr-<Optimizer> (per param group when several) and follows
    the schedulers' interval unless given one."""
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(
        [{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.2}], lr=0.1
    )
    state = ft.TrainState.create(net, opt)
    monitor = ft.LearningRateMonitor()
    assert monitor.learning_rates(state) == {"lr-SGD/pg1": 0.1, "lr-SGD/pg2": 0.2}
    assert monitor.interval(state) == "epoch"
    sched = ft.SchedulerConfig(torch.optim.lr_scheduler.StepLR(opt, 1), interval="step")
    assert monitor.interval(state.replace(scheduler=sched)) == "step"
    assert ft.LearningRateMonitor("epoch").interval(state.replace(scheduler=sched)) == "epoch"
    with pytest.raises(ValueError, match="logging_interval must be None, 'step' or 'epoch'"):
        ft.LearningRateMonitor("batch")
