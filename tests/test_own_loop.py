"""The loop of docs/how-to/own-loop.md, written from ftrain.loop's parts, equals ``fit``.

Same final state (bit for bit), the same checkpoint files kept and a byte-identical
``metrics.csv`` as ``fit(val_check_interval=0.5, top_k(2, "val_loss") | last(),
accumulate 2, max_epochs=3)``, also when the loop is SIGKILLed and run again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CHILD = Path(__file__).parent / "own_loop_scripts" / "child.py"
REPO = Path(__file__).resolve().parents[1]
if not (REPO / "docs" / "how-to" / "own-loop.md").exists():
    pytest.skip("the documentation is not part of this tree", allow_module_level=True)


def _run(mode: str, root: Path, *extra: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-W", "error", str(CHILD), mode, str(root), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(out.stderr[-3000:])
    return out.returncode


def _outcome(root: Path) -> tuple[dict, list[str], bytes]:
    run = root / "ftrain_logs" / "version_0"
    final = torch.load(root / "final.pt", weights_only=True)
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    return final, files, (run / "metrics.csv").read_bytes()


def _assert_same(a: dict, b: dict) -> None:
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for (i, s), (j, t) in zip(
        a["optimizer"]["state"].items(), b["optimizer"]["state"].items(), strict=True
    ):
        assert i == j and all(torch.equal(s[k], t[k]) for k in s), i


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[str], bytes]:
    root = tmp_path_factory.mktemp("fit")
    assert _run("fit", root) == 0
    return _outcome(root)


def test_own_loop_equals_fit(reference: tuple, tmp_path: Path) -> None:
    """State, kept checkpoint files and metrics.csv are those of fit."""
    assert _run("own", tmp_path) == 0
    final, files, csv = _outcome(tmp_path)
    _assert_same(final, reference[0])
    assert files == reference[1]
    assert len(files) == 3 and "last.ckpt" in files  # two best plus last
    assert csv == reference[2]
    assert csv.count(b"\n") > 10


@pytest.mark.parametrize("kill_at", [9, 17])
def test_own_loop_resumes_after_a_kill(reference: tuple, tmp_path: Path, kill_at: int) -> None:
    """SIGKILLed mid-window (after batch 9, or 17 in the second epoch) and run again:
    the outcome is still fit's."""
    assert _run("own", tmp_path, "--kill-at", str(kill_at)) == -signal.SIGKILL
    assert not (tmp_path / "final.pt").exists()
    assert _run("own", tmp_path) == 0
    final, files, csv = _outcome(tmp_path)
    _assert_same(final, reference[0])
    assert files == reference[1]
    assert csv == reference[2]
