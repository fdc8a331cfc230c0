"""What saving checkpoints costs a run: no saves vs synchronous vs background saves.

A ~25M-parameter MLP (six 2048×2048 layers, 100 MB of fp32 weights; with AdamW's
two moments a checkpoint is about 300 MB) trains with ``fit`` and a policy that
saves every ``every`` optimizer steps. The three runs (and Lightning's, when it is
installed: no saves, ``ModelCheckpoint``, ``ModelCheckpoint`` + ``AsyncCheckpointIO``)
alternate in one process, order rotated each repeat, so machine noise hits them
alike. Reported per variant: the steady-state time per step (between the first and
the last batch, which holds ``(steps - 1) // every`` saves; the final save after
the last batch is outside it), the whole run's wall time (the final save and the
wait for it included), the ratio of each to the no-save run of the same repeat,
and the stall: the extra steady-state time per save, i.e. what a save costs the
training loop.
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
from ._workloads import SEED, Stamps, clock, stamped

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


def run_ftrain_saves(mode: str, cfg: dict[str, Any], root: str, device: torch.device) -> Any:
    """One ``fit`` run: ``mode`` "none", "sync" or "async"; (step µs, total s, saves)."""
    import ftrain as ft

    from ._runners import _stamped_loader_class

    model, x, y = _setup(cfg["width"], cfg["depth"], cfg["batch"], cfg["steps"], device)
    state = ft.TrainState.create(model, torch.optim.AdamW(model.parameters(), lr=1e-4), seed=0)
    stamps = Stamps()
    loader = _stamped_loader_class()(x, y, batch_size=cfg["batch"], stamps=stamps)
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
    return stamps.per_step_us(), total


def run_lightning_saves(mode: str, cfg: dict[str, Any], root: str, device: torch.device) -> Any:
    """Lightning's Trainer: no saves, ModelCheckpoint, or that with AsyncCheckpointIO."""
    pl = lightning_module()
    if pl is None:
        raise RuntimeError("Lightning is not installed")
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model, x, y = _setup(cfg["width"], cfg["depth"], cfg["batch"], cfg["steps"], device)
    stamps = Stamps()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return _loss(self.net, batch)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.net.parameters(), lr=1e-4)

    class Data:
        def __len__(self) -> int:
            return cfg["steps"]

        def __iter__(self) -> Iterator[Any]:
            b = cfg["batch"]
            return stamped(((x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)), stamps)

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
    trainer.fit(Module(), train_dataloaders=Data())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = clock() - start
    return stamps.per_step_us(), total


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
        step_ratio = [a[0] / b[0] for a, b in zip(raw[v], raw[base], strict=True)]
        total_ratio = [a[1] / b[1] for a, b in zip(raw[v], raw[base], strict=True)]
        # Saves between the first and the last batch (the steady-state window).
        saves = 0 if v in ("none", "lightning_none") else (cfg["steps"] - 1) // cfg["every"]
        gaps = cfg["steps"] - 1
        stall = [
            (a[0] - b[0]) * gaps / saves / 1e3 if saves else 0.0
            for a, b in zip(raw[v], raw[base], strict=True)
        ]
        out["variants"][v] = {
            "step_us": statistics.median(a[0] for a in raw[v]),
            "total_s": statistics.median(a[1] for a in raw[v]),
            "saves_in_window": saves,
            "step_ratio": statistics.median(step_ratio),
            "total_ratio": statistics.median(total_ratio),
            "stall_ms_per_save": statistics.median(stall),
            "runs": [list(a) for a in raw[v]],
        }
    out["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return out
