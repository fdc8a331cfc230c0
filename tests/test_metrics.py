"""Metric reducers, ``log``/``log_dict`` options and the per-stage collector, with plain numbers."""

from __future__ import annotations

import builtins
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ftrain as ft
from ftrain._metrics import MetricCollector, reducer, to_float


def _fold(name: str, values: Iterable[Any], weights: Iterable[int] | None = None) -> Any:
    red = reducer(name)
    acc = red.init()
    values = list(values)
    for value, weight in zip(values, weights or [1] * len(values), strict=True):
        acc = red.update(acc, value, weight)
    return red.finalize(acc)


def _feed(
    collector: MetricCollector, batches: Sequence[dict[str, Any]], sizes: Sequence[int]
) -> None:
    for metrics, size in zip(batches, sizes, strict=True):
        collector.update(metrics, lambda s=size: s)


def _epoch(collector: MetricCollector) -> dict[str, float]:
    return {k: to_float(v) for k, (v, _) in collector.epoch_values().items()}


class FakeMetric:
    """A torchmetrics-like running mean: forward() updates and caches the batch value."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.resets = 0
        self._forward_cache: Any = None

    def update(self, values: torch.Tensor) -> None:
        self.total += float(values.sum())
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.total / self.count)

    def reset(self) -> None:
        self.total, self.count = 0.0, 0
        self.resets += 1

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        self.update(values)
        self._forward_cache = values.mean()
        return self._forward_cache

    __call__ = forward


# --- reducers ---------------------------------------------------------------------


def test_mean_is_batch_size_weighted_with_an_uneven_last_batch() -> None:
    """The epoch mean weighs each step value by its batch size: Σv·bs / Σbs."""
    assert _fold("mean", [1.0, 2.0, 4.0], [4, 4, 2]) == pytest.approx((4 + 8 + 8) / 10)
    collector = MetricCollector("validate")
    _feed(collector, [{"acc": 1.0}, {"acc": 2.0}, {"acc": 4.0}], [4, 4, 2])
    assert _epoch(collector) == {"acc": pytest.approx(2.0)}


def test_explicit_batch_size_overrides_the_batch() -> None:
    """``log(batch_size=)`` is the weight; the batch is then never inspected."""
    collector = MetricCollector("validate")

    def no_size() -> int:
        raise AssertionError("batch size inferred although given")

    for value, size in [(1.0, 1), (3.0, 3)]:
        collector.update({"m": ft.log(value, batch_size=size)}, no_size)
    assert _epoch(collector) == {"m": pytest.approx(2.5)}


def test_max_min_sum_are_unweighted() -> None:
    """max/min are running extremes and sum is Σv, whatever the batch sizes."""
    values, sizes = [3.0, -1.0, 7.0, 2.0], [5, 1, 1, 9]
    assert _fold("max", values, sizes) == 7.0
    assert _fold("min", values, sizes) == -1.0
    assert _fold("sum", values, sizes) == 11.0
    collector = MetricCollector("validate")
    batches = [
        {
            "hi": ft.log(v, reduce_fx="max"),
            "lo": ft.log(v, reduce_fx="min"),
            "n": ft.log(v, reduce_fx="sum"),
        }
        for v in values
    ]
    _feed(collector, batches, sizes)
    assert _epoch(collector) == {"hi": 7.0, "lo": -1.0, "n": 11.0}


def test_tensor_values_reduce_on_the_device() -> None:
    """Tensor step values give tensor epoch values: nothing is converted before a log point."""
    collector = MetricCollector("validate")
    _feed(collector, [{"m": torch.tensor(1.0)}, {"m": torch.tensor(3.0)}], [1, 3])
    (value, _spec) = collector.epoch_values()["m"]
    assert isinstance(value, torch.Tensor)
    assert value.item() == pytest.approx(2.5)


def test_callable_reduce_fx_sees_the_stacked_step_values() -> None:
    """A callable reduce_fx is applied once, at epoch end, to the stacked step values."""
    seen: list[torch.Tensor] = []

    def spread(stacked: torch.Tensor) -> torch.Tensor:
        seen.append(stacked)
        return stacked.max() - stacked.min()

    collector = MetricCollector("validate")
    values = [2.0, torch.tensor(9.0), 4.0, torch.tensor([5.0])]
    _feed(
        collector,
        [
            {"spread": ft.log(v, reduce_fx=spread), "med": ft.log(v, reduce_fx=torch.median)}
            for v in values
        ],
        [1, 1, 1, 1],
    )
    assert _epoch(collector) == {"spread": 7.0, "med": 4.0}
    assert len(seen) == 1 and seen[0].tolist() == [2.0, 9.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("fx", "name"),
    [
        (torch.mean, "mean"),
        (torch.max, "max"),
        (torch.min, "min"),
        (torch.sum, "sum"),
        (builtins.max, "max"),
        (builtins.min, "min"),
        (builtins.sum, "sum"),
        ("avg", "mean"),
        ("mean", "mean"),
    ],
)
def test_torch_and_builtin_reductions_map_to_names(fx: Any, name: str) -> None:
    """torch.mean/max/min/sum, builtin max/min/sum and 'avg' are the named reducers."""
    assert ft.log(1.0, reduce_fx=fx).reduce_fx == name
    assert reducer(fx).name == name


@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(1, 64)),
        min_size=1,
        max_size=30,
    )
)
def test_weighted_mean_property(pairs: list[tuple[float, int]]) -> None:
    """For any values and batch sizes the mean reducer equals Σv·bs / Σbs."""
    values = [v for v, _ in pairs]
    weights = [w for _, w in pairs]
    expected = math.fsum(v * w for v, w in pairs) / sum(weights)
    assert _fold("mean", values, weights) == pytest.approx(expected, rel=1e-9, abs=1e-6)


# --- naming and stage defaults ------------------------------------------------------


def test_stage_defaults() -> None:
    """Training logs each step value (on_step); validation logs the epoch reduction (on_epoch)."""
    train = MetricCollector("train")
    _feed(train, [{"loss": 1.0}, {"loss": 3.0}], [1, 1])
    assert train.step_values(for_logger=True) == {"loss": 3.0}
    assert train.epoch_values() == {}

    val = MetricCollector("validate")
    _feed(val, [{"loss": 1.0}, {"loss": 3.0}], [1, 1])
    assert val.step_values(for_logger=True) == {}
    assert _epoch(val) == {"loss": 2.0}


def test_both_on_step_and_on_epoch_fork_the_name() -> None:
    """With on_step and on_epoch both on, loggers see ``name_step`` and ``name_epoch``."""
    collector = MetricCollector("train")
    _feed(collector, [{"acc": ft.log(v, on_epoch=True, prog_bar=True)} for v in (1.0, 2.0)], [1, 3])
    assert collector.step_values(for_logger=True) == {"acc_step": 2.0}
    assert collector.prog_bar_values() == {"acc_step": 2.0}
    assert _epoch(collector) == {"acc_epoch": pytest.approx(1.75)}

    val = MetricCollector("validate")
    _feed(val, [{"acc": ft.log(4.0, on_step=True)}], [1])
    assert val.step_values(for_logger=True) == {"acc_step": 4.0}
    assert _epoch(val) == {"acc_epoch": 4.0}


def test_epoch_values_reset_between_epochs() -> None:
    """Each epoch's reduction starts afresh."""
    collector = MetricCollector("validate")
    _feed(collector, [{"m": 1.0}, {"m": 3.0}], [1, 1])
    assert _epoch(collector) == {"m": 2.0}
    assert _epoch(collector) == {}
    _feed(collector, [{"m": 10.0}], [1])
    assert _epoch(collector) == {"m": 10.0}


def test_logger_false_is_kept_from_loggers_only() -> None:
    """``logger=False`` hides a step value from loggers, not from the bar or the epoch values."""
    collector = MetricCollector("train")
    _feed(collector, [{"hidden": ft.log(1.0, logger=False, prog_bar=True), "shown": 2.0}], [1])
    assert collector.step_values(for_logger=True) == {"shown": 2.0}
    assert collector.step_values(for_logger=False) == {"hidden": 1.0, "shown": 2.0}
    assert collector.prog_bar_values() == {"hidden": 1.0}


def test_log_dict_applies_the_options_to_each_value() -> None:
    """``log_dict`` is ``log`` over a mapping, with the same options for every value."""
    logged = ft.log_dict(
        {"a": 1.0, "b": torch.tensor(2.0)}, on_epoch=True, reduce_fx="max", prog_bar=True
    )
    assert sorted(logged) == ["a", "b"]
    assert all(v.on_epoch and v.prog_bar and v.reduce_fx == "max" for v in logged.values())
    assert logged["a"].value == 1.0
    collector = MetricCollector("train")
    _feed(
        collector,
        [logged, ft.log_dict({"a": 5.0, "b": 0.0}, on_epoch=True, reduce_fx="max", prog_bar=True)],
        [1, 1],
    )
    assert _epoch(collector) == {"a_epoch": 5.0, "b_epoch": 2.0}
    with pytest.raises(TypeError, match="mapping"):
        ft.log_dict([("a", 1.0)])  # type: ignore[arg-type]


# --- metric objects ---------------------------------------------------------------


def test_metric_object_logs_forward_per_step_and_compute_per_epoch() -> None:
    """A Metric logs its forward value per step and compute() at epoch end, then is reset."""
    metric = FakeMetric()
    collector = MetricCollector("train")
    for batch in ([1.0, 3.0], [8.0]):
        metric(torch.tensor(batch))
        collector.update({"acc": ft.log(metric, on_step=True, on_epoch=True)}, lambda: None)
    assert to_float(collector.step_values(for_logger=True)["acc_step"]) == 8.0
    epoch = collector.epoch_values()
    assert to_float(epoch["acc_epoch"][0]) == pytest.approx(4.0)  # (1 + 3 + 8) / 3 samples
    assert metric.resets == 1 and metric.count == 0

    metric(torch.tensor([2.0]))
    collector.update({"acc": ft.log(metric, on_step=True, on_epoch=True)}, lambda: None)
    assert to_float(collector.epoch_values()["acc_epoch"][0]) == 2.0


def test_metric_object_epoch_default_in_eval() -> None:
    """In evaluation a bare Metric is epoch-level: compute() under its own name."""
    metric = FakeMetric()
    collector = MetricCollector("validate")
    for batch in ([1.0], [2.0, 3.0]):
        metric(torch.tensor(batch))
        collector.update({"m": metric}, lambda: None)
    assert collector.step_values(for_logger=True) == {}
    assert _epoch(collector) == {"m": pytest.approx(2.0)}


# --- bad input ----------------------------------------------------------------------


def test_unknown_reduce_fx_string() -> None:
    with pytest.raises(ValueError, match=r"reduce_fx: unknown value 'median'.*'mean'"):
        ft.log(1.0, reduce_fx="median")
    with pytest.raises(TypeError, match="reduce_fx must be a string or a callable"):
        ft.log(1.0, reduce_fx=3)  # type: ignore[arg-type]


def test_neither_on_step_nor_on_epoch() -> None:
    with pytest.raises(ValueError, match="on_step=False and on_epoch=False"):
        ft.log(1.0, on_step=False, on_epoch=False)


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_bad_batch_size(size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ft.log(1.0, batch_size=size)


def test_non_scalar_tensor_and_other_types() -> None:
    """A value must be a number, a one-element tensor or a Metric."""
    collector = MetricCollector("train")
    with pytest.raises(ValueError, match=r"'v' must be a number or a one-element tensor.*\(2,\)"):
        collector.update({"v": torch.ones(2)}, lambda: 1)
    with pytest.raises(TypeError, match="'s' must be a number"):
        collector.update({"s": "high"}, lambda: 1)
    with pytest.raises(TypeError, match="'d' must be a number"):
        collector.update({"d": {"nested": 1.0}}, lambda: 1)


def test_conflicting_options_in_one_stage() -> None:
    """The same name logged with different options in one stage is an error, either way round."""
    collector = MetricCollector("train")
    collector.update({"m": ft.log(1.0, on_epoch=True)}, lambda: 1)
    with pytest.raises(ValueError, match="'m' was logged with different options"):
        collector.update({"m": ft.log(1.0, reduce_fx="max", on_epoch=True)}, lambda: 1)
    with pytest.raises(ValueError, match="'m' was logged with different options"):
        collector.update({"m": 1.0}, lambda: 1)

    collector = MetricCollector("train")
    collector.update({"m": 1.0}, lambda: 1)
    with pytest.raises(ValueError, match="'m' was logged with different options"):
        collector.update({"m": ft.log(1.0, prog_bar=True)}, lambda: 1)


def test_same_options_again_are_fine() -> None:
    """Repeating the defaults explicitly, or the same options, is no conflict."""
    collector = MetricCollector("train")
    collector.update({"m": ft.log(1.0, on_step=True, on_epoch=False)}, lambda: 1)
    collector.update({"m": 2.0}, lambda: 1)
    collector.update({"m": ft.log(3.0, on_step=True)}, lambda: 1)
    assert collector.step_values(for_logger=True) == {"m": 3.0}


def test_non_finite_values_warn_once_per_name() -> None:
    """A non-finite logged value warns once per name and is left as is."""
    collector = MetricCollector("train")
    with pytest.warns(RuntimeWarning, match="'loss' is nan; it is logged as is"):
        collector.warn_nonfinite({"loss": math.nan, "ok": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collector.warn_nonfinite({"loss": math.inf, "ok": 2.0})
    with pytest.warns(RuntimeWarning, match="'gnorm' is inf"):
        collector.warn_nonfinite({"gnorm": math.inf})


@pytest.mark.parametrize("n", [-1, -3])
def test_log_every_n_steps_not_negative(n: int) -> None:
    """A negative log_every_n_steps is refused; 0 means "never" (Lightning's)."""
    with pytest.raises(ValueError, match="log_every_n_steps"):
        ft.FitConfig(log_every_n_steps=n)
    assert ft.FitConfig(log_every_n_steps=0).log_every_n_steps == 0
