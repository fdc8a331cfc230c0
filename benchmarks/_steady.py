"""Steady-state cost per step of ``fit`` + ``TensorLoader`` over the physical limit.

The limit is a hand loop over batches sliced in advance: no loader, no bookkeeping,
nothing but forward, backward, ``optimizer.step()`` and ``zero_grad``. ``fit`` trains
the same tiny MLP with Adam on the same batches in the same order (a ``TensorLoader``
without shuffling). Each loop runs ``long`` and ``short`` steps; ``(T_long - T_short) /
(long - short)`` is its steady-state time per step, with every fixed cost (setup,
loggers opening and closing, the first step) cancelled. Three ``fit`` variants:
without a logger, with TensorBoard every 50 steps (against a hand loop that writes
the same scalars to a ``SummaryWriter``), and with the progress bar (drawn into
/dev/null as on a terminal). All runs alternate in one process, order rotated each
repeat; medians over repeats. Checkpointing and the model summary are off.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from typing import Any

import torch

from ._runners import _bar_to_devnull
from ._workloads import SEED, WORKLOADS, clock, loss_fn, make_data, make_model

STEADY_VARIANTS = ("hand", "hand_tb", "fit", "fit_tb", "fit_bar")
BASE = {"fit": "hand", "fit_tb": "hand_tb", "fit_bar": "hand"}
LABELS = {
    "hand": "hand loop, pre-sliced batches",
    "hand_tb": "hand loop + SummaryWriter every 50 steps",
    "fit": "fit + TensorLoader, no logger",
    "fit_tb": "fit + TensorLoader, TensorBoard every 50 steps",
    "fit_bar": "fit + TensorLoader, progress bar",
}
LOG_EVERY = 50


def _adam(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _hand(x: torch.Tensor, y: torch.Tensor, steps: int, log_dir: str | None) -> Any:
    bs = WORKLOADS["tiny"].batch_size
    batches = [(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]) for i in range(steps)]
    model = make_model(WORKLOADS["tiny"], x.device)
    opt = _adam(model)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)
    start = clock()
    for i, batch in enumerate(batches):
        loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if writer is not None and (i + 1) % LOG_EVERY == 0:
            writer.add_scalar("loss", loss.item(), i)
            writer.add_scalar("epoch", 0, i)
    if writer is not None:
        writer.close()
    return clock() - start, model


def _fit(x: torch.Tensor, y: torch.Tensor, steps: int, log_dir: str, kind: str) -> Any:
    import ftrain as ft
    from ftrain.loggers import TensorBoardLogger

    bs = WORKLOADS["tiny"].batch_size
    model = make_model(WORKLOADS["tiny"], x.device)
    state = ft.TrainState.create(model, _adam(model), seed=SEED)
    loader = ft.TensorLoader(x[: steps * bs], y[: steps * bs], batch_size=bs, shuffle=False)
    logger: Any = TensorBoardLogger(log_dir, name="steady") if kind == "fit_tb" else False
    flags = {
        "max_epochs": 1,
        "logger": logger,
        "log_every_n_steps": LOG_EVERY,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": kind == "fit_bar",
        "accelerator": x.device.type,
        "devices": 1,
        "default_root_dir": log_dir,
    }
    step = ft.train_step(loss_fn)
    if kind == "fit_bar":
        with _bar_to_devnull():
            start = clock()
            result = ft.fit(state, step, loader, **flags)
            elapsed = clock() - start
    else:
        start = clock()
        result = ft.fit(state, step, loader, **flags)
        elapsed = clock() - start
    return elapsed, result.state.model


def _run(kind: str, x: torch.Tensor, y: torch.Tensor, steps: int, tmp: str) -> Any:
    if kind == "hand":
        return _hand(x, y, steps, None)
    if kind == "hand_tb":
        return _hand(x, y, steps, tempfile.mkdtemp(dir=tmp))
    return _fit(x, y, steps, tempfile.mkdtemp(dir=tmp), kind)


def steady_benchmark(
    repeats: int, quick: bool, device: torch.device, variants: tuple[str, ...] = STEADY_VARIANTS
) -> dict[str, Any]:
    """Per-step steady-state time of each variant and ``fit``'s overhead over its hand loop."""
    long, short = (240, 40) if quick else (1200, 200)
    x, y = make_data(WORKLOADS["tiny"], long, device)
    runs: dict[str, dict[int, list[float]]] = {v: {long: [], short: []} for v in variants}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-steady-") as tmp:
        for kind in variants:  # warm-up: first-call costs (imports, allocator)
            _run(kind, x, y, short, tmp)
        models: dict[str, torch.nn.Module] = {}
        for r in range(repeats):
            order = list(variants[r % len(variants) :] + variants[: r % len(variants)])
            for kind in order:
                for steps in (long, short) if r % 2 == 0 else (short, long):
                    gc.collect()
                    elapsed, model = _run(kind, x, y, steps, tmp)
                    runs[kind][steps].append(elapsed)
                    if steps == long:
                        models[kind] = model
        for kind in variants:
            base = BASE.get(kind)
            if base in models:
                same[kind] = all(
                    torch.equal(a, b)
                    for a, b in zip(
                        models[kind].parameters(), models[base].parameters(), strict=True
                    )
                )
    per_step = {
        kind: [(a - b) / (long - short) * 1e6 for a, b in zip(t[long], t[short], strict=True)]
        for kind, t in runs.items()
    }
    out: dict[str, Any] = {"long": long, "short": short, "repeats": repeats, "variants": {}}
    for kind in variants:
        entry: dict[str, Any] = {"step_us": statistics.median(per_step[kind])}
        base = BASE.get(kind)
        if base in per_step:
            diffs = [a - b for a, b in zip(per_step[kind], per_step[base], strict=True)]
            entry["overhead_us"] = statistics.median(diffs)
            entry["overhead_us_runs"] = [round(d, 1) for d in diffs]
            entry["equal_to_hand"] = same.get(kind)
        out["variants"][kind] = entry
    return out
