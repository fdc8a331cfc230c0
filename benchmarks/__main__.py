"""``python -m benchmarks``: time ftrain against a hand-written loop and report."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

import torch

from ._report import gpu_markdown, machine, markdown, write_docs
from ._runners import VARIANTS, lightning_module
from ._workloads import SETTINGS, WORKLOADS, set_clock

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _names(text: str, known: dict[str, Any] | tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"--{what}: unknown {unknown or names}; known: {', '.join(known)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs: a smoke test, not figures")
    p.add_argument("--workloads", default="tiny,mid,cnn", help="comma-separated: tiny,mid,cnn")
    p.add_argument("--configs", default="plain,acc_clip_log", help="plain,acc_clip_log")
    p.add_argument(
        "--variants",
        default=None,
        help="raw,ftrain,ftrain_bar,lightning (default: all; lightning only if installed)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed runs per variant (5; quick 2)")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for results.json / results.md")
    p.add_argument("--docs", default=None, help="also write the performance page to this path")
    p.add_argument("--compile", action="store_true", help="also ft.compile vs eager (mid, cnn)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="wall: perf_counter; cpu: this process's CPU time, steadier on a busy machine",
    )
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--no-import", action="store_true", help="skip the import-time measurement")
    p.add_argument("--no-loader", action="store_true", help="skip TensorLoader vs DataLoader")
    p.add_argument(
        "--saves",
        action="store_true",
        help="also the cost of saving a 25M-parameter model every 20 steps (minutes)",
    )
    p.add_argument(
        "--steady",
        action="store_true",
        help="also fit's steady-state overhead per step over a hand loop (1200 vs 200 steps)",
    )
    p.add_argument(
        "--loop-cost",
        action="store_true",
        help="also fit's own cost per batch around a no-op step, and the step's bookkeeping",
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also fit's overhead per step in CPU instructions (valgrind; ~15 min)",
    )
    p.add_argument(
        "--gpu-check",
        action="store_true",
        help="the GPU check only (implied by --device cuda); with --device cpu, a dry run",
    )
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    workloads = _names(args.workloads, WORKLOADS, "workloads")
    configs = _names(args.configs, SETTINGS, "configs")
    pl = lightning_module()
    if args.variants is None:
        variants = [v for v in VARIANTS if v != "lightning" or pl is not None]
    else:
        variants = _names(args.variants, VARIANTS, "variants")
        if "lightning" in variants and pl is None:
            print("Lightning is not installed: skipping that variant", file=sys.stderr)
            variants.remove("lightning")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device on this machine; nothing was run", file=sys.stderr)
        return 0
    if args.device == "cuda" or args.gpu_check:
        return _gpu_main(args, argv, repeats)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type == "cuda":
        raise SystemExit("--clock cpu cannot time a GPU: the host only waits for it")
    set_clock(args.clock)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from ._extras import compile_benchmark, loader_benchmark
    from ._measure import import_time, peak_rss, time_workload

    began = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(args.threads, device),
        "quick": quick,
        "clock": args.clock,
        "repeats": repeats,
        "lightning": getattr(pl, "__version__", None) if pl is not None else None,
        "workloads": [],
    }
    if not args.no_import:
        results["import"] = import_time(3 if quick else 7)
    for name in workloads:
        for config in configs:
            print(f"[bench] {name} / {config}", file=sys.stderr, flush=True)
            entry = time_workload(name, config, variants, repeats, quick, device)
            if not args.no_rss:
                rss = peak_rss(name, config, variants, quick, args.device, args.threads)
                base = rss.get("raw", {}).get("peak_rss_mib")
                for variant, mem in rss.items():
                    target = entry["variants"][variant]
                    target.update(mem)
                    if base is not None and variant != "raw":
                        target["rss_delta_mib"] = mem["peak_rss_mib"] - base
            results["workloads"].append(entry)
    if device.type == "cuda":
        results["sync_check"] = _sync_check(workloads[0], device)
    if not args.no_loader and device.type == "cpu":
        print("[bench] TensorLoader vs DataLoader", file=sys.stderr, flush=True)
        results["loader"] = loader_benchmark(repeats, quick)
    if args.steady:
        from ._steady import steady_benchmark

        print("[bench] steady-state overhead per step", file=sys.stderr, flush=True)
        results["steady"] = steady_benchmark(max(repeats, 3), quick, device)
    if args.loop_cost and device.type == "cpu":
        from ._loopcost import loop_cost

        print("[bench] fit's loop around a no-op step", file=sys.stderr, flush=True)
        results["loop_cost"] = loop_cost(max(repeats, 3), quick)
    if args.instructions and device.type == "cpu":
        from ._instructions import INSTRUCTION_VARIANTS, instruction_benchmark

        print("[bench] instructions per step (callgrind)", file=sys.stderr, flush=True)
        results["instructions"] = instruction_benchmark(INSTRUCTION_VARIANTS)
    if args.saves:
        from ._saves import save_benchmark

        print("[bench] saving every 20 steps", file=sys.stderr, flush=True)
        results["saves"] = save_benchmark(device, quick, 1)
    if args.compile:
        results["compile"] = []
        for name in [w for w in ("mid", "cnn") if w in workloads] or ["mid", "cnn"]:
            print(f"[bench] ft.compile / {name}", file=sys.stderr, flush=True)
            results["compile"].append(compile_benchmark(name, repeats, quick, device))
    results["elapsed_s"] = time.perf_counter() - began

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    if args.docs:
        write_docs(args.docs, results)
    print(table)

    unequal = [
        f"{w['workload']}/{w['config']}/{v}"
        for w in results["workloads"]
        for v, r in w["variants"].items()
        if v.startswith("ftrain") and r.get("equal_to_raw") is False
    ]
    if unequal:
        print(f"FAILED: results differ from the hand loop's: {unequal}", file=sys.stderr)
        return 1
    return 0


def _gpu_main(args: argparse.Namespace, argv: list[str] | None, repeats: int) -> int:
    """The GPU check (see ``_gpu``): results.json / results.md under --out."""
    from ._gpu import gpu_check

    device = torch.device(args.device)
    set_clock("wall")
    torch.set_num_threads(args.threads)
    print(f"[bench] GPU check on {device}", file=sys.stderr, flush=True)
    results: dict[str, Any] = {
        "command": "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(args.threads, device),
        "gpu_check": gpu_check(device, args.quick, min(repeats, 3)),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    table = gpu_markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


def _sync_check(workload: str, device: torch.device) -> dict[str, str]:
    """Run the hand loop and fit with CUDA sync errors on between log points."""
    import tempfile

    from ._runners import run_variant
    from ._workloads import make_data

    out: dict[str, str] = {}
    w = WORKLOADS[workload]
    settings = SETTINGS["acc_clip_log"].for_quick(True)
    batches, _ = w.schedule(True)
    data = make_data(w, batches, device)
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-sync-") as tmp:
        for variant in ("raw", "ftrain"):
            try:
                run_variant(variant, w, settings, data, 1, tmp, device, sync_check=True)
                out[variant] = "no host-device sync between log points"
            except RuntimeError as exc:
                out[variant] = f"sync detected: {str(exc).splitlines()[0]}"
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
