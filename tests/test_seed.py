"""Seeding: seed_everything as in Lightning, mix_seed as a pure function."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ftrain as ft
from ftrain._seed import seed_step, step_seed

_ints = st.integers(min_value=0, max_value=2**64 - 1)


@pytest.fixture(autouse=True)
def _restore_seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """seed_everything writes environment variables: give each test a clean slate."""
    for name in ("FTRAIN_GLOBAL_SEED", "PL_GLOBAL_SEED", "FTRAIN_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def test_seed_everything_returns_the_seed_and_records_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """seed_everything returns the seed, sets the env vars and prints the seed when verbose."""
    assert ft.seed_everything(42, workers=True) == 42
    assert os.environ["FTRAIN_GLOBAL_SEED"] == "42"
    assert os.environ["FTRAIN_SEED_WORKERS"] == "1"
    assert capsys.readouterr().out == "Seed set to 42\n"
    ft.seed_everything(3, verbose=False)
    assert capsys.readouterr().out == ""
    assert os.environ["FTRAIN_SEED_WORKERS"] == "0"


def test_seed_everything_seeds_python_numpy_and_torch() -> None:
    """The same seed gives the same draws from random, numpy and torch."""
    ft.seed_everything(123, verbose=False)
    first = (random.random(), np.random.rand(), torch.rand(3))
    ft.seed_everything(123, verbose=False)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])


def test_seed_everything_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With seed=None it uses FTRAIN_GLOBAL_SEED, then PL_GLOBAL_SEED, then 0."""
    assert ft.seed_everything(verbose=False) == 0
    monkeypatch.delenv("FTRAIN_GLOBAL_SEED")
    monkeypatch.setenv("PL_GLOBAL_SEED", "17")
    assert ft.seed_everything(verbose=False) == 17
    monkeypatch.setenv("FTRAIN_GLOBAL_SEED", "5")
    assert ft.seed_everything(verbose=False) == 5


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.0, "7"])
def test_seed_everything_refuses_a_seed_out_of_range(seed: object) -> None:
    """A seed outside [0, 2**32 - 1] (or not an int) raises, giving the value."""
    with pytest.raises(
        ValueError, match=r"seed_everything: seed must be an int in \[0, 2\*\*32 - 1\], got"
    ):
        ft.seed_everything(seed, verbose=False)  # type: ignore[arg-type]


@given(st.lists(_ints, max_size=4))
def test_mix_seed_is_deterministic_and_in_range(values: list[int]) -> None:
    """mix_seed is a pure function of its arguments, with values in [0, 2**63)."""
    a = ft.mix_seed(*values)
    assert a == ft.mix_seed(*values)
    assert 0 <= a < 2**63


@given(_ints, _ints)
def test_mix_seed_depends_on_order(a: int, b: int) -> None:
    """Swapping two different inputs changes the seed (seed, step) != (step, seed)."""
    if a != b:
        assert ft.mix_seed(a, b) != ft.mix_seed(b, a)


def test_mix_seed_spreads_consecutive_counters() -> None:
    """Consecutive micro-steps and ranks give distinct seeds (no collisions in 4000 draws)."""
    seeds = {ft.mix_seed(0, step, rank) for step in range(1000) for rank in range(4)}
    assert len(seeds) == 4000


def test_seed_step_makes_torch_draws_a_function_of_the_counters() -> None:
    """After seed_step(seed, micro_step, rank), torch draws depend on those three only."""
    seed_step(1, 2, 0, cuda=False)
    a = torch.rand(4)
    torch.rand(10)
    seed_step(1, 2, 0, cuda=False)
    assert torch.equal(torch.rand(4), a)
    seed_step(1, 2, 1, cuda=False)
    assert not torch.equal(torch.rand(4), a)


@given(seed=st.integers(min_value=0, max_value=2**32 - 1), micro_step=_ints, rank=_ints)
def test_seed_step_seeds_with_mix_seed(seed: int, micro_step: int, rank: int) -> None:
    """seed_step's cached, vectorised hash is mix_seed(seed, micro_step, rank), bit for bit."""
    seed_step(seed, micro_step, rank, cuda=False)
    assert torch.initial_seed() == ft.mix_seed(seed, micro_step, rank)


@pytest.mark.parametrize("seed", [0, 7, 2**63 - 1, 2**64 + 5, -3])
@pytest.mark.parametrize("rank", [0, 3, 2**40])
def test_step_seeds_equal_mix_seed_across_block_edges(seed: int, rank: int) -> None:
    """Seeds computed a block at a time equal mix_seed at every block's edges."""
    steps = [0, 1, 1023, 1024, 1025, 2047, 2048, 10**6, 2**33 + 17, 2**64 - 1, 2**64, -1]
    for micro_step in steps:
        assert step_seed(seed, micro_step, rank) == ft.mix_seed(seed, micro_step, rank)
