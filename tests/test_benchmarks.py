"""The benchmark suite: a quick smoke run writes complete results (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ftrain as ft

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (ROOT / "benchmarks" / "__main__.py").exists(),
    reason="the benchmarks/ folder is not beside the tests (installed-wheel run)",
)


@pytest.fixture
def workloads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import _workloads

    return _workloads


def test_hand_loop_draws_the_tensor_loaders_order(workloads) -> None:
    """The hand loop's copy of mix_seed and its epoch order equal ftrain's, so both
    loops see the same batches and their results can be compared bit for bit."""
    for values in [(0,), (0, 1), (7, 2**40, 3), (2**32 - 1, 2**64 - 1)]:
        assert workloads.mix_seed(*values) == ft.mix_seed(*values)
    x, y = torch.arange(10.0), torch.arange(10)
    loader = ft.TensorLoader(x, y, batch_size=4, seed=workloads.SEED)
    for epoch in range(3):
        loader.set_epoch(epoch)
        ours = [b[1].tolist() for b in loader]
        hand = [b[1].tolist() for b in workloads.hand_batches(x, y, 4, epoch)]
        assert ours == hand


@pytest.mark.slow
def test_quick_run_writes_every_field(tmp_path: Path) -> None:
    """`python -m benchmarks --quick --workloads tiny` finishes, finds ftrain's results
    bit-identical to the hand loop's, and writes the JSON and Markdown it promises
    (one timed run per variant: every field is written from the first)."""
    out = tmp_path / "results"
    flags = ["--quick", "--workloads", "tiny", "--loop-cost", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {"cpu", "torch", "torch_threads", "device"} <= set(results["machine"])
    assert results["machine"]["torch_threads"] == 1
    imp = results["import"]
    assert imp["ftrain_over_torch_ms"] > 0 and imp["torch_ms"] > 0
    assert "tensorboard" not in imp["heavy_modules_imported"]
    configs = {(w["workload"], w["config"]) for w in results["workloads"]}
    assert configs == {("tiny", "plain"), ("tiny", "acc_clip_log")}
    for w in results["workloads"]:
        variants = w["variants"]
        assert {"raw", "ftrain", "ftrain_bar"} <= set(variants)
        assert variants["raw"]["ftrain_imported"] is False
        for name, v in variants.items():
            assert v["step_us"] > 0 and v["total_s"] > 0 and v["peak_rss_mib"] > 0
            if name.startswith("ftrain"):
                assert v["equal_to_raw"] is True
                assert {"ratio", "overhead_us", "fixed_ms", "rss_delta_mib"} <= set(v)
    loader = results["loader"]
    assert set(loader["per_batch_us"]) == {
        "TensorLoader",
        "DataLoader(TensorDataset)",
        "hand index_select",
    }
    assert "fit + TensorLoader" in loader["train_step_us"]
    cost = results["loop_cost"]
    assert set(cost["fit_loop_us"]) == {"no checkpointing", "default checkpoint policy"}
    assert all(v > 0 for v in cost["pieces_us"].values())
    table = (out / "results.md").read_text()
    assert "| tiny | acc_clip_log | ftrain.fit + bar |" in table
    assert "| enter_step + leave_step |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_mode_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    """--device cuda on a machine without CUDA says so and exits 0 without running."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--device", "cuda", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "no CUDA device" in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_prefetch_benchmark_runs_and_keeps_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks.prefetch measures the tiny MLP behind a slow loader without and with
    prefetch; both runs end with the same weights and every reported field is there."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import prefetch

    row = prefetch.measure("tiny", 4, 0.002, 2, torch.device("cpu"))
    assert row["equal_weights"] is True
    assert row["delay_s"] == pytest.approx(0.008) and row["on_s"] > 0 and row["off_s"] > 0
    assert "| tiny | 4 |" in prefetch.markdown([row], 2, "cpu")


def test_instruction_counts_are_read_per_step_and_against_the_hand_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--instructions: a stand-in valgrind reports 10**6 + steps × (1,000 hand, 1,250 fit)
    instructions; the per-step counts and the overhead come out of the difference of
    the long and short runs, fixed costs cancelled."""
    fake = tmp_path / "valgrind"
    fake.write_text(
        "#!" + sys.executable + "\n"
        "import sys\n"
        "kind, steps = sys.argv[-2], int(sys.argv[-1])\n"
        "per = 1000 if kind.startswith('hand') else 1250\n"
        "print(f'==1== Collected : {10**6 + steps * per}', file=sys.stderr)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import _instructions, _steady

    # The hand loop's time per step (timed for real by the benchmark).
    monkeypatch.setattr(
        _steady, "steady_benchmark", lambda *a: {"variants": {"hand": {"step_us": 500.0}}}
    )
    result = _instructions.instruction_benchmark(("hand", "fit"))
    assert result is not None
    assert result["variants"]["hand"]["per_step"] == 1000
    assert result["variants"]["fit"]["overhead"] == 250
    assert result["variants"]["fit"]["overhead_us"] == pytest.approx(125.0)
    lines = "\n".join(_instructions.instruction_lines(result))
    assert "| fit + TensorLoader, no logger | 1,250 | +250 |" in lines
    # Without valgrind there is no count, and no error.
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert _instructions.instruction_benchmark(("hand", "fit")) is None


def test_the_instruction_counting_child_runs_each_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import _instructions

    for kind in _instructions.INSTRUCTION_VARIANTS:
        _instructions._child(kind, 50)
