"""What ``fit`` adds per batch, without a model's time and noise (``--loop-cost``).

A model's step takes hundreds of µs and varies by tens between runs on a shared
machine, which hides the few µs the loop adds. Here the step does nothing but advance
the counters (``no-op step``), so the difference of a long and a short ``fit``
(``long`` minus ``short`` batches) is the loop's own cost per batch: data from a
``TensorLoader``, metric bookkeeping, the stop and validation checks, the progress
counters, and with the default checkpoint policy the per-step "can anything be due"
check. The step's own bookkeeping (``enter_step``/``leave_step``: the per-step seed;
``advance``: the new state) and a ``TensorLoader`` batch against a pre-sliced list are
timed on their own. CPU time of this process; medians over repeats.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import timeit
from typing import Any

import torch

import ftrain as ft
from ftrain._seed import enter_step, leave_step
from ftrain._state import advance

from ._workloads import SEED, WORKLOADS, make_data, make_model

_ONE = torch.tensor(1.0)


def _noop(state: Any, batch: Any) -> Any:
    new = advance(
        state, state.step + 1, state.micro_step + 1, state.batch_idx + 1, None, state.extras
    )
    return new, {"loss": _ONE}


def _fit_seconds(n: int, x: torch.Tensor, y: torch.Tensor, checkpointing: bool) -> float:
    bs = WORKLOADS["tiny"].batch_size
    model = make_model(WORKLOADS["tiny"], x.device)
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters()), seed=SEED)
    loader = ft.TensorLoader(x[: n * bs], y[: n * bs], batch_size=bs, shuffle=False)
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-loop-") as root:
        start = time.process_time()
        ft.fit(
            state,
            _noop,
            loader,
            max_epochs=1,
            logger=False,
            enable_checkpointing=checkpointing,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
            default_root_dir=root,
        )
        return time.process_time() - start


def _per_call_us(stmt: Any, number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def _pieces(x: torch.Tensor, y: torch.Tensor, number: int) -> dict[str, float]:
    bs = WORKLOADS["tiny"].batch_size
    model = make_model(WORKLOADS["tiny"], x.device)
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters()), seed=SEED)
    n = len(x) // bs
    loader = ft.TensorLoader(x[: n * bs], y[: n * bs], batch_size=bs, shuffle=False)
    sliced = [(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]) for i in range(n)]
    return {
        "enter_step + leave_step": _per_call_us(
            lambda: leave_step(enter_step(SEED, 12345, 0, False)), number
        ),
        "advance (the new state)": _per_call_us(
            lambda: advance(state, 1, 2, 3, None, state.extras), number
        ),
        "TensorLoader, per batch": _per_call_us(lambda: sum(1 for _ in loader), 5) / n,
        "pre-sliced list, per batch": _per_call_us(lambda: sum(1 for _ in sliced), 5) / n,
    }


def loop_cost(repeats: int, quick: bool) -> dict[str, Any]:
    """Per-batch µs of ``fit``'s loop around a no-op step, and of the step's bookkeeping."""
    long, short = (1000, 200) if quick else (4000, 400)
    x, y = make_data(WORKLOADS["tiny"], long, torch.device("cpu"))
    runs: dict[str, list[float]] = {"no checkpointing": [], "default checkpoint policy": []}
    _fit_seconds(short, x, y, False)  # warm-up: first-call costs
    for r in range(repeats):
        for label, ckpt in (("no checkpointing", False), ("default checkpoint policy", True)):
            lengths = (long, short) if r % 2 == 0 else (short, long)
            seconds = {n: _fit_seconds(n, x, y, ckpt) for n in lengths}
            runs[label].append((seconds[long] - seconds[short]) / (long - short) * 1e6)
    return {
        "long": long,
        "short": short,
        "repeats": repeats,
        "fit_loop_us": {k: statistics.median(v) for k, v in runs.items()},
        "fit_loop_us_runs": {k: [round(u, 2) for u in v] for k, v in runs.items()},
        "pieces_us": _pieces(x, y, 2000 if quick else 20000),
    }


def loop_cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The ``--loop-cost`` tables."""
    if not cost:
        return []
    lines = [
        "",
        f"fit's loop around a no-op step ({cost['long']} minus {cost['short']} batches, "
        f"median of {cost['repeats']}, CPU time):",
        "",
        "| fit | µs per batch |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in cost["fit_loop_us"].items()]
    lines += ["", "| step bookkeeping and data | µs |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in cost["pieces_us"].items()]
    return lines
