"""The results as JSON and Markdown, and the machine they were measured on."""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import torch

LABELS = {
    "raw": "hand loop",
    "ftrain": "ftrain.fit",
    "ftrain_bar": "ftrain.fit + bar",
    "lightning": "Lightning",
}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": threads,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """All tables of a results dict."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), torch {m['torch']}, "
        f"Python {m['python']}, {m['torch_threads']} torch thread(s), device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f". Options: `{results['command']}`.",
        "",
    ]
    rows = []
    for w in results["workloads"]:
        for variant, v in w["variants"].items():
            rows.append(
                [
                    w["workload"],
                    w["config"],
                    LABELS.get(variant, variant),
                    _f(v["step_us"]),
                    _f(v.get("ratio"), 3),
                    _f(v.get("overhead_us")),
                    _f(v.get("fixed_ms")),
                    _f(v.get("peak_rss_mib")),
                    _f(v.get("rss_delta_mib")),
                    _f(v.get("equal_to_raw")) if "equal_to_raw" in v else "",
                ]
            )
    lines += _table(
        [
            "workload",
            "config",
            "loop",
            "µs/step",
            "ratio",
            "overhead µs/step",
            "fixed ms/run",
            "peak RSS MiB",
            "Δ RSS MiB",
            "same result",
        ],
        rows,
    )
    lines += [
        "",
        "µs/step: median over repeats of the steady-state time between batches. ratio, "
        "overhead: medians of (loop vs the hand loop of the same repeat). fixed ms/run: the rest "
        "of the run's wall time over the hand loop's (loop setup, logger open/close). "
        "same result: final loss and every parameter bit-identical to the hand loop's.",
    ]
    imp = results.get("import")
    if imp:
        lines += [
            "",
            f"`import ftrain` after `import torch`: **{imp['ftrain_over_torch_ms']:.0f} ms** "
            f"(median of {imp['repeats']} fresh processes; `import torch` itself "
            f"{imp['torch_ms']:.0f} ms). Heavy modules imported by it: "
            f"{', '.join(imp['heavy_modules_imported']) or 'none'}.",
        ]
    sync = results.get("sync_check")
    if sync:
        lines += ["", "CUDA sync check (`set_sync_debug_mode('error')` between log points): "]
        lines += [f"- {k}: {v}" for k, v in sync.items()]
    loader = results.get("loader")
    if loader:
        lines += [
            "",
            f"Loaders on the tiny MLP's data (batch {loader['batch_size']}, "
            f"{loader['batches_per_epoch']} batches × {loader['epochs']} epochs):",
            "",
        ]
        lines += _table(
            ["loader", "µs/batch (iteration only)"],
            [[k, _f(v)] for k, v in loader["per_batch_us"].items()],
        )
        lines += [""]
        lines += _table(
            ["training (tiny MLP, plain)", "µs/step"],
            [[k, _f(v)] for k, v in loader["train_step_us"].items()],
        )
    comp = results.get("compile")
    if comp:
        lines += ["", "`ft.compile` (torch.compile of the loss) vs eager:", ""]
        rows = [
            [
                c["workload"],
                c["backend"],
                _f(c["compile_s"], 2),
                _f(c["eager_step_us"]),
                _f(c["compiled_step_us"]),
                _f(c["speedup"], 2),
            ]
            for c in comp
        ]
        lines += _table(
            ["workload", "backend", "compile s", "eager µs/step", "compiled µs/step", "speedup"],
            rows,
        )
        errors = {c["inductor_error"] for c in comp if "inductor_error" in c}
        for err in sorted(errors):
            lines += ["", f"inductor failed here: `{err}`; measured with `aot_eager` instead."]
    lines += steady_lines(results.get("steady"))
    if results.get("loop_cost"):
        from ._loopcost import loop_cost_lines

        lines += loop_cost_lines(results["loop_cost"])
    if results.get("instructions"):
        from ._instructions import instruction_lines

        lines += instruction_lines(results["instructions"])
    lines += save_lines(results.get("saves"))
    if results.get("lightning") is None:
        lines += ["", "Lightning: not installed, skipped."]
    else:
        lines += ["", f"Lightning {results['lightning']} (Trainer with overhead features off)."]
    return "\n".join(lines) + "\n"


def steady_lines(steady: dict[str, Any] | None) -> list[str]:
    """The steady-state overhead table (``--steady``)."""
    if not steady:
        return []
    from ._steady import LABELS as STEADY_LABELS

    lines = [
        "",
        f"Steady state, tiny MLP + Adam ({steady['long']} minus {steady['short']} steps, "
        f"median of {steady['repeats']}):",
        "",
    ]
    rows = [
        [
            STEADY_LABELS.get(k, k),
            _f(v["step_us"]),
            _f(v.get("overhead_us")),
            _f(v.get("equal_to_hand")) if "equal_to_hand" in v else "",
        ]
        for k, v in steady["variants"].items()
    ]
    return lines + _table(["loop", "µs/step", "over its hand loop µs/step", "same result"], rows)


def save_lines(saves: dict[str, Any] | None) -> list[str]:
    """The checkpoint-saving table (``--saves``, the GPU check), Lightning included."""
    if not saves:
        return []
    from ._saves import LABELS as SAVE_LABELS

    cfg = saves["config"]
    mib = saves.get("checkpoint_mib")
    lines = [
        "",
        f"Saving every {cfg['every']} steps, {cfg['params'] / 1e6:.1f}M-parameter MLP, "
        f"batch {cfg['batch']}, {cfg['steps']} steps"
        + (f", {mib:.0f} MiB per checkpoint" if mib else "")
        + f" ({saves['repeats']} run(s) of each, alternating):",
        "",
    ]
    rows = [
        [
            SAVE_LABELS.get(k, k),
            _f(v["step_ms"]),
            _f(v["stall_ms"]),
            _f(v["after_ms"]),
            _f(v["in_run_ratio"], 3),
            _f(v["run_ratio"], 3),
            _f(v["total_ratio"], 3),
        ]
        for k, v in saves["variants"].items()
    ]
    return lines + _table(
        [
            "loop",
            "median step ms",
            "stall ms/save",
            "later steps ms/save",
            "in-run ratio",
            "vs no saves",
            "whole run vs no saves",
        ],
        rows,
    )


def gpu_markdown(results: dict[str, Any]) -> str:
    """The GPU check's tables."""
    m, g = results["machine"], results["gpu_check"]
    lines = [
        f"GPU check: {m.get('gpu', m['device'])}, torch {m['torch']}. "
        f"Options: `{results['command']}`. {g['elapsed_s']:.0f} s.",
        "",
        "bf16-mixed, hand loop (autocast) vs fit + TensorLoader:",
        "",
    ]
    rows = [
        [
            w["workload"],
            f"{w['params'] / 1e6:.3g}M",
            _f(w["hand_us"]),
            _f(w["fit_us"]),
            _f(w["ratio"], 3),
            _f(w["hand_peak_mib"]),
            _f(w["fit_peak_mib"]),
            _f(w["same_result"]),
            w["hand_syncs"],
            w["fit_syncs"],
        ]
        for w in g["workloads"]
    ]
    lines += _table(
        [
            "workload",
            "params",
            "hand µs/step",
            "fit µs/step",
            "ratio",
            "hand peak MiB",
            "fit peak MiB",
            "same result",
            "hand syncs",
            "fit syncs",
        ],
        rows,
    )
    lines += ["", "ft.compile on the tiny MLP (bf16-mixed):", ""]
    rows = [
        [
            c["mode"],
            _f(c.get("first_steps_s"), 2),
            _f(c.get("step_us")),
            _f(c.get("speedup"), 2),
            c.get("error", ""),
        ]
        for c in g["compile"]
    ]
    lines += _table(["mode", "first 3 steps s", "µs/step", "speedup", "error"], rows)
    lines += save_lines(g.get("saves"))
    return "\n".join(lines) + "\n"


DOC_HEAD = """# Performance

ftrain's loop should cost no more than the loop you would write by hand. The
benchmark suite in `benchmarks/` measures exactly that: the same model, the same
initial weights, the same batches in the same order, trained by

- a hand-written PyTorch loop in nanoGPT order (forward, `loss / n`, backward,
  clip, `optimizer.step()`, `zero_grad(set_to_none=True)`, `.item()` only at log
  points),
- `ftrain.fit` with the equivalent settings (checkpointing and model summary off,
  progress bar off and on; the bar is drawn into /dev/null as on a terminal),
- PyTorch Lightning's `Trainer` when it is installed (it is never a dependency).

Workloads: a tiny MLP 32→64→10 (batch 64), a mid MLP 784→1024→1024→10 (batch 256)
and a small CNN on 1×28×28 (batch 128), each *plain* and with *acc_clip_log*:
`accumulate(4)`, `clip_grad_norm(1.0)`, logging every 50 optimizer steps to
TensorBoard (the hand loop logs the same values to a `SummaryWriter`). AdamW, one
torch thread. The variants run alternately in one process (order rotated each
repeat) to cancel machine noise; peak RSS is measured for each variant in a fresh
process, `import ftrain` in fresh processes too. The suite fails if ftrain's final
loss or parameters differ in any bit from the hand loop's.

## Rerun

```bash
python -m benchmarks                      # everything, results in benchmarks/results/
python -m benchmarks --quick --workloads tiny   # a smoke run (seconds)
python -m benchmarks --compile            # also ft.compile vs eager
python -m benchmarks --steady --saves     # also steady-state overhead and save cost
python -m benchmarks --loop-cost          # also fit's own cost per batch (no-op step)
python -m benchmarks --instructions       # also the overhead in CPU instructions (valgrind)
python -m benchmarks --device cuda        # the GPU check (below)
python -m benchmarks --docs docs/performance.md   # rewrite this page
nox -s bench                              # the same through nox
```

Options: `--workloads tiny,mid,cnn`, `--configs plain,acc_clip_log`,
`--variants raw,ftrain,ftrain_bar,lightning`, `--repeats N`, `--out DIR`, `--threads N`,
`--clock wall|cpu`, `--no-rss`, `--no-import`, `--no-loader`, `--steady`, `--saves`,
`--loop-cost`, `--instructions`, `--gpu-check`. Lightning runs when it is importable (for the figures below it was
installed beside the project, never as a dependency), in the loop tables and in the
save table (`ModelCheckpoint`, and with `AsyncCheckpointIO`).

`--steady`: a hand loop over batches sliced in advance (no loader at all) against
`fit` + `TensorLoader` on the same batches, tiny MLP, Adam, one thread; each loop
runs 1,200 and 200 steps and the difference over 1,000 steps is its steady-state
time per step, fixed costs cancelled; without a logger, with TensorBoard every 50
steps (against a hand loop writing the same scalars), with the progress bar.

`--loop-cost`: `fit` around a step that only advances the counters (4,000 minus 400
batches of a `TensorLoader`, CPU time), with and without the default checkpoint
policy: the loop's own cost per batch, free of a model's time and noise; and the
step's bookkeeping (the per-step seed, the new state) and a `TensorLoader` batch
against a pre-sliced list, timed on their own.

`--instructions`: the `--steady` variants counted in CPU instructions instead of
timed, each run (400 and 100 steps) in its own process under valgrind's callgrind:
load on the machine changes neither count, so the per-step overhead over the hand
loop is read to within a few hundred instructions. It is also given in µs at the
hand loop's own time per instruction (timed in the same run): an estimate, which
assumes the overhead's instructions run at the hand loop's average rate.
Needs `valgrind`; about 15 minutes (torch's import runs ~2 min under callgrind).

`--saves`: a 25M-parameter MLP (100 MB of weights, about 290 MB per checkpoint with
AdamW's moments) saving every 20 steps, with no saves, synchronous saves
(`async_checkpointing=False`) and background saves (the default). Each run is read
on its own (the stall of each save over the run's median step, what later steps
lose to the background write, the run's time over steps × median step) and
against the no-save run.

## The GPU check

```bash
python -m benchmarks --device cuda --out benchmarks/results-gpu   # one GPU, a few minutes
python -m benchmarks --gpu-check --device cpu --quick              # the same logic, on a CPU
```

It reports, in bf16-mixed, the step time and peak device memory of `fit` +
`TensorLoader` against a hand loop (`torch.autocast` bf16, the same batches) for
the tiny MLP, the mid MLP and a 20M-parameter GPT block stack (6 blocks, width 512,
sequence 256); whether any host-device sync happens between log points (each loop
runs again under `torch.cuda.set_sync_debug_mode("error")` from its first batch to
its end, with syncs allowed only at log points); `ft.compile` with the default mode
and with `mode="reduce-overhead"` (CUDA graphs) against eager on the tiny MLP; and
the save table above on the GPU (its stall is the device-to-host copy into pinned
buffers). Results go to `results.json` / `results.md` in `--out`.

## Latest results

"""


CPU_CLOCK_NOTE = """
These figures were taken with `--clock cpu` (this process's CPU time, all threads
included) because other jobs shared the machine: a busy neighbour then shows up as
cache and core-sharing effects only, not as time spent waiting. Run-to-run noise is
still several µs/step on the tiny MLP and about 1% on the others: compare loops
within one run only.
"""

READING = """
"overhead µs/step" is what `fit` adds per batch: the step's seeding and state shell,
the metrics collector, the loop's bookkeeping, the bar's gate. On the mid MLP and
the CNN it is lost in the noise of a step; on the tiny MLP a step is only a few
hundred µs, so the same tens of µs show up as a ratio.
"""

DOC_TAIL = """
## What one training batch costs in `fit` besides the step

Per batch, `fit` does integer bookkeeping only: no `.item()`, no device sync, no
dict rebuilt, no logging I/O outside log points. In detail:

| where | per batch |
|---|---|
| `train_step` | the per-step seed (taken from a block of 1,024 seeds hashed at once in numpy; the CPU generator reseeded; its state saved before and put back after, or, for steps run back to back on a `TensorLoader`, saved once and put back before any other code runs: `StepHold`), a plain path without context managers or per-call setting checks for a step without accumulation, transforms or precision settings, one `advance()` for the new state shell (stores through the slots' descriptors, not `attrs.evolve`) |
| metrics | a step's bare one-element tensors are kept with one set lookup and a type check; reductions and `.item()` wait for log points |
| data | a `TensorLoader` whose tensors are on the device skips `move_to_device`; unshuffled, its batches are views made by one `split()` per 256 batches; shuffled, a batch's index tensor is sliced once for all tensors |
| loop | a short path for batches after which nothing is due (one process without clock-based decisions, no callbacks, LR monitor or profiler): a few integer comparisons decide that no stop, log point, validation or checkpoint is due, then only the metric, bar and counter bookkeeping runs; other batches take the full path. No profiler calls unless a profiler is on, one reusable batch-size callable; limits and the log interval read once per run; whether a checkpoint policy can act after a step is asked once per change of the policies' states |
| progress bar | one integer comparison and a clock read; metrics are read (and synced) at most ten times a second |

## Profiling a run

`fit(profiler="simple")` times each phase of the loop (data, step, validation,
logging, checkpoint) and returns the table as `FitResult.profile`;
`profiler="advanced"` also runs one `cProfile` per phase and writes the functions
of each, sorted by cumulative time, to `advanced_profile.txt` in the log folder;
`profiler="pytorch"` records a `torch.profiler` trace for TensorBoard. None of
them synchronises the device, so asynchronous GPU work is charged to the phase
that waits for it.

## Known costs left

- A checkpoint policy with `every_n_train_steps` or `train_time_interval` builds an
  event at every optimizer step (the default policy does not).
- The per-step seed: reseeding the CPU generator (`manual_seed`, a Mersenne Twister
  of 624 words: about 5,900 instructions, 1.7 µs here) is what makes a step's
  randomness a function of (seed, micro_step, rank); `randomness="ambient"` skips it.
  Saving and restoring the generator's state around the step (2.9 µs more) is done
  once per run of quiet batches on a `TensorLoader` (`StepHold`), around each step
  otherwise (other loaders run user code between steps, which may draw numbers).
- Batches with callbacks, an LR monitor, a profiler, several processes or a
  clock-based decision (`max_time`, a time `val_check_interval`) take the full
  after-batch path (a few µs more than the short one).
- `ft.compile` on a 1-thread CPU: inductor compiles in seconds and gains nothing on
  the matmul-bound mid MLP; on the small CNN its generated code was slower than
  eager here. Compile for GPUs, or measure before compiling on a CPU.
"""


def write_docs(path: str, results: dict[str, Any]) -> None:
    """Write the performance page: how it is measured, how to rerun, the latest tables."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    clock = CPU_CLOCK_NOTE if results.get("clock") == "cpu" else ""
    with open(path, "w") as f:
        f.write(DOC_HEAD + markdown(results) + clock + READING + DOC_TAIL)
