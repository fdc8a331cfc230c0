"""Side benchmarks: ``ft.compile`` vs eager, ``ft.TensorLoader`` vs ``DataLoader``."""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

from ._workloads import (
    SEED,
    SETTINGS,
    WORKLOADS,
    Stamps,
    clock,
    hand_batches,
    hand_loop,
    loss_fn,
    make_data,
    make_model,
    make_optimizer,
    stamped,
)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# ft.compile ----------------------------------------------------------------------------


def _step_for(workload_name: str, device: torch.device, compile_kwargs: dict[str, Any] | None):
    import ftrain as ft

    model = make_model(WORKLOADS[workload_name], device)
    state = ft.TrainState.create(model, make_optimizer(model), seed=SEED)
    step = ft.train_step(loss_fn)
    if compile_kwargs is not None:
        step = ft.compile(**compile_kwargs)(step)
    return state, step


def _timed_steps(step: Any, state: Any, batches: list[Any], device: torch.device) -> Any:
    start = clock()
    for batch in batches:
        state, metrics = step(state, batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return state, (clock() - start) / len(batches) * 1e6, metrics["loss"]


def compile_benchmark(
    workload_name: str, repeats: int, quick: bool, device: torch.device
) -> dict[str, Any]:
    """Compile time and steady-state step time of ``ft.compile`` (inductor) vs eager.

    If inductor fails here, its error is recorded and ``backend="aot_eager"`` measured.
    """
    import torch._dynamo

    workload = WORKLOADS[workload_name]
    n = 4 if quick else 20
    x, y = make_data(workload, n, device)
    batches = list(hand_batches(x, y, workload.batch_size, 0))
    out: dict[str, Any] = {"workload": workload_name, "steps_per_block": n}

    eager_state, eager = _step_for(workload_name, device, None)
    start = time.perf_counter()
    eager_state, _ = eager(eager_state, batches[0])
    out["eager_first_step_s"] = time.perf_counter() - start

    backend = "inductor"
    torch._dynamo.reset()
    try:
        state, compiled = _step_for(workload_name, device, {})
        start = time.perf_counter()
        state, _ = compiled(state, batches[0])
        out["compile_s"] = time.perf_counter() - start
    except Exception as exc:  # inductor needs a working C++ toolchain on CPU
        out["inductor_error"] = _first_line(exc)
        backend = "aot_eager"
        torch._dynamo.reset()
        state, compiled = _step_for(workload_name, device, {"backend": backend})
        start = time.perf_counter()
        state, _ = compiled(state, batches[0])
        out["compile_s"] = time.perf_counter() - start
    out["backend"] = backend

    eager_us, compiled_us = [], []
    for _ in range(repeats):
        gc.collect()
        eager_state, t_eager, loss_eager = _timed_steps(eager, eager_state, batches, device)
        gc.collect()
        state, t_compiled, loss_compiled = _timed_steps(compiled, state, batches, device)
        eager_us.append(t_eager)
        compiled_us.append(t_compiled)
    out["eager_step_us"] = _median(eager_us)
    out["compiled_step_us"] = _median(compiled_us)
    out["speedup"] = out["eager_step_us"] / out["compiled_step_us"]
    out["last_loss_abs_diff"] = abs(float(loss_eager) - float(loss_compiled))
    torch._dynamo.reset()
    return out


# ft.TensorLoader vs DataLoader ---------------------------------------------------------


def _stamping_collate(stamps: Stamps) -> Callable[[list[Any]], Any]:
    def collate(samples: list[Any]) -> Any:
        batch = default_collate(samples)
        now = clock()
        if not stamps.count:
            stamps.first = now
        stamps.last = now
        stamps.count += 1
        return batch

    return collate


def _per_batch_us(make_iter: Callable[[int], Iterator[Any]], epochs: int) -> float:
    count = 0
    start = clock()
    for epoch in range(epochs):
        for _ in make_iter(epoch):
            count += 1
    return (clock() - start) / count * 1e6


def loader_benchmark(repeats: int, quick: bool) -> dict[str, Any]:
    """Per-batch time of each loader on the tiny MLP's data, and end-to-end training."""
    import ftrain as ft

    workload = WORKLOADS["tiny"]
    batches, epochs = workload.schedule(quick)
    device = torch.device("cpu")
    x, y = make_data(workload, batches, device)
    bs = workload.batch_size
    tensor_loader = ft.TensorLoader(x, y, batch_size=bs)
    data_loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)

    def tl_epoch(epoch: int) -> Iterator[Any]:
        tensor_loader.set_epoch(epoch)
        return iter(tensor_loader)

    iterators: dict[str, Callable[[int], Iterator[Any]]] = {
        "TensorLoader": tl_epoch,
        "DataLoader(TensorDataset)": lambda epoch: iter(data_loader),
        "hand index_select": lambda epoch: hand_batches(x, y, bs, epoch),
    }
    per_batch: dict[str, list[float]] = {name: [] for name in iterators}
    for _ in range(repeats):
        for name, make_iter in iterators.items():
            per_batch[name].append(_per_batch_us(make_iter, epochs))

    settings = SETTINGS["plain"]
    runs: dict[str, list[float]] = {
        "hand loop + DataLoader": [],
        "hand loop + index_select": [],
        "fit + DataLoader": [],
        "fit + TensorLoader": [],
    }

    def hand(with_loader: bool) -> float:
        stamps = Stamps()
        model = make_model(workload, device)
        if with_loader:
            loader = DataLoader(
                TensorDataset(x, y),
                batch_size=bs,
                shuffle=True,
                collate_fn=_stamping_collate(stamps),
            )

            def of_epoch(epoch: int) -> Any:
                return loader

        else:

            def of_epoch(epoch: int) -> Any:
                return stamped(hand_batches(x, y, bs, epoch), stamps)

        hand_loop(model, make_optimizer(model), of_epoch, epochs, settings, None)
        return stamps.per_step_us()

    def fit(with_loader: bool, tmp: str) -> float:
        stamps = Stamps()
        model = make_model(workload, device)
        state = ft.TrainState.create(model, make_optimizer(model), seed=SEED)
        if with_loader:
            data: Any = DataLoader(
                TensorDataset(x, y),
                batch_size=bs,
                shuffle=True,
                collate_fn=_stamping_collate(stamps),
            )
        else:
            from ._runners import _stamped_loader_class

            data = _stamped_loader_class()(x, y, batch_size=bs, stamps=stamps)
        ft.fit(
            state,
            ft.train_step(loss_fn),
            data,
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            accelerator="cpu",
            default_root_dir=tmp,
        )
        return stamps.per_step_us()

    with tempfile.TemporaryDirectory(prefix="ftrain-bench-loader-") as tmp:
        fit(True, tmp)  # warm-up
        fit(False, tmp)
        for _ in range(repeats):
            gc.collect()
            runs["hand loop + DataLoader"].append(hand(True))
            gc.collect()
            runs["hand loop + index_select"].append(hand(False))
            gc.collect()
            runs["fit + DataLoader"].append(fit(True, os.path.join(tmp, "a")))
            gc.collect()
            runs["fit + TensorLoader"].append(fit(False, os.path.join(tmp, "b")))
    return {
        "batch_size": bs,
        "batches_per_epoch": batches,
        "epochs": epochs,
        "per_batch_us": {name: _median(v) for name, v in per_batch.items()},
        "train_step_us": {name: _median(v) for name, v in runs.items()},
    }
