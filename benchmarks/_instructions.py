"""Per-step overhead of ``fit`` counted in CPU instructions (``--instructions``).

Timings on a shared machine move by tens of µs between runs, more than the overhead
measured. Instruction counts do not: each variant of the steady-state benchmark
(``_steady``) runs ``long`` and ``short`` steps in its own process under valgrind's
callgrind, and ``(I_long - I_short) / (long - short)`` is its instructions per step,
every fixed cost (imports, setup, the first step) cancelled. ``fit``'s overhead is its
count minus its hand loop's, and as µs at the hand loop's own time per instruction
(``hand µs per step / hand instructions per step``, timed here in the same run). Load
on the machine changes neither count. Needs ``valgrind`` on the PATH; minutes per
variant (torch's import alone runs ~2 min under callgrind).

The progress bar variant is left out: the bar redraws on a clock (at most every
0.1 s), and under valgrind a step takes ~50 times longer, so it would count ~50
times the redraws a real run makes per step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
LONG, SHORT = 400, 100
INSTRUCTION_VARIANTS = ("hand", "fit", "hand_tb", "fit_tb")


def _count(kind: str, steps: int) -> int:
    """Instructions of one process running ``steps`` steps of variant ``kind``."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks._instructions",
        kind,
        str(steps),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return int(found[-1])


def instruction_benchmark(variants: tuple[str, ...], jobs: int = 2) -> dict[str, Any] | None:
    """Instructions per step of each variant, and ``fit``'s overhead over its hand loop."""
    from ._steady import BASE, steady_benchmark

    if shutil.which("valgrind") is None:
        print("[bench] --instructions: valgrind not found, skipped", file=sys.stderr)
        return None
    runs = [(kind, steps) for kind in variants for steps in (LONG, SHORT)]
    with ThreadPoolExecutor(jobs) as pool:
        counts = dict(zip(runs, pool.map(lambda r: _count(*r), runs), strict=True))
    per_step = {k: (counts[k, LONG] - counts[k, SHORT]) / (LONG - SHORT) for k in variants}
    hand = steady_benchmark(3, True, _cpu(), ("hand",))["variants"]["hand"]["step_us"]
    us_per_instruction = hand / per_step["hand"] if "hand" in per_step else None
    out: dict[str, Any] = {"long": LONG, "short": SHORT, "hand_us": hand, "variants": {}}
    for kind in variants:
        entry: dict[str, Any] = {"per_step": per_step[kind]}
        base = BASE.get(kind)
        if base in per_step:
            extra = per_step[kind] - per_step[base]
            entry["overhead"] = extra
            if us_per_instruction is not None:
                entry["overhead_us"] = extra * us_per_instruction
        out["variants"][kind] = entry
    return out


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def instruction_lines(result: dict[str, Any] | None) -> list[str]:
    """The ``--instructions`` table."""
    if not result:
        return []
    from ._report import _f, _table
    from ._steady import LABELS

    rows = [
        [
            LABELS[kind],
            _f(v["per_step"], 0),
            f"{v['overhead']:+,.0f}" if "overhead" in v else "",
            f"{v['overhead_us']:+.1f}" if "overhead_us" in v else "",
        ]
        for kind, v in result["variants"].items()
    ]
    return [
        "",
        f"Instructions per step (callgrind, {result['long']} minus {result['short']} steps; "
        f"µs at the hand loop's {result['hand_us']:.0f} µs per step):",
        "",
        *_table(["variant", "instructions/step", "over its hand loop", "≈ µs"], rows),
    ]


def _child(kind: str, steps: int) -> None:
    import torch

    from ._steady import _run
    from ._workloads import WORKLOADS, make_data

    torch.set_num_threads(1)
    x, y = make_data(WORKLOADS["tiny"], max(steps, LONG), torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-instr-") as tmp:
        _run(kind, x, y, steps, tmp)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
