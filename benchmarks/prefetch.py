"""``python -m benchmarks.prefetch``: how much of a slow loader's time ``fit(prefetch=N)`` hides.

The loader sleeps before yielding each batch (a stand-in for reading and decoding;
sleeping releases the GIL as I/O does): ``--delay_ms``, or by default as long as the
measured step, the case where prefetch can hide the most. Each workload (the suite's tiny
and mid MLPs) trains one epoch with ``prefetch=0`` and ``prefetch=N``; the table shows
the step time alone (no delay), the loader's total delay, both run times, the time
hidden (``off - on``) and the most that could be hidden (``min(delay, steps)``). Both
runs end with bit-identical weights (checked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

import ftrain as ft

from ._workloads import WORKLOADS, loss_fn, make_data, make_model, make_optimizer

FLAGS = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


class SlowLoader:
    """Batches of in-memory tensors, each ``delay`` seconds late."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, delay: float) -> None:
        self.x, self.y, self.batch_size, self.delay = x, y, batch_size, delay

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        for i in range(len(self)):
            if self.delay:
                time.sleep(self.delay)
            yield self.x[i * bs : (i + 1) * bs], self.y[i * bs : (i + 1) * bs]


def _run(name: str, batches: int, delay: float, prefetch: int, device: torch.device) -> Any:
    workload = WORKLOADS[name]
    x, y = make_data(workload, batches, torch.device("cpu"))
    model = make_model(workload, device)
    state = ft.TrainState.create(model, make_optimizer(model))
    loader = SlowLoader(x, y, workload.batch_size, delay)
    began = time.perf_counter()
    result = ft.fit(
        state,
        ft.train_step(loss_fn),
        loader,
        max_epochs=1,
        checkpoint=False,
        prefetch=prefetch,
        accelerator=device.type,
        **FLAGS,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, result.state.model


def measure(name: str, batches: int, delay: float | None, depth: int, device: torch.device) -> dict:
    """One workload: step time alone, then the slow loader without and with prefetch."""
    _run(name, min(batches, 4), 0.0, 0, device)  # warm-up
    steps, _ = _run(name, batches, 0.0, 0, device)
    if delay is None:
        delay = steps / batches
    off, a = _run(name, batches, delay, 0, device)
    on, b = _run(name, batches, delay, depth, device)
    equal = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    return {
        "workload": name,
        "batches": batches,
        "steps_s": steps,
        "delay_s": delay * batches,
        "off_s": off,
        "on_s": on,
        "hidden_s": off - on,
        "hideable_s": min(delay * batches, steps),
        "equal_weights": equal,
    }


def markdown(rows: list[dict], depth: int, device: str) -> str:
    head = (
        f"prefetch={depth} on {device}, one epoch, seconds\n\n"
        "| workload | batches | steps alone | loader delay | prefetch off | prefetch on "
        "| hidden | most hideable | same weights |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['workload']} | {r['batches']} | {r['steps_s']:.3f} | {r['delay_s']:.3f} "
        f"| {r['off_s']:.3f} | {r['on_s']:.3f} | {r['hidden_s']:.3f} | {r['hideable_s']:.3f} "
        f"| {r['equal_weights']} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prefetch", description=__doc__)
    p.add_argument("--workloads", default="tiny,mid")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--delay_ms", type=float, default=None, help="default: the step time")
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    rows = []
    for name in args.workloads.split(","):
        print(f"[prefetch] {name}", file=sys.stderr, flush=True)
        delay = None if args.delay_ms is None else args.delay_ms / 1000
        rows.append(measure(name, args.batches, delay, args.prefetch, device))
    print(markdown(rows, args.prefetch, args.device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["equal_weights"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
