"""Checkpoint files: atomic writes, safe loads, temp-file cleanup, metadata listing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ftrain.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointInfo,
    Delete,
    Event,
    ModelCheckpoint,
    Save,
    atomic_save,
    clean_temp_files,
    list_checkpoints,
    safe_load,
)


def payload(step: int = 1) -> dict[str, Any]:
    return {
        "state_dict": {"w": torch.arange(4.0) * step, "b": torch.zeros(2)},
        "step": step,
        "nested": {"lr": [0.1, 0.01], "name": "sgd", "none": None},
    }


def test_round_trip(tmp_path: Path) -> None:
    """What atomic_save writes, safe_load returns, with ftrain_format stamped in."""
    original = payload(3)
    atomic_save(original, tmp_path / "a.ckpt")
    loaded = safe_load(tmp_path / "a.ckpt")
    assert loaded["ftrain_format"] == FORMAT_VERSION
    assert torch.equal(loaded["state_dict"]["w"], original["state_dict"]["w"])
    assert loaded["nested"] == original["nested"]
    assert "ftrain_format" not in original, "the caller's mapping is not changed"
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_policy_state_and_info_load_with_weights_only(tmp_path: Path) -> None:
    """A policy state and CheckpointInfo.to_dict() are plain enough for weights_only loading."""
    policy = (ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)).resolve(False)
    pstate = policy.init()
    pstate, actions = policy.update(
        pstate, Event("validation_end", 5, 0, metrics={"val_loss": np.float64(0.25), "n": 3})
    )
    info = actions[0].info if isinstance(actions[0], Save) else None
    assert info is not None
    atomic_save({"policy": pstate, "checkpoint_info": info.to_dict()}, tmp_path / info.name)
    loaded = safe_load(tmp_path / info.name)
    assert loaded["policy"] == pstate
    assert CheckpointInfo.from_dict(loaded["checkpoint_info"]) == info
    assert type(info.metrics["val_loss"]) is float and type(info.metrics["n"]) is int


def test_creates_the_directory(tmp_path: Path) -> None:
    """Missing folders are created."""
    atomic_save(payload(), tmp_path / "x" / "y" / "a.ckpt")
    assert safe_load(tmp_path / "x" / "y" / "a.ckpt")["step"] == 1


def test_crash_before_rename_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename fails, the old file is intact and no temp file is left."""
    target = tmp_path / "a.ckpt"
    atomic_save(payload(1), target)

    def fail(*_: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        atomic_save(payload(2), target)
    monkeypatch.undo()
    assert safe_load(target)["step"] == 1
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_interrupt_while_writing_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C in the middle of torch.save leaves the old file and no temp file."""
    target = tmp_path / "a.ckpt"
    atomic_save(payload(1), target)
    real_save = torch.save

    def half_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save(payload(2), target)
    monkeypatch.setattr(torch, "save", real_save)
    assert safe_load(target)["step"] == 1
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_dirpath_that_is_a_file(tmp_path: Path) -> None:
    """A folder path that is (or is under) a file is refused, naming it."""
    blocker = tmp_path / "ckpts"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"checkpoint directory '.*ckpts' .* is a file"):
        atomic_save(payload(), blocker / "a.ckpt")
    with pytest.raises(NotADirectoryError, match=r"ckpts' is a file"):
        atomic_save(payload(), blocker / "deeper" / "a.ckpt")
    assert blocker.read_text() == "not a folder"


def test_missing_file(tmp_path: Path) -> None:
    """A missing path is a CheckpointError naming it."""
    with pytest.raises(CheckpointError, match=r"'.*nope.ckpt' does not exist"):
        safe_load(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_file(tmp_path: Path, cut: float) -> None:
    """A cut-off file is 'corrupt or truncated', naming the path."""
    target = tmp_path / "a.ckpt"
    atomic_save(payload(), target)
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match=r"a.ckpt' is corrupt or truncated"):
        safe_load(target)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", bytes(range(256)) * 4])
def test_garbage_bytes(tmp_path: Path, content: bytes) -> None:
    """Empty files, text and random bytes are 'corrupt or truncated'."""
    target = tmp_path / "a.ckpt"
    target.write_bytes(content)
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        safe_load(target)


def test_damaged_archive_member(tmp_path: Path) -> None:
    """A complete zip whose pickle bytes were flipped is refused, not executed."""
    target = tmp_path / "a.ckpt"
    atomic_save(payload(), target)
    data = bytearray(target.read_bytes())
    start = data.index(b"data.pkl") + 40
    data[start : start + 16] = os.urandom(16)
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"a\.ckpt'"):
        safe_load(target)


class _Exploit:
    """Unpickling this would open (create) the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    """A file whose unpickling would create a marker file is refused; no marker appears.

    The same file loaded without weights_only does create the marker, so the test
    would catch an unsafe loader.
    """
    marker = tmp_path / "pwned"
    target = tmp_path / "evil.ckpt"
    torch.save({"ftrain_format": 1, "x": _Exploit(marker)}, target)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"not plain tensors/containers.*refused for safety"):
        safe_load(target)
    assert not marker.exists()
    torch.load(target, weights_only=False)["x"].close()  # the open() ran
    assert marker.exists()


def test_non_allowlisted_type_is_refused(tmp_path: Path) -> None:
    """Even a harmless non-allowlisted object (a numpy scalar) is refused, naming the global."""
    target = tmp_path / "np.ckpt"
    torch.save({"ftrain_format": 1, "x": np.float32(1.0)}, target)
    with pytest.raises(CheckpointError, match=r"refused for safety \(.*numpy"):
        safe_load(target)


@pytest.mark.parametrize("content", [{"a": 1}, [1, 2], {"ftrain_format": "1"}])
def test_not_an_ftrain_checkpoint(tmp_path: Path, content: Any) -> None:
    """A torch file without an int ftrain_format is 'not an ftrain checkpoint'."""
    target = tmp_path / "other.ckpt"
    torch.save(content, target)
    with pytest.raises(CheckpointError, match=r"other.ckpt' is not an ftrain checkpoint"):
        safe_load(target)


def test_newer_format(tmp_path: Path) -> None:
    """A file from a newer ftrain says both format numbers."""
    target = tmp_path / "new.ckpt"
    atomic_save({"ftrain_format": FORMAT_VERSION + 1}, target)
    with pytest.raises(
        CheckpointError,
        match=rf"written by a newer ftrain \(format {FORMAT_VERSION + 1}\), "
        rf"this is format {FORMAT_VERSION}",
    ):
        safe_load(target)


def test_clean_temp_files(tmp_path: Path) -> None:
    """Only leftover '.*.tmp' files go; checkpoints and other hidden files stay."""
    (tmp_path / ".a.ckpt.1234.tmp").write_bytes(b"x")
    (tmp_path / "a.ckpt").write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "b.tmp").write_bytes(b"x")
    removed = clean_temp_files(tmp_path)
    assert removed == [str(tmp_path / ".a.ckpt.1234.tmp")]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "a.ckpt", "b.tmp"]
    assert clean_temp_files(tmp_path / "missing") == []


def test_list_checkpoints(tmp_path: Path) -> None:
    """Infos of readable *.ckpt files, by file name; unreadable ones skipped with a warning."""
    info = CheckpointInfo("old-name.ckpt", 4, 1, {"val_loss": 0.5}, 0.5, "top_k", 3.0)
    atomic_save({"checkpoint_info": info.to_dict()}, tmp_path / "b.ckpt")
    atomic_save({"no_info": 1}, tmp_path / "c.ckpt")
    (tmp_path / "d.ckpt").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.warns(UserWarning, match="skipping checkpoint") as record:
        infos = list_checkpoints(tmp_path)
    assert len(record) == 2
    assert infos == [CheckpointInfo("b.ckpt", 4, 1, {"val_loss": 0.5}, 0.5, "top_k", 3.0)]
    assert list_checkpoints(tmp_path / "missing") == []


def test_driver_round_trip_on_disk(tmp_path: Path) -> None:
    """Carrying out a policy's actions with real files, then recovering from them,
    gives the policy the state it had (the files list themselves)."""
    policy = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True).resolve(False)
    pstate = policy.init()
    for step, value in enumerate([0.5, 0.3, 0.4, 0.2], start=1):
        event = Event("validation_end", step, step - 1, 0, float(step), {"val_loss": value})
        pstate, actions = policy.update(pstate, event)
        for action in actions:
            if isinstance(action, Save):
                atomic_save(
                    {"policy": pstate, "checkpoint_info": action.info.to_dict()},
                    tmp_path / action.name,
                )
            elif isinstance(action, Delete):
                os.remove(tmp_path / action.name)
    assert sorted(os.listdir(tmp_path)) == [
        "epoch=1-step=2.ckpt",
        "epoch=3-step=4.ckpt",
        "last.ckpt",
    ]
    stored = safe_load(tmp_path / "last.ckpt")["policy"]
    recovered = policy.recover(stored, list_checkpoints(tmp_path), existing=os.listdir(tmp_path))
    assert recovered == pstate
    assert policy.best(recovered) == "epoch=3-step=4.ckpt"
