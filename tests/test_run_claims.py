"""Runs sharing a ``default_root_dir`` never clobber each other, and resume their own files.

Real processes (``resume_scripts/claim_child.py``) started together in one root, and
in-process runs one after the other.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain._rundir import RunClaim, is_live, lock_name, writable_dir
from ftrain.loggers._base import claim_version

SCRIPT = Path(__file__).parent / "resume_scripts" / "claim_child.py"
ENV = {**os.environ, "PYTHONWARNINGS": "error,ignore::DeprecationWarning,ignore::UserWarning"}


def child(root: Path, tag: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), str(tag), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def ckpt_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["csv", "none"])
def test_concurrent_runs_get_their_own_files(tmp_path: Path, logger: str) -> None:
    """Two fit processes started together in one root: distinct versions (CSV) or
    distinct names (logger=False, one checkpoints/ folder), all 24 checkpoints intact,
    each metrics.csv holds only its own rows, each last_checkpoint holds its own weights."""
    go = tmp_path / "go"
    procs = [child(tmp_path, tag, "--logger", logger, "--go", str(go)) for tag in (1, 2)]
    go.touch()
    for proc in procs:
        rc, _, err = finish(proc)
        assert rc == 0, err
    results = {tag: torch.load(tmp_path / f"result-{tag}.pt", weights_only=True) for tag in (1, 2)}
    lasts = {results[t]["last"] for t in (1, 2)}
    assert len(lasts) == 2
    for tag, res in results.items():
        saved = ft.load_checkpoint(res["last"])["model"]
        for key, value in res["weights"].items():
            assert torch.equal(saved[key], value), (tag, key)
    if logger == "csv":
        dirs = {results[t]["log_dir"] for t in (1, 2)}
        assert {os.path.basename(d) for d in dirs} == {"version_0", "version_1"}
        for tag, res in results.items():
            assert len(ckpt_files(Path(res["log_dir"]) / "checkpoints")) == 12
            with open(os.path.join(res["log_dir"], "metrics.csv")) as f:
                tags = [row["tag"] for row in csv.DictReader(f) if row.get("tag")]
            assert tags == [f"{float(tag)}"] * 12, tags
    else:
        names = ckpt_files(tmp_path / "checkpoints")
        assert len(names) == 24
        assert sum("-v1" in n for n in names) == 12


@pytest.mark.slow
def test_crashed_run_resumes_its_own_file_while_another_runs(tmp_path: Path) -> None:
    """Run A trains further and stays alive; run B crashes at step 6. B's resume with
    ckpt_path="last" takes B's newest file (step 5), not A's newer one, and says so."""
    hold = tmp_path / "release-a"
    a = child(tmp_path, 1, "--hold", str(hold))
    assert a.stdout is not None
    for line in a.stdout:
        if line.strip() == "holding":
            break
    b = child(tmp_path, 2, "--crash-at", "6")
    rc, _, err = finish(b)
    assert rc != 0 and "crash at step 6" in err
    resumed = child(tmp_path, 2, "--resume")
    rc, out, err = finish(resumed)
    hold.touch()
    assert finish(a)[0] == 0
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("Resuming from"))
    b_dir = tmp_path / "ftrain_logs" / "version_1" / "checkpoints"
    assert line.startswith(f"Resuming from {b_dir}{os.sep}"), line
    assert line.endswith("(version 1, epoch 0, step 5)"), line
    # The resumed run ended where an uninterrupted run of B would: its own weights.
    res = torch.load(tmp_path / "result-2.pt", weights_only=True)
    assert res["log_dir"] == str(tmp_path / "ftrain_logs" / "version_1")


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    return model(batch[0]).pow(2).mean()


def _fit(root: Path, **kw: Any) -> ft.FitResult:
    data = ft.TensorLoader(torch.randn(4, 2), batch_size=2)
    flags: dict[str, Any] = {
        "max_epochs": 1,
        "logger": False,
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return ft.fit(_state(), ft.train_step(_loss), data, **{**flags, **kw})


def test_a_later_run_never_overwrites_an_earlier_runs_file(tmp_path: Path) -> None:
    """logger=False, one after the other: the second run names its file -v1 (warning once
    that the folder is not empty) and the first run's file keeps its bytes."""
    first = _fit(tmp_path)
    assert first.last_checkpoint is not None
    before = Path(first.last_checkpoint).read_bytes()
    with pytest.warns(UserWarning, match="is not empty") as record:
        second = _fit(tmp_path)
    assert len([w for w in record if "is not empty" in str(w.message)]) == 1
    assert second.last_checkpoint is not None
    assert second.last_checkpoint != first.last_checkpoint
    assert Path(second.last_checkpoint).name.endswith("-v1.ckpt")
    assert Path(first.last_checkpoint).read_bytes() == before


def test_claim_version_skips_taken_versions(tmp_path: Path) -> None:
    """claim_version creates a new folder each call, skipping a file named like a version."""
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_1").write_text("not a folder")
    assert [claim_version(str(tmp_path)) for _ in range(3)] == [2, 3, 4]
    assert all((tmp_path / f"version_{v}").is_dir() for v in (2, 3, 4))


def test_lock_is_held_until_release(tmp_path: Path) -> None:
    """A claim's lock reads as live until release; a released run's lock file is gone."""
    claim = RunClaim()
    claim.hold(str(tmp_path), "default_root_dir")
    assert is_live(str(tmp_path), claim.run_id)
    claim.release()
    assert not is_live(str(tmp_path), claim.run_id)
    assert not (tmp_path / lock_name(claim.run_id)).exists()


def test_unwritable_folders_fail_before_training(tmp_path: Path) -> None:
    """A default_root_dir that is a file, or a checkpoint dirpath under one, fails before the
    first batch, naming the flag."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="default_root_dir"):
        _fit(blocker)
    policy = ft.checkpoint.ModelCheckpoint(dirpath=blocker / "sub")
    with pytest.raises(ValueError, match="checkpoint dirpath"):
        _fit(tmp_path, checkpoint=policy)
    with pytest.raises(ValueError, match="flagname"):
        writable_dir(str(blocker), "flagname")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_checkpoint_folder_fails_before_training(tmp_path: Path) -> None:
    """A checkpoint folder without write permission is refused before training."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with warnings.catch_warnings(), pytest.raises(ValueError, match="cannot write"):
            _fit(tmp_path, checkpoint=ft.checkpoint.ModelCheckpoint(dirpath=folder))
    finally:
        folder.chmod(0o700)


def test_a_resumed_run_never_deletes_another_runs_files(tmp_path: Path) -> None:
    """logger=False, runs A then B in one folder; B resumes "last" (its own, newer file) and
    trains on: its policy replaces its own files only, A's file keeps its bytes."""
    a = _fit(tmp_path)
    assert a.last_checkpoint is not None
    a_bytes = Path(a.last_checkpoint).read_bytes()
    with pytest.warns(UserWarning, match="is not empty"):
        b = _fit(tmp_path)
    assert b.last_checkpoint is not None and b.last_checkpoint.endswith("-v1.ckpt")
    resumed = _fit(tmp_path, max_epochs=3, ckpt_path="last")
    assert resumed.state.epoch == 3
    assert Path(a.last_checkpoint).read_bytes() == a_bytes
    assert not Path(b.last_checkpoint).exists()  # B's own older file was replaced
    assert resumed.last_checkpoint is not None and resumed.last_checkpoint != a.last_checkpoint


def test_ckpt_path_names_a_version_or_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ckpt_path="version_0" (a logger version) or a run folder resumes the newest file
    there and says which; a folder without checkpoints is a CheckpointError."""

    def run(**kw: Any) -> ft.FitResult:
        csv = ft.loggers.CSVLogger(tmp_path)
        return _fit(tmp_path, logger=csv, log_every_n_steps=1, **kw)

    first = run(max_epochs=1)
    run(max_epochs=2)
    capsys.readouterr()
    by_version = run(max_epochs=2, ckpt_path="version_0")
    assert by_version.state.epoch == 2
    line = f"Resuming from {first.last_checkpoint} (version 0, epoch 0, step 2)"
    assert line in capsys.readouterr().out
    # The folder's newest file is now the one the version_0 resume wrote (step 4).
    by_folder = run(max_epochs=2, ckpt_path=str(tmp_path / "ftrain_logs" / "version_0"))
    assert by_folder.state.step == 4
    assert "version_0/checkpoints/epoch=1-step=4.ckpt (version 0" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(ft.checkpoint.CheckpointError, match="directory with no checkpoint"):
        _fit(tmp_path, ckpt_path=str(tmp_path / "empty"))
