"""Pure schedules: when to validate, when to stop, how many batches; plain numbers only."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftrain._schedules import (
    can_stop_early,
    estimated_stepping_batches,
    every,
    is_max_reached,
    limit_batches,
    should_validate,
    should_validate_epoch,
    val_check_batch,
)


def _validated_batches(
    n: int,
    interval: int | float | None,
    every_n: int | None = 1,
    epochs: int = 1,
) -> list[tuple[int, int]]:
    """(epoch, 1-based batch) pairs after which validation runs, over ``epochs`` epochs."""
    check = val_check_batch(n, interval, every_n)
    out = []
    total = 0
    for epoch in range(epochs):
        for b in range(n):
            if should_validate(
                epoch=epoch,
                batch_idx=b,
                total_batch_idx=total,
                is_last_batch=b == n - 1,
                check_batch=check,
                check_val_every_n_epoch=every_n,
            ):
                out.append((epoch, b + 1))
            total += 1
    return out


# --- limit_batches ---------------------------------------------------------------


def test_limit_batches_lightning_examples() -> None:
    """float = int(len * f), int = min(len, n), 1 is one batch and 1.0 all, 0 disables."""
    assert limit_batches(10, 0.25) == 2
    assert limit_batches(10, 0.5) == 5
    assert limit_batches(10, 1.0) == 10
    assert limit_batches(10, 1) == 1
    assert limit_batches(10, 3) == 3
    assert limit_batches(10, 30) == 10
    assert limit_batches(10, 0) == 0
    assert limit_batches(10, 0.0) == 0
    assert limit_batches(10, 3.0) == 3  # an integral float > 1 is a count


def test_limit_batches_unsized() -> None:
    """Unsized data: 1.0 means all of it (None), an int is a count, a fraction is an error."""
    assert limit_batches(None, 1.0) is None
    assert limit_batches(None, 5) == 5
    assert limit_batches(None, 0) == 0
    assert limit_batches(None, 0.0) == 0
    with pytest.raises(ValueError, match=r"limit_train_batches=0\.5: a fraction needs data"):
        limit_batches(None, 0.5)
    with pytest.raises(ValueError, match=r"limit_val_batches=0\.5"):
        limit_batches(None, 0.5, "limit_val_batches")


def test_limit_batches_fraction_rounding_to_zero_is_an_error() -> None:
    """A positive fraction that gives 0 batches is refused (Lightning's MCE), naming the flag."""
    with pytest.raises(ValueError, match=r"limit_train_batches=0\.05 of 10 batches rounds to 0"):
        limit_batches(10, 0.05)


@given(st.integers(1, 10_000), st.floats(0.0, 1.0))
def test_limit_batches_fraction_property(length: int, f: float) -> None:
    """For any length and fraction: int(length * f), or an error exactly when that is 0 < f."""
    expected = int(length * f)
    if expected == 0 and f > 0:
        with pytest.raises(ValueError):
            limit_batches(length, f)
    else:
        assert limit_batches(length, f) == expected


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_limit_batches_count_property(length: int, n: int) -> None:
    """An int limit is min(length, n); empty data (length 0) is refused unless n is 0."""
    if length == 0 and n > 0:
        with pytest.raises(ValueError, match="the training data is empty"):
            limit_batches(length, n)
    else:
        assert limit_batches(length, n) == min(length, n)


# --- val_check_batch / should_validate ----------------------------------------------


def test_val_check_batch_values() -> None:
    """float f -> max(1, int(n * f)); int N -> N; None and 1.0 -> every n batches."""
    assert val_check_batch(10, 0.3, 1) == 3
    assert val_check_batch(10, 0.25, 1) == 2
    assert val_check_batch(10, 1.0, 1) == 10
    assert val_check_batch(10, None, 1) == 10
    assert val_check_batch(10, 0.01, 1) == 1
    assert val_check_batch(10, 4, 1) == 4
    assert val_check_batch(None, 1.0, 1) is None  # unsized: at the epoch's end
    assert val_check_batch(None, 7, None) == 7


def test_val_check_batch_errors() -> None:
    """An int longer than the epoch (per-epoch counting) or a fraction of unsized data fails."""
    with pytest.raises(ValueError, match=r"val_check_interval=11 is larger than the 10 training"):
        val_check_batch(10, 11, 1)
    assert val_check_batch(10, 11, None) == 11  # counted across epochs: allowed
    with pytest.raises(ValueError, match=r"val_check_interval=0\.5: a fraction of the epoch"):
        val_check_batch(None, 0.5, 1)


def test_validation_points_match_lightning() -> None:
    """LIGHTNING_SPEC: 0.3 of 10 batches validates after 3, 6, 9 and not at the epoch's end;
    0.25 after 2, 4, ..., 10; 1.0 at the end; an int N every N batches of the epoch."""
    assert _validated_batches(10, 0.3) == [(0, 3), (0, 6), (0, 9)]
    assert _validated_batches(10, 0.25) == [(0, 2), (0, 4), (0, 6), (0, 8), (0, 10)]
    assert _validated_batches(10, 1.0) == [(0, 10)]
    assert _validated_batches(10, None) == [(0, 10)]
    assert _validated_batches(10, 4) == [(0, 4), (0, 8)]


def test_validation_every_n_epochs_and_across_epochs() -> None:
    """check_val_every_n_epoch=2 skips even-numbered (1-based odd) epochs; None counts an
    int interval over the batches of all epochs."""
    assert _validated_batches(4, 1.0, every_n=2, epochs=4) == [(1, 4), (3, 4)]
    assert _validated_batches(10, 4, every_n=None, epochs=3) == [
        (0, 4),
        (0, 8),
        (1, 2),
        (1, 6),
        (1, 10),
        (2, 4),
        (2, 8),
    ]


def test_should_validate_when_stopping() -> None:
    """A stop request that takes effect after this batch validates once more (Lightning), but
    never in an epoch that check_val_every_n_epoch skips."""
    kw = dict(batch_idx=2, total_batch_idx=2, is_last_batch=False, check_val_every_n_epoch=1)
    assert not should_validate(epoch=0, check_batch=5, **kw)
    assert should_validate(epoch=0, check_batch=5, stopping=True, **kw)
    assert should_validate(epoch=0, check_batch=None, stopping=True, **kw)
    kw["check_val_every_n_epoch"] = 2
    assert not should_validate(epoch=0, check_batch=None, stopping=True, **kw)


@given(st.integers(1, 500), st.floats(0.001, 1.0))
def test_fraction_validates_n_over_check_times(n: int, f: float) -> None:
    """With a fraction, an epoch of n batches validates floor(n / check) times, each at a
    multiple of check, plus at the end only when that is a multiple too."""
    check = max(1, int(n * f))
    points = [b for _, b in _validated_batches(n, f)]
    assert points == list(range(check, n + 1, check))


@given(st.integers(0, 100), st.integers(1, 10))
def test_should_validate_epoch_property(epoch: int, n: int) -> None:
    """Epoch e (0-based) validates iff (e + 1) % n == 0; None means every epoch."""
    assert should_validate_epoch(epoch, n) == ((epoch + 1) % n == 0)
    assert should_validate_epoch(epoch, None)


# --- stopping ----------------------------------------------------------------------


@given(st.integers(0, 1000), st.integers(-1, 1000))
def test_is_max_reached_property(value: int, limit: int) -> None:
    """-1 never stops; otherwise value >= limit."""
    assert is_max_reached(value, limit) == (limit != -1 and value >= limit)


def test_can_stop_early() -> None:
    """min_epochs counts completed epochs, min_steps optimizer steps; both must be met."""
    assert can_stop_early(epochs_done=0, step=0, min_epochs=0, min_steps=None)
    assert not can_stop_early(epochs_done=1, step=100, min_epochs=2, min_steps=None)
    assert can_stop_early(epochs_done=2, step=0, min_epochs=2, min_steps=None)
    assert not can_stop_early(epochs_done=5, step=9, min_epochs=0, min_steps=10)
    assert can_stop_early(epochs_done=5, step=10, min_epochs=0, min_steps=10)


@given(st.integers(0, 50), st.integers(0, 500), st.integers(0, 50), st.integers(0, 500))
def test_can_stop_early_is_monotone(e: int, s: int, min_e: int, min_s: int) -> None:
    """Once a stop may happen, it may also happen at any later position."""
    if can_stop_early(epochs_done=e, step=s, min_epochs=min_e, min_steps=min_s):
        assert can_stop_early(epochs_done=e + 1, step=s + 1, min_epochs=min_e, min_steps=min_s)


# --- every / estimates ---------------------------------------------------------------


def test_every_predicate() -> None:
    """every(steps=n) is true at multiples of n; it has a readable repr; bad args fail."""
    p = every(steps=3)
    assert [s for s in range(1, 10) if p(s)] == [3, 6, 9]
    assert repr(p) == "every(steps=3)"
    assert repr(every(epochs=2)) == "every(epochs=2)"
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        every()
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        every(steps=1, epochs=1)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        every(steps=0)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got True"):
        every(epochs=True)


@given(st.integers(1, 50), st.integers(1, 200))
def test_every_counts(n: int, total: int) -> None:
    """Over 1..total, every(steps=n) fires total // n times."""
    p = every(steps=n)
    assert sum(p(s) for s in range(1, total + 1)) == total // n


def test_estimated_stepping_batches() -> None:
    """ceil(batches / accumulate) * epochs, capped by max_steps (the steps the run takes);
    unbounded runs are inf, or max_steps when that bounds them."""
    assert estimated_stepping_batches(10, 4, 3, 100) == 9
    assert estimated_stepping_batches(10, 4, 3, 5) == 5
    assert estimated_stepping_batches(None, 1, 3, 7) == 7
    assert estimated_stepping_batches(10, 4, 3, -1) == 9
    assert estimated_stepping_batches(10, 1, -1, -1) == math.inf
    assert estimated_stepping_batches(None, 1, 3, -1) == math.inf
