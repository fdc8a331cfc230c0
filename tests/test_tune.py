"""Tests for ftrain.tune: the learning-rate finder, the batch-size finder, the fit flags."""

from __future__ import annotations

import copy
import math
import re
import sys
import weakref
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

import ftrain as ft
from ftrain import tune
from ftrain.tune import LRFinderResult, is_oom_error

# Helpers ----------------------------------------------------------------------------


def regression(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def make_state(optimizer: str = "sgd", lr: float = 0.1) -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    return ft.TrainState.create(net, opt_cls(net.parameters(), lr=lr))


def mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def snapshot(state: ft.TrainState) -> dict[str, Any]:
    return {
        "params": [p.detach().clone() for m in state.models for p in m.parameters()],
        "optim": [copy.deepcopy(o.state_dict()) for o in state.optimizers],
        "counters": (state.step, state.micro_step, state.epoch, state.batch_idx),
        "rng": torch.get_rng_state(),
    }


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def numpy_suggestion(
    lrs: Any, smoothed: Any, skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The reference: skip, drop non-finite, steepest np.gradient (unit spacing)."""
    stop = max(len(lrs) - skip_end, 0)
    lrs = np.asarray(lrs, dtype=np.float64)[skip_begin:stop]
    loss = np.asarray(smoothed, dtype=np.float64)[skip_begin:stop]
    keep = np.isfinite(loss)
    lrs, loss = lrs[keep], loss[keep]
    if len(loss) < 2:
        return None
    return float(lrs[int(np.argmin(np.gradient(loss)))])


def numpy_ema(losses: Any, beta: float = 0.98) -> np.ndarray:
    out, avg = np.empty(len(losses)), 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        out[i] = avg / (1 - beta ** (i + 1))
    return out


class Recording:
    """A step wrapper that records, per call, every param group's lr and the loss."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lrs, self.losses = inner, [], []

    def __call__(self, state: ft.TrainState, batch: Any) -> Any:
        self.lrs.append([g["lr"] for o in state.optimizers for g in o.param_groups])
        state, metrics = self.inner(state, batch)
        self.losses.append(float(metrics["loss"]))
        return state, metrics


# lr_find ----------------------------------------------------------------------------


def test_exponential_schedule_spans_the_range() -> None:
    """Step i of N runs at min·(max/min)^(i/N): min first, a constant ratio, max at N."""
    x, y = regression()
    result = tune.lr_find(
        make_state(),
        ft.train_step(mse),
        ft.TensorLoader(x, y, batch_size=32),
        min_lr=1e-6,
        max_lr=1e-2,
        num_training=40,
        early_stop_threshold=None,
    )
    lrs = np.array(result.lrs)
    assert len(lrs) == 40 and lrs[0] == 1e-6
    ratio = (1e-2 / 1e-6) ** (1 / 40)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], ratio, rtol=1e-12)
    np.testing.assert_allclose(lrs[-1] * ratio, 1e-2, rtol=1e-12)
    assert lrs.max() < 1e-2 and not result.stopped_early


def test_linear_schedule_spans_the_range() -> None:
    """Linear mode: min + (max − min)·i/N, equal steps from min_lr towards max_lr."""
    x, y = regression()
    result = tune.lr_find(
        make_state(),
        ft.train_step(mse),
        ft.TensorLoader(x, y, batch_size=32),
        min_lr=0.001,
        max_lr=0.021,
        num_training=20,
        mode="linear",
    )
    lrs = np.array(result.lrs)
    assert lrs[0] == 0.001 and len(lrs) == 20
    np.testing.assert_allclose(np.diff(lrs), 0.001, rtol=1e-9)
    assert result.mode == "linear"


def test_smoothing_and_suggestion_match_a_numpy_reference() -> None:
    """smoothed is the bias-corrected EMA (β=0.98) of losses; suggestion() = numpy argmin."""
    x, y = regression()
    result = tune.lr_find(
        make_state(),
        ft.train_step(mse),
        ft.TensorLoader(x, y, batch_size=32, shuffle=False),
        min_lr=1e-5,
        num_training=60,
    )
    np.testing.assert_allclose(result.smoothed, numpy_ema(result.losses), rtol=1e-12)
    expected = numpy_suggestion(result.lrs, result.smoothed)
    assert expected is not None and result.suggestion() == expected
    assert result.suggestion(skip_begin=3, skip_end=5) == numpy_suggestion(
        result.lrs, result.smoothed, 3, 5
    )


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(0, 1000).map(float), st.sampled_from([math.nan, math.inf])),
        min_size=0,
        max_size=30,
    ),
    skip_begin=st.integers(0, 5),
    skip_end=st.integers(0, 5),
)
def test_suggestion_property(values: list[float], skip_begin: int, skip_end: int) -> None:
    """For any curve with gaps, suggestion() equals the numpy reference (None: too few)."""
    lrs = tuple(float(i + 1) for i in range(len(values)))
    result = LRFinderResult(lrs=lrs, losses=tuple(values), smoothed=tuple(values))
    expected = numpy_suggestion(lrs, values, skip_begin, skip_end)
    if expected is None:
        with pytest.warns(RuntimeWarning, match="too few points"):
            assert result.suggestion(skip_begin, skip_end) is None
    else:
        assert result.suggestion(skip_begin, skip_end) == expected


def test_state_and_rng_are_left_untouched() -> None:
    """lr_find explores on a clone: params, Adam state, lr, counters and RNG stay bit-identical."""
    x, y = regression()
    state = make_state("adam", lr=3e-3)
    step = ft.train_step(mse, clip_norm=1.0, precision="bf16-mixed")
    for batch in ft.TensorLoader(x, y, batch_size=32, shuffle=False):
        state, _ = step(state, batch)  # the optimizer now has state to protect
    before = snapshot(state)
    result = tune.lr_find(state, step, ft.TensorLoader(x, y, batch_size=32), num_training=30)
    assert len(result.lrs) > 2 and all(math.isfinite(v) for v in result.losses[:2])
    assert_same(snapshot(state), before)
    assert state.optimizer.param_groups[0]["lr"] == 3e-3


def test_the_clone_is_freed_before_returning() -> None:
    """Nothing keeps the explored copy of the model or its parameters alive afterwards.

    The step given is kept too, so its cache must not hold the clone's optimizer.
    """
    x, y = regression()
    runs = {
        "lr_find": lambda state, step: tune.lr_find(state, step, [(x, y)], num_training=5),
        "scale_batch_size": lambda state, step: tune.scale_batch_size(
            lambda n: [(x[:n], y[:n])], state, step, fits=lambda n: n <= 8
        ),
    }
    for run in runs.values():
        seen: list[weakref.ref[Any]] = []

        def loss(model: torch.nn.Module, batch: Any, seen: Any = seen) -> torch.Tensor:
            seen.extend([weakref.ref(model), weakref.ref(next(model.parameters()))])
            return mse(model, batch)

        state, step = make_state(), ft.train_step(loss)
        run(state, step)
        assert seen and all(ref() is None for ref in seen)
        assert step.loss_fn is loss and state.model is not None


def test_accumulation_changes_the_lr_per_optimizer_step() -> None:
    """With accumulate(3) each lr holds for 3 batches and the loss is the window's mean."""
    x, y = regression()
    step = Recording(ft.train_step(mse, accumulate=3))
    result = tune.lr_find(
        make_state(),
        step,
        ft.TensorLoader(x, y, batch_size=32, shuffle=False),
        min_lr=1e-4,
        max_lr=1e-1,
        num_training=6,
        early_stop_threshold=None,
    )
    assert [lr for (lr,) in step.lrs] == [lr for lr in result.lrs for _ in range(3)]
    means = np.array(step.losses).reshape(6, 3).mean(axis=1)
    np.testing.assert_allclose(result.losses, means, rtol=1e-12)


def test_every_param_group_of_every_optimizer_follows_the_schedule() -> None:
    """A custom step with two optimizers (one with two groups) sees the same lr in all."""
    torch.manual_seed(0)
    gen, disc = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
    opts = {
        "g": torch.optim.SGD([{"params": [gen.weight]}, {"params": [gen.bias], "lr": 5.0}], 0.1),
        "d": torch.optim.Adam(disc.parameters(), lr=0.1),
    }
    state = ft.TrainState.create({"g": gen, "d": disc}, opts)

    @ft.custom_step
    def gan(state: ft.TrainState, batch: Any) -> Any:
        x, _ = batch
        loss = state.model["d"](state.model["g"](x)).pow(2).mean()
        for opt in state.optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in state.optimizers:
            opt.step()
        return state, {"loss": loss}

    step = Recording(gan)
    result = tune.lr_find(state, step, [regression(64)], min_lr=1e-4, num_training=8)
    assert [lrs for lrs in step.lrs] == [[lr] * 3 for lr in result.lrs]
    assert opts["g"].param_groups[1]["lr"] == 5.0 and opts["d"].param_groups[0]["lr"] == 0.1


def test_short_data_is_cycled_and_a_one_shot_iterator_ends_the_search() -> None:
    """A 2-batch list serves 25 steps; a one-shot iterator of 4 batches gives 4 points."""
    x, y = regression(64)
    data = [(x[:32], y[:32]), (x[32:], y[32:])]
    step = ft.train_step(mse)
    assert len(tune.lr_find(make_state(), step, data, num_training=25).lrs) == 25
    result = tune.lr_find(make_state(), step, iter(data * 2), num_training=25)
    assert len(result.lrs) == 4 and not result.stopped_early
    with pytest.raises(ValueError, match="no batches"):
        tune.lr_find(make_state(), step, [], num_training=5)


def test_early_stop_when_the_loss_explodes() -> None:
    """SGD up to lr=10 diverges: the search stops once smoothed > 4 × best, that point kept."""
    x, y = regression()
    data = ft.TensorLoader(x, y, batch_size=64, shuffle=False)
    result = tune.lr_find(make_state(), ft.train_step(mse), data, max_lr=10.0, num_training=100)
    assert result.stopped_early and 2 < len(result.lrs) < 100
    last, earlier = result.smoothed[-1], result.smoothed[:-1]
    assert not last <= 4.0 * min(earlier)
    assert all(v <= 4.0 * min(earlier[: i + 1]) for i, v in enumerate(earlier))
    full = tune.lr_find(
        make_state(),
        ft.train_step(mse),
        data,
        max_lr=10.0,
        num_training=100,
        early_stop_threshold=None,
    )
    assert len(full.lrs) == 100 and not full.stopped_early


def test_too_few_points_give_none_and_a_warning() -> None:
    """5 points with skip_begin=10 leave nothing to differentiate: None and a warning."""
    x, y = regression(64)
    result = tune.lr_find(make_state(), ft.train_step(mse), [(x, y)], num_training=5)
    with pytest.warns(RuntimeWarning, match=r"too few points.*skip_begin=10"):
        assert result.suggestion() is None


def test_plot_writes_a_png(tmp_path: Any) -> None:
    """plot(path) saves a PNG, with or without the suggestion marked."""
    pytest.importorskip("matplotlib")
    x, y = regression()
    result = tune.lr_find(
        make_state(), ft.train_step(mse), ft.TensorLoader(x, y, batch_size=32), num_training=30
    )
    for suggest in (True, False):
        path = tmp_path / f"lr_{suggest}.png"
        result.plot(path, suggest=suggest)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch: Any, tmp_path: Any) -> None:
    """Without matplotlib, plot raises an ImportError telling how to install it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = LRFinderResult(lrs=(1.0, 2.0), losses=(1.0, 0.5), smoothed=(1.0, 0.5))
    with pytest.raises(ImportError, match=re.escape("pip install matplotlib")):
        result.plot(tmp_path / "x.png")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr must be < max_lr"),
        ({"min_lr": 0.0}, "min_lr must be > 0 in exponential mode"),
        ({"num_training": 1}, "num_training must be an int >= 2, got 1"),
        ({"mode": "cosine"}, "mode must be one of 'exponential', 'linear', got 'cosine'"),
        ({"early_stop_threshold": 0}, "early_stop_threshold must be > 0 or None"),
        ({"skip_begin": -1}, "skip_begin must be an int >= 0"),
        ({"max_lr": math.nan}, "max_lr must be a finite number"),
    ],
)
def test_lr_find_bad_input(kwargs: dict[str, Any], message: str) -> None:
    """Bad arguments raise ValueError naming the argument and what is accepted."""
    with pytest.raises(ValueError, match=re.escape(message)):
        tune.lr_find(make_state(), ft.train_step(mse), [regression(8)], **kwargs)


# scale_batch_size -------------------------------------------------------------------


def factory(n: int = 4096, calls: list[int] | None = None) -> Any:
    x, y = regression(n)

    def make_data(batch_size: int) -> ft.TensorLoader:
        if calls is not None:
            calls.append(batch_size)
        return ft.TensorLoader(x, y, batch_size=batch_size, shuffle=False)

    return make_data


def test_power_and_binsearch_under_a_simulated_limit() -> None:
    """fits=bs<=100: power stops at 64; binsearch finds 100, minus the 5% margin = 95."""
    state, step = make_state(), ft.train_step(mse)
    calls: list[int] = []
    fits = lambda bs: bs <= 100  # noqa: E731
    assert tune.scale_batch_size(factory(calls=calls), state, step, fits=fits) == 64
    assert calls == [2, 4, 8, 16, 32, 64]  # 128 is refused before any loader is built
    found = tune.scale_batch_size(factory(), state, step, mode="binsearch", fits=fits)
    assert found == int(100 * (1 - 0.05)) == 95
    exact = tune.scale_batch_size(factory(), state, step, mode="binsearch", fits=fits, margin=0)
    assert exact == 100


def test_memory_bound_in_bytes() -> None:
    """fits=<bytes> bounds the first batch's tensors: 36 bytes a sample, 3600 bytes → 100."""
    state, step = make_state(), ft.train_step(mse)
    bound = 36 * 100
    assert tune.scale_batch_size(factory(), state, step, fits=bound) == 64
    assert (
        tune.scale_batch_size(factory(), state, step, mode="binsearch", fits=bound, margin=0) == 100
    )


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes."),
        MemoryError(),
    ],
)
def test_out_of_memory_raised_inside_the_step(error: BaseException) -> None:
    """An allocator error from the step above 48 samples: power → 32, binsearch → 48."""
    calls: list[int] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        calls.append(batch[0].shape[0])
        if batch[0].shape[0] > 48:
            raise error
        return mse(model, batch)

    state, step = make_state(), ft.train_step(loss)
    before = snapshot(state)
    assert tune.scale_batch_size(factory(), state, step) == 32
    assert tune.scale_batch_size(factory(), state, step, mode="binsearch", margin=0) == 48
    assert calls[:3] == [2, 2, 2]  # steps_per_trial=3 optimizer steps a trial
    assert_same(snapshot(state), before)


def test_accumulating_trials_take_steps_per_trial_optimizer_steps() -> None:
    """A trial of an accumulate(2) step runs 2 × steps_per_trial batches."""
    calls: list[int] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        calls.append(batch[0].shape[0])
        return mse(model, batch)

    step = ft.train_step(loss, accumulate=2)
    assert tune.scale_batch_size(factory(), make_state(), step, fits=lambda bs: bs <= 4) == 4
    assert calls == [2] * 6 + [4] * 6


def test_non_oom_errors_are_reraised() -> None:
    """A shape error at size 16 is not memory: it propagates as it is."""

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if batch[0].shape[0] >= 16:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return mse(model, batch)

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        tune.scale_batch_size(factory(), make_state(), ft.train_step(loss))


def test_a_factory_that_ignores_batch_size_is_refused() -> None:
    """make_data must build batches of the size asked: a fixed-size loader is a ValueError."""
    x, y = regression()
    make_data = lambda bs: ft.TensorLoader(x, y, batch_size=16)  # noqa: E731
    with pytest.raises(ValueError, match=r"make_data\(2\) gave a first batch of size 16"):
        tune.scale_batch_size(make_data, make_state(), ft.train_step(mse))


def test_the_dataset_size_ends_the_search() -> None:
    """40 samples: the single short batch of make_data(64) is the dataset, 40 is the answer."""
    step = ft.train_step(mse)
    assert tune.scale_batch_size(factory(40), make_state(), step) == 40
    assert tune.scale_batch_size(factory(40), make_state(), step, max_val=16) == 16


def test_nothing_fits() -> None:
    """When even batch size 1 fails, a RuntimeError says so."""
    with pytest.raises(RuntimeError, match="no batch size fits"):
        tune.scale_batch_size(factory(), make_state(), ft.train_step(mse), fits=lambda bs: False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_val": 0}, "init_val must be an int >= 1, got 0"),
        ({"max_trials": 0}, "max_trials must be an int >= 1, got 0"),
        ({"mode": "linear"}, "mode must be one of 'power', 'binsearch', got 'linear'"),
        ({"steps_per_trial": 0}, "steps_per_trial must be an int >= 1"),
        ({"margin": 1.0}, "margin must be in [0.0, 1.0)"),
        ({"init_val": 64, "max_val": 32}, "max_val must be an int >= 64, got 32"),
        ({"fits": "8GB"}, "fits must be None, a predicate"),
    ],
)
def test_scale_batch_size_bad_input(kwargs: dict[str, Any], message: str) -> None:
    """Bad arguments raise ValueError naming the argument and what is accepted."""
    with pytest.raises(ValueError, match=re.escape(message)):
        tune.scale_batch_size(factory(), make_state(), ft.train_step(mse), **kwargs)


def test_is_oom_error_reads_the_allocators_messages() -> None:
    """CUDA, MPS and CPU allocator messages count as out of memory; other errors do not."""
    assert is_oom_error(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_oom_error(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling"))
    assert not is_oom_error(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_oom_error(ValueError("out of memory"))


# fit flags --------------------------------------------------------------------------

QUIET = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def test_fit_auto_lr_find_sets_and_prints_the_suggestion(capsys: Any) -> None:
    """auto_lr_find runs lr_find on the train data and trains with its suggestion."""
    x, y = regression()
    loader = ft.TensorLoader(x, y, batch_size=32, shuffle=False)
    step = ft.train_step(mse)
    expected = tune.lr_find(make_state(), step, loader).suggestion()
    assert expected is not None
    result = ft.fit(make_state(), step, loader, max_steps=2, auto_lr_find=True, **QUIET)
    assert result.state.optimizer.param_groups[0]["lr"] == expected
    assert f"auto_lr_find: learning rate set to {expected:.6g}" in capsys.readouterr().out


def test_fit_auto_scale_batch_size_trains_with_the_size_found(capsys: Any) -> None:
    """With make_data as train_data, power finds 32 under an OOM above 32 and trains on it."""
    sizes: list[int] = []

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        sizes.append(batch[0].shape[0])
        if batch[0].shape[0] > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return mse(model, batch)

    calls: list[int] = []
    step = ft.train_step(loss)
    result = ft.fit(
        make_state(),
        step,
        ft.per_batch_size(factory(calls=calls)),
        max_steps=4,
        auto_scale_batch_size=True,
        **QUIET,
    )
    assert result.state.step == 4 and calls[-1] == 32 and sizes[-4:] == [32] * 4
    assert "auto_scale_batch_size: batch size 32 (power)" in capsys.readouterr().out
    data = ft.per_batch_size(factory())
    ft.fit(make_state(), step, data, max_steps=1, auto_scale_batch_size="binsearch", **QUIET)
    assert "batch size 30 (binsearch)" in capsys.readouterr().out  # int(32 · 0.95)


def test_fit_tuning_is_skipped_under_fast_dev_run(capsys: Any) -> None:
    """fast_dev_run skips both tuners: make_data(2) is used and the lr is unchanged."""
    calls: list[int] = []
    result = ft.fit(
        make_state(lr=0.05),
        ft.train_step(mse),
        ft.per_batch_size(factory(calls=calls)),
        fast_dev_run=True,
        auto_lr_find=True,
        auto_scale_batch_size="power",
        **QUIET,
    )
    out = capsys.readouterr().out
    assert calls == [2] and result.state.optimizer.param_groups[0]["lr"] == 0.05
    assert "auto_scale_batch_size: skipped" in out and "auto_lr_find: skipped" in out


def test_fit_tuning_flags_are_checked() -> None:
    """Bad flag values and a loader instead of make_data are refused before training."""
    with pytest.raises(ValueError, match="auto_scale_batch_size: unknown value 'linear'"):
        ft.FitConfig(auto_scale_batch_size="linear")
    with pytest.raises(ValueError, match="auto_lr_find: unknown value 'yes'"):
        ft.FitConfig(auto_lr_find="yes")
    x, y = regression()
    for data, got in [
        (ft.TensorLoader(x, y, batch_size=8), "got TensorLoader"),
        (factory(), "got function"),  # a bare callable means per epoch in fit
        (ft.per_epoch(factory()), r"got per_epoch\(\.\.\.\)"),
    ]:
        with pytest.raises(
            ValueError, match=r"needs train_data=ftrain.per_batch_size\(make_data\).*" + got
        ):
            ft.fit(
                make_state(),
                ft.train_step(mse),
                data,
                max_steps=1,
                auto_scale_batch_size=True,
                **QUIET,
            )


def test_a_resumed_run_keeps_its_learning_rate() -> None:
    """tune_for_fit skips auto_lr_find for a resumed state and says so."""
    from ftrain.tune._auto import tune_for_fit

    said: list[str] = []
    state = make_state(lr=0.05)
    config = ft.FitConfig(auto_lr_find=True)
    data = [regression(64)]
    out = tune_for_fit(state, ft.train_step(mse), data, config, resumed=True, say=said.append)
    assert out is data and state.optimizer.param_groups[0]["lr"] == 0.05
    assert said == ["auto_lr_find: skipped; the resumed run keeps its checkpoint's learning rate"]


def test_the_chosen_lr_becomes_the_schedulers_base() -> None:
    """apply_lr sets every group's lr and a LambdaLR's base, so the schedule scales from it."""
    from ftrain.tune._auto import apply_lr

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    state = ft.TrainState.create(net, opt, sched)
    apply_lr(state, 0.1)
    assert opt.param_groups[0]["lr"] == 0.1
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
