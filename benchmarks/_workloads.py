"""Workloads and the hand-written loop they are measured against (pure PyTorch).

This module never imports ftrain, so a process that runs only the hand loop (the
peak-RSS baseline) carries none of ftrain's footprint. The data order is the one
``ft.TensorLoader`` draws: ``randperm`` seeded by ``mix_seed(seed, epoch)``,
copied here in a few lines (``tests/test_benchmarks.py`` checks it matches).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
LR = 1e-3
CLASSES = 10
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """ftrain's ``mix_seed``, so the hand loop draws the same order without importing it."""
    h = 0x2545F4914F6CDD1D
    for v in values:
        h = _splitmix64(h ^ (v & _MASK64))
    return h >> 1


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch, as ``ft.TensorLoader`` draws it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def _mid() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Linear(1024, CLASSES),
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, CLASSES),
    )


@dataclass(frozen=True)
class Workload:
    """A model, its input shape, batch size and how long one timed run trains."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    batch_size: int
    batches: int  # per epoch, a multiple of 4 so accumulation windows are full
    epochs: int
    quick_batches: int
    quick_epochs: int

    def schedule(self, quick: bool) -> tuple[int, int]:
        """(batches per epoch, epochs) of one timed run."""
        return (self.quick_batches, self.quick_epochs) if quick else (self.batches, self.epochs)


WORKLOADS: dict[str, Workload] = {
    "tiny": Workload("tiny", _tiny, (32,), 64, 500, 4, 40, 2),
    "mid": Workload("mid", _mid, (784,), 256, 40, 2, 8, 2),
    "cnn": Workload("cnn", _cnn, (1, 28, 28), 128, 60, 2, 8, 2),
}


@dataclass(frozen=True)
class Settings:
    """What the training does besides forward/backward/update."""

    name: str
    accumulate: int = 1
    clip: float | None = None
    log_every: int | None = None  # optimizer steps between log points; None: no logger

    def for_quick(self, quick: bool) -> Settings:
        """Quick runs are short: log more often so that the logging path still runs."""
        if quick and self.log_every is not None:
            return Settings(self.name, self.accumulate, self.clip, 5)
        return self


SETTINGS: dict[str, Settings] = {
    "plain": Settings("plain"),
    "acc_clip_log": Settings("acc_clip_log", accumulate=4, clip=1.0, log_every=50),
}


def make_model(workload: Workload, device: torch.device) -> nn.Module:
    """The workload's model with the same initial weights in every run."""
    torch.manual_seed(SEED)
    return workload.build().to(device)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR)


def make_data(
    workload: Workload, batches: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and labels for ``batches`` batches, the same in every run."""
    n = batches * workload.batch_size
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, *workload.input_shape, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x.to(device), y.to(device)


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def set_clock(name: str) -> None:
    """Time with "wall" (``perf_counter``, the default) or "cpu" (``process_time``).

    CPU time of this process, all its threads included, is steadier on a loaded
    machine; it is meaningless on a GPU, where the host waits for the device.
    """
    _clock[0] = CLOCKS[name]


def clock() -> float:
    """The clock chosen by :func:`set_clock`."""
    return _clock[0]()


class Stamps:
    """When the first and the latest batch were handed out, and how many were."""

    __slots__ = ("count", "first", "last")

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.count = 0

    def per_step_us(self) -> float:
        """Mean time between consecutive batches: the steady-state cost of one step."""
        if self.count < 2:
            return float("nan")
        return (self.last - self.first) / (self.count - 1) * 1e6


def stamped(batches: Iterable[Any], stamps: Stamps) -> Iterator[Any]:
    """Yield ``batches``, stamping the clock at each one (the same cost for every loop)."""
    now_fn = _clock[0]
    for batch in batches:
        now = now_fn()
        if not stamps.count:
            stamps.first = now
        stamps.last = now
        stamps.count += 1
        yield batch


def hand_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches gathered from in-memory tensors."""
    order = epoch_order(x.size(0), SEED, epoch).to(x.device)
    for start in range(0, x.size(0), batch_size):
        idx = order[start : start + batch_size]
        yield x.index_select(0, idx), y.index_select(0, idx)


class HandData:
    """The hand loop's data as a re-iterable: each ``iter()`` starts the next epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.x.size(0) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return hand_batches(self.x, self.y, self.batch_size, epoch)


def hand_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches_of_epoch: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    epochs: int,
    settings: Settings,
    log_dir: str | None,
    sync_check: bool = False,
) -> float:
    """The nanoGPT-order loop: forward, ``loss / n``, backward; at a window's end clip,
    ``optimizer.step()``, ``zero_grad(set_to_none=True)``; ``.item()`` only at log points.

    Returns:
        The last batch's loss.
    """
    writer = None
    if settings.log_every is not None and log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    n = settings.accumulate
    step = 0
    loss = norm = None
    model.train()
    for epoch in range(epochs):
        for i, (x, y) in enumerate(batches_of_epoch(epoch)):
            if sync_check:  # a host-device sync in the step raises
                torch.cuda.set_sync_debug_mode("error")
            loss = F.cross_entropy(model(x), y)
            (loss / n if n > 1 else loss).backward()
            stepped = (i + 1) % n == 0
            if stepped:
                if settings.clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, settings.clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            if sync_check:
                torch.cuda.set_sync_debug_mode("default")
            if stepped and writer is not None and step % settings.log_every == 0:  # type: ignore[operator]
                writer.add_scalar("loss", loss.item(), step - 1)
                if norm is not None:
                    writer.add_scalar("grad_norm", norm.item(), step - 1)
                writer.add_scalar("epoch", epoch, step - 1)
    if writer is not None:
        writer.close()
    assert loss is not None
    return float(loss.item())
