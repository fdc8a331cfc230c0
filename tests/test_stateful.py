"""Loaders that save their position: checkpoints hold it, a resume loads it, and no
sample already trained on is read again; other loaders replay with a warning."""

from __future__ import annotations

import collections
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._data._stateful import LoaderPosition, state_owner

SCRIPT = Path(__file__).parent / "resume_scripts" / "stateful_child.py"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def child(root: Path, calls: Path, *args: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(root), str(calls), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode in (0, -9), done.stderr
    return done.returncode


def load_child() -> Any:
    spec = importlib.util.spec_from_file_location("stateful_child", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reads(path: Path) -> collections.Counter[int]:
    return collections.Counter(int(line) for line in path.read_text().split())


@pytest.mark.slow
def test_kill_mid_epoch_with_stateful_dataloader_resumes_exactly_without_rereading(
    tmp_path: Path,
) -> None:
    """StatefulDataLoader(num_workers=2, shuffle=True), SIGKILL after batch 7 of 10 in
    epoch 0 (checkpoint of batch 6 on disk): the resumed run ends with the uninterrupted
    run's parameters, and reads each of the 24 samples of batches 1-6 once (epoch 1) and
    every other sample twice: 80 - 24 reads in all, no replay of consumed samples."""
    pytest.importorskip("torchdata.stateful_dataloader")
    ref_root, run_root = tmp_path / "ref", tmp_path / "run"
    ref_root.mkdir()
    load_child().run(str(ref_root), str(tmp_path / "ref_calls"))  # in this process
    reference = torch.load(ref_root / "final.pt")
    assert sum(reads(tmp_path / "ref_calls").values()) == 80

    assert child(run_root, tmp_path / "killed_calls", "--kill-at", "7") == -9
    assert child(run_root, tmp_path / "resumed_calls", "--resume") == 0
    resumed = torch.load(run_root / "final.pt")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)

    counts = reads(tmp_path / "resumed_calls")
    assert sum(counts.values()) == 80 - 6 * 4
    assert sorted(collections.Counter(counts.values()).items()) == [(1, 24), (2, 16)]


class Stream:
    """A stateful loader of its own: batches of a tensor in order, position in state."""

    def __init__(self, data: torch.Tensor, batch: int) -> None:
        self.data, self.batch, self.pos, self.read = data, batch, 0, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while self.pos < len(self.data):
            chunk = self.data[self.pos : self.pos + self.batch]
            self.pos += self.batch
            self.read += len(chunk)
            yield chunk, chunk.sum(1, keepdim=True)
        self.pos = 0

    def state_dict(self) -> dict[str, int]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pos = state["pos"]


def mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def make_state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.05))


def test_an_unsized_stateful_loader_resumes_from_its_state(tmp_path: Path) -> None:
    """An unsized loader with state_dict (the loop looks one batch ahead) resumed from the
    checkpoint after batch 3 of 5 reads only the 2 remaining batches of that epoch and
    ends bit-identical to the uninterrupted run; the checkpoint holds the position."""
    data = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    step = ft.train_step(mse)
    whole = ft.fit(make_state(), step, Stream(data, 4), max_epochs=2, checkpoint=False, **QUIET)
    policy = ft.checkpoint.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1)
    flags = {**QUIET, "default_root_dir": str(tmp_path), "checkpoint": policy}
    ft.fit(make_state(), step, Stream(data, 4), max_epochs=2, **flags)
    path = next(tmp_path.glob("**/*step=3.ckpt"))
    assert ft.load_checkpoint(path)["loop"]["data"] == {"state": {"pos": 12}, "epoch_end": False}
    fresh = Stream(data, 4)
    resumed = ft.fit(make_state(), step, fresh, max_epochs=2, ckpt_path=str(path), **flags)
    assert fresh.read == 8 + 20
    assert torch.equal(resumed.state.model.weight, whole.state.model.weight)


def test_state_owner_and_skip_fallback() -> None:
    """The owner is the loader, or a worker-less DataLoader's IterableDataset; ftrain's own
    loaders and plain iterables have none. A stateful loader resumed without a saved
    state (or in a multi-process run) falls back to the skip with its one-line warning."""

    class StatefulIterable(torch.utils.data.IterableDataset[int]):
        def __iter__(self) -> Iterator[int]:
            return iter(range(4))

        def state_dict(self) -> dict[str, int]:
            return {}

        def load_state_dict(self, state: dict[str, int]) -> None:
            pass

    dataset = StatefulIterable()
    assert state_owner(torch.utils.data.DataLoader(dataset, batch_size=2)) is dataset
    assert state_owner(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)) is None
    assert state_owner(ft.TensorLoader(torch.zeros(4), batch_size=2)) is None
    assert state_owner([1, 2]) is None
    stream = Stream(torch.zeros(8, 3), 2)
    assert state_owner(stream) is stream
    for processes in (1, 2):
        position = LoaderPosition()
        with pytest.warns(UserWarning, match=r"discarding 1 batches, which costs as much time"):
            loader = position.prepare(
                Stream(torch.zeros(8, 3), 2), skip_batches=1, processes=processes, seed=0, epoch=0
            )
        assert len(list(loader)) == 3
