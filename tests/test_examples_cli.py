"""examples/cli_train.py runs end to end with tiny flags, as a user would run it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cli_train.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("cli_train_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_is_short() -> None:
    """The example stays a short single file (<= 100 lines)."""
    assert len(EXAMPLE.read_text().splitlines()) <= 100


def test_example_help_lists_its_flags_and_fit_flags(capsys: Any) -> None:
    """--help shows the example's own flags and every fit option."""
    with pytest.raises(SystemExit) as exit_info:
        _load_example().main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--lr", "--batch_size", "--config", "--max_epochs", "--val_check_interval"]:
        assert flag in out


@pytest.mark.slow
def test_example_runs_with_config_file_and_overrides(tmp_path: Path) -> None:
    """A subprocess run with a TOML config and command-line overrides trains the requested
    2 epochs of 4 batches, validates, writes a checkpoint, and exits 0 without warnings."""
    (tmp_path / "run.toml").write_text(
        "samples = 64\n[fit]\nmax_epochs = 50\nlimit_val_batches = 1\nnum_sanity_val_steps = 0\n"
    )
    argv = [
        "--config", "run.toml",
        "--max_epochs", "2",
        "--samples", "128",
        "--batch_size", "32",
        "--val_check_interval", "0.5",
        "--log_every_n_steps", "2",
        "--default_root_dir", str(tmp_path / "runs"),
        "--enable_progress_bar", "False",
        "--enable_model_summary", "False",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--max_epochs 2" in proc.stdout and "--limit_val_batches 1" in proc.stdout
    assert "done: 8 steps, 2 epochs, val_loss=" in proc.stdout
    ckpt = proc.stdout.split("checkpoint: ", 1)[1].strip()
    assert Path(ckpt).is_file() and str(tmp_path / "runs") in ckpt
