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
from ftrain.driver._rundir import (
    NameTaken,
    RunClaim,
    is_live,
    lock_name,
    reservation_marker,
    reserve_name,
    writable_dir,
)
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


@pytest.mark.slow
def test_a_name_taken_during_a_background_write_is_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A (here, background writes) decides its step-1 file; while that write is held,
    run B (a process, same setup, same checkpoints/ folder) trains all 12 steps. B finds
    the name reserved and takes -v1; A's held write commits its own name, and A versions
    the names B took meanwhile. All 24 files are intact, 12 per run, each run's last
    checkpoint holds its own weights."""
    real_save = ft.checkpoint.atomic_save
    other: dict[str, Any] = {}

    def held_save(payload: Any, path: str, **kw: Any) -> None:
        if not other:  # the first background write: the other run goes first, to its end
            other["rc"], _, other["err"] = finish(child(tmp_path, 2, "--logger", "none"))
        real_save(payload, path, **kw)

    monkeypatch.setattr(ft.checkpoint._async, "atomic_save", held_save)
    torch.manual_seed(1)
    net = torch.nn.Linear(3, 1)
    state = ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=1)
    data = ft.TensorLoader(torch.randn(24, 3), torch.randn(24, 1), batch_size=2)
    step = ft.train_step(lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
    mine = ft.fit(
        state,
        step,
        data,
        max_epochs=1,
        logger=False,
        default_root_dir=tmp_path,
        checkpoint=ft.checkpoint.every(n_train_steps=1),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert other["rc"] == 0, other["err"]
    folder = tmp_path / "checkpoints"
    runs: dict[str, list[tuple[int, str]]] = {}
    for name in ckpt_files(folder):
        payload = ft.checkpoint.safe_load(folder / name)
        runs.setdefault(payload["loop"]["run_id"], []).append((payload["counters"]["step"], name))
    assert sorted(len(v) for v in runs.values()) == [12, 12]
    for files in runs.values():
        assert sorted(s for s, _ in files) == list(range(1, 13))
    by_step1 = {dict(files)[1]: files for files in runs.values()}
    assert set(by_step1) == {"epoch=0-step=1.ckpt", "epoch=0-step=1-v1.ckpt"}
    assert mine.last_checkpoint is not None
    assert Path(mine.last_checkpoint).name == "epoch=0-step=12-v1.ckpt"
    saved = ft.load_checkpoint(mine.last_checkpoint)["model"]
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    theirs = torch.load(tmp_path / "result-2.pt", weights_only=True)
    assert Path(theirs["last"]).name == "epoch=0-step=12.ckpt"
    saved = ft.load_checkpoint(theirs["last"])["model"]
    assert all(torch.equal(saved[k], v) for k, v in theirs["weights"].items())
    assert not [n for n in os.listdir(folder) if n.endswith((".reserved", ".tmp"))]


def _marker(folder: Path, name: str, owner: str) -> Path:
    marker = Path(reservation_marker(str(folder / name)))
    marker.write_text(owner)
    return marker


def test_a_dead_runs_reservation_is_reclaimed_a_live_ones_is_respected(tmp_path: Path) -> None:
    """A reservation left by a run killed between deciding and committing a file (its lock
    is gone, or the marker is empty) never blocks the name nor is resumed from: the next
    run, fresh or resumed, writes that exact file and the marker goes. A live run's
    reservation makes the run name its file -v1, and stays."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = _marker(folder, "epoch=0-step=2.ckpt", "0123456789abcdef")
    first = _fit(tmp_path)
    assert first.last_checkpoint == str(folder / "epoch=0-step=2.ckpt")
    assert not dead.exists()
    empty = _marker(folder, "epoch=1-step=4.ckpt", "")
    resumed = _fit(tmp_path, max_epochs=2, ckpt_path="last")
    assert resumed.last_checkpoint == str(folder / "epoch=1-step=4.ckpt")
    assert not empty.exists()
    live = RunClaim()
    live.hold(str(folder), "default_root_dir")
    try:
        held = _marker(folder, "epoch=2-step=6.ckpt", live.run_id)
        again = _fit(tmp_path, max_epochs=3, ckpt_path="last")
        assert again.state.step == 6
        assert again.last_checkpoint == str(folder / "epoch=2-step=6-v1.ckpt")
        assert held.read_text() == live.run_id
        with pytest.raises(NameTaken):  # a committed file is taken too
            reserve_name(str(folder / "epoch=2-step=6-v1.ckpt"), "another")
    finally:
        live.release()
