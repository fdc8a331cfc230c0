"""examples/tensorboard_logging.py runs with tiny settings and writes what its docstring says."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tensorboard_logging.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tensorboard_logging_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_is_short() -> None:
    assert len(EXAMPLE.read_text().splitlines()) <= 100


def test_example_writes_the_documented_scalars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two short epochs: step, epoch, validation and lr scalars, hparams, and the command."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _load().main(["--max_epochs", "2", "--samples", "640", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {os.path.join(tmp_path, 'ftrain_logs')}" in out
    assert result.state.step == 40  # 20 batches of 32 per epoch

    acc = EventAccumulator(str(result.log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    steps = {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert sorted(steps) == sorted(
        ["loss", "mae_step", "mae_epoch", "max_err", "val_loss", "val_mae", "lr-SGD", "epoch"]
    )
    assert steps["loss"] == steps["mae_step"] == [9, 19, 29, 39]
    for tag in ("mae_epoch", "max_err", "val_loss", "val_mae", "lr-SGD"):
        assert steps[tag] == [19, 39], tag
    lrs = [e.value for e in acc.Scalars("lr-SGD")]
    assert lrs == pytest.approx([0.05, 0.035])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert result.metrics["val_mae"] == pytest.approx(acc.Scalars("val_mae")[-1].value, rel=1e-6)
