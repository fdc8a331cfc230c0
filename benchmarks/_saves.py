"""What saving checkpoints costs a run: no saves vs synchronous vs background saves.

A ~25M-parameter MLP (six 2048×2048 layers, 100 MB of fp32 weights; with AdamW's
two moments a checkpoint is about 300 MB) trains with ``fit`` and a policy that
saves every ``every`` optimizer steps. The three runs (and Lightning's, when it is
installed: no saves, ``ModelCheckpoint``, ``ModelCheckpoint`` + ``AsyncCheckpointIO``)
alternate in one process, order rotated each repeat, so machine noise hits them
alike, and each run is also read on its own, which a loaded machine's drift
cannot disturb. Reported per variant, from the clock at each batch: the median
step; the stall of a save (its step's excess over the median: for background
saves, the snapshot); what the following steps lose while a background write
shares the CPU; the run's steady-state time over ``steps × median`` (the in-run
ratio; ``(steps - 1) // every`` saves fall in the window, the final save after the
last batch does not); the steady-state time and the whole run's wall time (final
save and the wait for it included) over the no-save run of the same repeat.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._runners import lightning_module
from ._workloads import SEED, clock

SAVE_VARIANTS = ("none", "sync", "async", "lightning_none", "lightning_sync", "lightning_async")
LABELS = {
    "none": "ftrain.fit, no saves",
    "sync": "ftrain.fit, synchronous saves",
    "async": "ftrain.fit, background saves (default)",
    "lightning_none": "Lightning, no saves",
    "lightning_sync": "Lightning, ModelCheckpoint",
    "lightning_async": "Lightning, ModelCheckpoint + AsyncCheckpointIO",
}


def big_mlp(width: int, depth: int) -> nn.Module:
    """``depth`` square ``width`` layers with ReLU, then 10 classes."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _setup(width: int, depth: int, batch: int, steps: int, device: torch.device) -> Any:
    torch.manual_seed(SEED)
    model = big_mlp(width, depth).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps * batch, width, generator=g).to(device)
    y = torch.randint(0, 10, (steps * batch,), generator=g).to(device)
    return model, x, y


def _loss(model: nn.Module, b: Any) -> torch.Tensor:
    return F.cross_entropy(model(b[0]), b[1])


class Times:
    """The clock at each batch handed out: the intervals are the steps' times."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def stamp(self, batches: Any) -> Iterator[Any]:
        for batch in batches:
            self.at.append(clock())
            yield batch

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.at, self.at[1:], strict=False)]


def _batches(x: torch.Tensor, y: torch.Tensor, b: int) -> Iterator[Any]:
    return ((x[i : i + b], y[i : i + b]) for i in range(0, len(x), b))


class _Loader:
    """Fixed batches in order, stamped; re-iterable (one epoch here)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, times: Times) -> None:
        self.x, self.y, self.batch, self.times = x, y, batch, times

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def __iter__(self) -> Iterator[Any]:
        return self.times.stamp(_batches(self.x, self.y, self.batch))


def run_ftrain_saves(mode: str, cfg: dict[str, Any], root: str, device: torch.device) -> Any:
    """One ``fit`` run: ``mode`` "none", "sync" or "async"; (step µs, total s, saves)."""
    import ftrain as ft

    model, x, y = _setup(cfg["width"], cfg["depth"], cfg["batch"], cfg["steps"], device)
    state = ft.TrainState.create(model, torch.optim.AdamW(model.parameters(), lr=1e-4), seed=0)
    times = Times()
    loader = _Loader(x, y, cfg["batch"], times)
    policy: Any = None
    if mode != "none":
        policy = ft.checkpoint.last(every_n_train_steps=cfg["every"])
    start = clock()
    ft.fit(
        state,
        ft.train_step(_loss),
        loader,
        max_epochs=1,
        logger=False,
        checkpoint=policy,
        enable_checkpointing=mode != "none",
        async_checkpointing=mode == "async",
        enable_model_summary=False,
        enable_progress_bar=False,
        accelerator=device.type,
        devices=1,
        default_root_dir=root,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = clock() - start
    return times.intervals(), total


def run_lightning_saves(mode: str, cfg: dict[str, Any], root: str, device: torch.device) -> Any:
    """Lightning's Trainer: no saves, ModelCheckpoint, or that with AsyncCheckpointIO."""
    pl = lightning_module()
    if pl is None:
        raise RuntimeError("Lightning is not installed")
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model, x, y = _setup(cfg["width"], cfg["depth"], cfg["batch"], cfg["steps"], device)
    times = Times()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return _loss(self.net, batch)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.net.parameters(), lr=1e-4)

    saving = mode != "lightning_none"
    callbacks = (
        [pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=cfg["every"])]
        if saving
        else []
    )
    plugins = [pl.plugins.io.AsyncCheckpointIO()] if mode == "lightning_async" else None
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=saving,
        callbacks=callbacks,
        plugins=plugins,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=root,
    )
    start = clock()
    trainer.fit(Module(), train_dataloaders=_Loader(x, y, cfg["batch"], times))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = clock() - start
    return times.intervals(), total


def _in_run(intervals: list[float], every: int) -> dict[str, float]:
    """Within one run: the median step, the stall of each save (its step's excess
    over the median), what the following steps lose meanwhile (a background write
    sharing the CPU), and the run's time over ``steps × median`` (noise for a run
    without saves; drift of the machine's load cancels out)."""
    median = statistics.median(intervals)
    saves = [i for i in range(len(intervals)) if every and (i + 1) % every == 0]
    stall = [intervals[i] - median for i in saves]
    after = [sum(t - median for t in intervals[i + 1 : i + every]) for i in saves]
    return {
        "step_ms": median * 1e3,
        "saves_in_window": float(len(saves)),
        "stall_ms": statistics.mean(stall) * 1e3 if stall else 0.0,
        "after_ms": statistics.mean(after) * 1e3 if after else 0.0,
        "in_run_ratio": sum(intervals) / (len(intervals) * median),
    }


def save_benchmark(
    device: torch.device,
    quick: bool,
    repeats: int,
    with_lightning: bool = True,
    steps: int | None = None,
) -> dict[str, Any]:
    """Time every variant, alternating; report medians, ratios and the stall per save.

    ``steps``: optimizer steps per run (default 61: three saves every 20 steps in the
    steady-state window; quick runs are a small model, seconds long).
    """
    cfg = (
        {"width": 256, "depth": 2, "batch": 8, "steps": 16, "every": 5}
        if quick
        else {"width": 2048, "depth": 6, "batch": 4, "steps": 61, "every": 20}
    )
    if steps is not None:
        cfg["steps"] = steps
    cfg["params"] = sum(p.numel() for p in big_mlp(cfg["width"], cfg["depth"]).parameters())
    variants = ["none", "sync", "async"]
    if with_lightning and lightning_module() is not None:
        variants += ["lightning_none", "lightning_sync", "lightning_async"]
    raw: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-saves-") as tmp:
        for r in range(repeats):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                root = os.path.join(tmp, f"{v}-{r}")
                gc.collect()
                run = run_lightning_saves if v.startswith("lightning") else run_ftrain_saves
                raw[v].append(run(v, cfg, root, device))
        sizes = [
            os.path.getsize(os.path.join(dp, f))
            for dp, _, files in os.walk(tmp)
            for f in files
            if f.endswith(".ckpt")
        ]
    out: dict[str, Any] = {"config": cfg, "repeats": repeats, "variants": {}}
    out["checkpoint_mib"] = max(sizes) / 2**20 if sizes else None
    for v in variants:
        base = "lightning_none" if v.startswith("lightning") else "none"
        saving = v != base
        runs = [_in_run(iv, cfg["every"] if saving else 0) for iv, _ in raw[v]]
        total_ratio = [a[1] / b[1] for a, b in zip(raw[v], raw[base], strict=True)]
        step_ratio = [sum(a[0]) / sum(b[0]) for a, b in zip(raw[v], raw[base], strict=True)]
        out["variants"][v] = {
            **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            "total_s": statistics.median(a[1] for a in raw[v]),
            "run_ratio": statistics.median(step_ratio),
            "total_ratio": statistics.median(total_ratio),
        }
    out["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return out
