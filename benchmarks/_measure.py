"""Measurements: A/B timing in one process, peak RSS and import time in fresh ones."""

from __future__ import annotations

import compileall
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from ._runners import RunResult, run_variant
from ._workloads import SETTINGS, WORKLOADS, make_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _same(a: RunResult, b: RunResult) -> bool:
    return a.final_loss == b.final_loss and all(
        torch.equal(p, q) for p, q in zip(a.params, b.params, strict=True)
    )


def time_workload(
    workload_name: str,
    settings_name: str,
    variants: Sequence[str],
    repeats: int,
    quick: bool,
    device: torch.device,
) -> dict[str, Any]:
    """Time ``variants`` on one workload, alternating them within each repeat.

    Each repeat runs every variant once, in an order rotated by one per repeat, so
    slow drifts of the machine hit all variants alike. A variant's figure is the
    median over repeats; ratio and overhead are medians of the per-repeat pairs
    (variant vs the hand loop of the same repeat).
    """
    workload = WORKLOADS[workload_name]
    settings = SETTINGS[settings_name].for_quick(quick)
    batches, epochs = workload.schedule(quick)
    data = make_data(workload, batches, device)
    runs: dict[str, list[RunResult]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-") as tmp:
        # Warm-up (not recorded): first-use costs such as lazy imports and allocator growth.
        for variant in variants:
            run_variant(variant, workload, settings, data, 1, os.path.join(tmp, "warm"), device)
        for r in range(repeats):
            shift = r % len(variants)
            for variant in [*variants[shift:], *variants[:shift]]:
                gc.collect()
                log_dir = os.path.join(tmp, f"{variant}-{r}")
                runs[variant].append(
                    run_variant(variant, workload, settings, data, epochs, log_dir, device)
                )
    raw = runs.get("raw")
    out: dict[str, Any] = {
        "workload": workload_name,
        "config": settings_name,
        "batch_size": workload.batch_size,
        "batches_per_epoch": batches,
        "epochs": epochs,
        "steps": batches * epochs,
        "accumulate": settings.accumulate,
        "clip": settings.clip,
        "log_every_n_steps": settings.log_every,
        "variants": {},
    }
    for variant, results in runs.items():
        entry: dict[str, Any] = {
            "step_us": _median([r.step_us for r in results]),
            "step_us_runs": [round(r.step_us, 2) for r in results],
            "total_s": _median([r.total_s for r in results]),
            "final_loss": results[0].final_loss,
        }
        if raw is not None and variant != "raw":
            pairs = list(zip(raw, results, strict=True))
            entry["ratio"] = _median([v.step_us / b.step_us for b, v in pairs])
            entry["overhead_us"] = _median([v.step_us - b.step_us for b, v in pairs])
            entry["fixed_ms"] = _median(
                [
                    ((v.total_s - b.total_s) - (v.step_us - b.step_us) * 1e-6 * out["steps"]) * 1e3
                    for b, v in pairs
                ]
            )
            entry["equal_to_raw"] = all(_same(b, v) for b, v in pairs)
        out["variants"][variant] = entry
    return out


def peak_rss(
    workload_name: str,
    settings_name: str,
    variants: Sequence[str],
    quick: bool,
    device: str,
    threads: int,
) -> dict[str, dict[str, float]]:
    """Peak RSS (and CUDA max allocated) of each variant, each in a fresh process.

    Two children run at a time; each measures only itself.
    """
    results: dict[str, dict[str, float]] = {}
    pending = list(variants)
    running: list[tuple[str, subprocess.Popen[str]]] = []
    while pending or running:
        while pending and len(running) < 2:
            variant = pending.pop(0)
            args = {
                "workload": workload_name,
                "config": settings_name,
                "variant": variant,
                "quick": quick,
                "device": device,
                "threads": threads,
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._child", json.dumps(args)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
            running.append((variant, proc))
        variant, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"peak-RSS child for {variant} failed:\n{stderr[-2000:]}")
        results[variant] = json.loads(stdout.strip().splitlines()[-1])
    return results


_IMPORT_SCRIPT = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
c1 = time.process_time()
loaded = set(sys.modules)
import ftrain
t2 = time.perf_counter()
c2 = time.process_time()
heavy = [m for m in ("tensorboard", "torch.utils.tensorboard", "lightning", "pytorch_lightning",
                     "tqdm", "cProfile", "numpy.testing") if m in sys.modules and m not in loaded]
print(t1 - t0, t2 - t1, c2 - c1, ",".join(heavy))
"""


def import_time(repeats: int) -> dict[str, Any]:
    """``import torch`` and ``import ftrain`` after it, each in fresh processes (medians).

    ftrain's bytecode is compiled first, as an installed package's is: with
    ``PYTHONDONTWRITEBYTECODE`` set, stale ``.pyc`` files would otherwise be recompiled
    in every process and counted (~30 ms here).
    """
    compileall.compile_dir(os.path.join(ROOT, "ftrain"), quiet=1)
    torch_s, ftrain_s, ftrain_cpu = [], [], []
    heavy = ""
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        torch_s.append(float(out[0]))
        ftrain_s.append(float(out[1]))
        ftrain_cpu.append(float(out[2]))
        heavy = out[3] if len(out) > 3 else ""
    return {
        "torch_ms": _median(torch_s) * 1e3,
        "ftrain_over_torch_ms": _median(ftrain_s) * 1e3,
        "ftrain_over_torch_ms_runs": [round(s * 1e3, 1) for s in ftrain_s],
        # CPU time of the import: what a loaded machine's waiting does not inflate.
        "ftrain_over_torch_cpu_ms": _median(ftrain_cpu) * 1e3,
        "heavy_modules_imported": heavy.split(",") if heavy else [],
        "repeats": repeats,
    }
