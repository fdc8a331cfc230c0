"""Background prefetch: the same run, bit for bit, with batches read ahead by a thread
(and copied from pinned memory on CUDA); exact resume; errors and shutdown."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._data._prefetch import Prefetcher

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch["x"], batch["y"]
    return torch.nn.functional.mse_loss(model(x), y)


def make_state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    return ft.TrainState.create(net, torch.optim.Adam(net.parameters(), lr=0.01))


class Batches:
    """A re-iterable, unsized source of dict batches; counts what it has read."""

    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n * 4, 3, generator=g)
        self.n, self.read = n, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.n):
            self.read += 1
            x = self.x[i * 4 : (i + 1) * 4]
            yield {"x": x, "y": x.sum(1, keepdim=True)}


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
def test_prefetch_gives_the_same_run_and_resumes_exactly(device: str, tmp_path: Path) -> None:
    """prefetch=3 trains bit-identically to prefetch=0 (dropout included), and a run
    resumed mid-epoch from a checkpoint written while batches were read ahead ends equal."""
    step = ft.train_step(mse)
    flags = {**QUIET, "max_epochs": 2, "accelerator": device, "checkpoint": False}
    plain = ft.fit(make_state(), step, Batches(), **flags)
    ahead = ft.fit(make_state(), step, Batches(), prefetch=3, **flags)
    for p, q in zip(plain.state.model.parameters(), ahead.state.model.parameters(), strict=True):
        assert torch.equal(p, q)

    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    saving = {**flags, "checkpoint": policy, "default_root_dir": str(tmp_path)}
    ft.fit(make_state(), step, Batches(), prefetch=3, **{**saving, "max_epochs": 1})
    path = next(tmp_path.glob("**/*step=4.ckpt"))
    with pytest.warns(UserWarning, match="discarding 4 batches"):
        resumed = ft.fit(make_state(), step, Batches(), prefetch=3, ckpt_path=str(path), **saving)
    for p, q in zip(plain.state.model.parameters(), resumed.state.model.parameters(), strict=True):
        assert torch.equal(p, q)


class Stream:
    """A stateful loader: its position is the next batch index."""

    def __init__(self) -> None:
        self.pos, self.read = 0, 0
        self.x = torch.randn(40, 3, generator=torch.Generator().manual_seed(4))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.pos < 10:
            x = self.x[self.pos * 4 : self.pos * 4 + 4]
            self.pos += 1
            self.read += 1
            yield {"x": x, "y": x.sum(1, keepdim=True)}
        self.pos = 0

    def state_dict(self) -> dict[str, int]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pos = state["pos"]


def test_a_stateful_position_is_the_trained_batch_not_the_prefetched_one(tmp_path: Path) -> None:
    """With 3 batches read ahead, the checkpoint of step 4 holds position 4, and the resume
    reads only batches 4.. of that epoch, ending bit-identical."""
    step = ft.train_step(mse)
    flags = {**QUIET, "max_epochs": 2, "prefetch": 3}
    whole = ft.fit(make_state(), step, Stream(), checkpoint=False, **flags)
    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    saving = {**flags, "checkpoint": policy, "default_root_dir": str(tmp_path)}
    ft.fit(make_state(), step, Stream(), **saving)
    path = next(tmp_path.glob("**/*step=4.ckpt"))
    assert ft.load_checkpoint(path)["loop"]["data"]["state"] == {"pos": 4}
    fresh = Stream()
    resumed = ft.fit(make_state(), step, fresh, ckpt_path=str(path), **saving)
    assert fresh.read == 6 + 10
    for p, q in zip(whole.state.model.parameters(), resumed.state.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_errors_reach_the_consumer_and_close_stops_the_thread() -> None:
    """A loader error is raised at its batch; close() ends the thread of an endless
    loader; a bad depth is refused."""

    def failing() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    it = Prefetcher(failing(), torch.device("cpu"), 2)
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)
    endless = Prefetcher(itertools.count(), torch.device("cpu"), 2)
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()
    assert not any(t.name == "ftrain-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        Prefetcher([], torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        ft.FitConfig(prefetch=-1)
