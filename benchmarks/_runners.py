"""One timed training run per variant: the hand loop, ``ftrain.fit``, Lightning.

Every runner trains the same model from the same initial weights on the same
batches in the same order, and stamps the clock as each batch is handed out, so
the per-step figure is the steady state between batches: the loop's fixed cost
(loggers opening, the final flush) is reported apart, as ``total_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ._workloads import (
    SEED,
    HandData,
    Settings,
    Stamps,
    Workload,
    clock,
    hand_batches,
    hand_loop,
    loss_fn,
    make_model,
    make_optimizer,
    stamped,
)

VARIANTS = ("raw", "ftrain", "ftrain_bar", "lightning")


@dataclass
class RunResult:
    """What one run measured."""

    step_us: float
    total_s: float
    final_loss: float
    params: list[torch.Tensor]


def lightning_module() -> Any:
    """The installed Lightning package (``lightning`` or ``pytorch_lightning``), or None."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return __import__(name, fromlist=["Trainer"])
        except ImportError:
            continue
    return None


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().cpu().clone() for p in model.parameters()]


def run_raw(
    workload: Workload,
    settings: Settings,
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    log_dir: str,
    device: torch.device,
    sync_check: bool = False,
) -> RunResult:
    """The hand-written loop."""
    x, y = data
    model = make_model(workload, device)
    optimizer = make_optimizer(model)
    stamps = Stamps()

    def batches(epoch: int) -> Iterator[Any]:
        return stamped(hand_batches(x, y, workload.batch_size, epoch), stamps)

    start = clock()
    loss = hand_loop(model, optimizer, batches, epochs, settings, log_dir, sync_check)
    _sync(device)
    total = clock() - start
    return RunResult(stamps.per_step_us(), total, loss, _params(model))


def _stamped_loader_class() -> Any:
    import ftrain as ft

    class StampedLoader(ft.TensorLoader):
        """A ``TensorLoader`` that stamps the clock at each batch, as the hand loop's data does."""

        def __init__(self, *tensors: torch.Tensor, stamps: Stamps, **kwargs: Any) -> None:
            super().__init__(*tensors, **kwargs)
            self.stamps = stamps

        def __iter__(self) -> Iterator[Any]:
            return stamped(super().__iter__(), self.stamps)

    return StampedLoader


class _SyncCheck:
    """A callback that turns CUDA sync errors on for each step (between log points)."""

    def on_train_batch_start(self, state: Any, batch: Any, batch_idx: int) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, state: Any, metrics: Any, batch: Any, batch_idx: int) -> None:
        torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def _bar_to_devnull() -> Iterator[None]:
    """Draw fit's tqdm bar as on a terminal, into /dev/null (the bar's real work, no tty)."""
    import ftrain.driver._progress as progress

    saved_isatty, saved_stderr = progress._isatty, sys.stderr
    with open(os.devnull, "w") as sink:
        progress._isatty = lambda stream: True
        sys.stderr = sink
        try:
            yield
        finally:
            progress._isatty = saved_isatty
            sys.stderr = saved_stderr


def run_ftrain(
    workload: Workload,
    settings: Settings,
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    log_dir: str,
    device: torch.device,
    bar: bool = False,
    sync_check: bool = False,
) -> RunResult:
    """``ftrain.fit`` with the hand loop's settings (no checkpoints, no summary)."""
    import ftrain as ft
    from ftrain.loggers import TensorBoardLogger

    x, y = data
    model = make_model(workload, device)
    state = ft.TrainState.create(model, make_optimizer(model), seed=SEED)
    step = ft.train_step(loss_fn)
    if settings.clip is not None:
        step = ft.clip_grad_norm(settings.clip)(step)
    if settings.accumulate > 1:
        step = ft.accumulate(settings.accumulate)(step)
    stamps = Stamps()
    loader = _stamped_loader_class()(x, y, batch_size=workload.batch_size, stamps=stamps)
    logger: Any = False
    if settings.log_every is not None:
        logger = TensorBoardLogger(log_dir, name="ftrain")
    flags = {
        "max_epochs": epochs,
        "logger": logger,
        "log_every_n_steps": settings.log_every or 50,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": bar,
        "accelerator": device.type,
        "devices": 1,
        "default_root_dir": log_dir,
        "callbacks": [_SyncCheck()] if sync_check else [],
    }
    bar_context = _bar_to_devnull() if bar else contextlib.nullcontext()
    start = clock()
    with bar_context:
        result = ft.fit(state, step, loader, **flags)
    _sync(device)
    total = clock() - start
    return RunResult(
        stamps.per_step_us(), total, float(result.metrics["loss"]), _params(result.state.model)
    )


def run_lightning(
    workload: Workload,
    settings: Settings,
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    log_dir: str,
    device: torch.device,
) -> RunResult:
    """Lightning's Trainer with the same settings, its overhead features off."""
    pl = lightning_module()
    if pl is None:
        raise RuntimeError("Lightning is not installed")
    # Its per-run banners (accelerator, tips) would drown the benchmark's output.
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    x, y = data
    model = make_model(workload, device)
    log_metrics = settings.log_every is not None

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = loss_fn(self.net, batch)
            self.last_loss = loss.detach()
            if log_metrics:
                self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return make_optimizer(self.net)

    stamps = Stamps()

    class Data(HandData):
        # The epoch's order from the trainer's epoch: Lightning may call iter() more
        # than once per epoch.
        def __iter__(self) -> Iterator[Any]:
            epoch = module.current_epoch
            return stamped(hand_batches(self.x, self.y, self.batch_size, epoch), stamps)

    logger: Any = False
    if log_metrics:
        logger = pl.loggers.TensorBoardLogger(log_dir, name="lightning")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=device.type,
        devices=1,
        logger=logger,
        log_every_n_steps=settings.log_every or 50,
        accumulate_grad_batches=settings.accumulate,
        gradient_clip_val=settings.clip,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=log_dir,
    )
    module = Module()
    start = clock()
    trainer.fit(module, train_dataloaders=Data(x, y, workload.batch_size))
    _sync(device)
    total = clock() - start
    return RunResult(stamps.per_step_us(), total, float(module.last_loss), _params(model))


def run_variant(
    variant: str,
    workload: Workload,
    settings: Settings,
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    log_dir: str,
    device: torch.device,
    sync_check: bool = False,
) -> RunResult:
    """Run one variant by name."""
    if variant == "raw":
        return run_raw(workload, settings, data, epochs, log_dir, device, sync_check)
    if variant == "ftrain":
        return run_ftrain(workload, settings, data, epochs, log_dir, device, False, sync_check)
    if variant == "ftrain_bar":
        return run_ftrain(workload, settings, data, epochs, log_dir, device, True, sync_check)
    if variant == "lightning":
        return run_lightning(workload, settings, data, epochs, log_dir, device)
    raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
