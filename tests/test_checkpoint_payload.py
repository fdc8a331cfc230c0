"""What is written can be read back: the allowlist checked on write, clear read errors,
CRC verification, and a full disk."""

from __future__ import annotations

import collections
import datetime
import errno
import os
import pathlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ftrain as ft
from ftrain.checkpoint import CheckpointError, _io, atomic_save, safe_load


def _state() -> ft.TrainState:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    return ft.TrainState.create(net, torch.optim.SGD(net.parameters(), lr=0.1))


REFUSED = [
    (pathlib.Path("/data"), "PosixPath", "str(path)"),
    (datetime.datetime(2026, 1, 1), "datetime", "isoformat"),
    (datetime.timedelta(seconds=3), "timedelta", "isoformat"),
    (np.float64(0.5), "float64", "value.item()"),
    (np.int64(3), "int64", "value.item()"),
    (np.ones(3), "ndarray", "torch.from_numpy"),
    (frozenset({1}), "frozenset", "register"),
]


@pytest.mark.parametrize(("value", "type_name", "hint"), REFUSED)
def test_unloadable_values_are_refused_at_write_time(
    tmp_path: Path, value: Any, type_name: str, hint: str
) -> None:
    """Each type the safe loader refuses is refused by save_checkpoint, naming the key path
    and type; the previous file is intact and no temp file remains."""
    path = tmp_path / "a.ckpt"
    ft.save_checkpoint(_state(), path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not written") as info:
        ft.save_checkpoint(_state(), path, extra={"callbacks": {"MyCallback0": {"root": value}}})
    message = str(info.value)
    assert f"callbacks['MyCallback0']['root']: {type_name}" in message
    assert hint in message
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.ckpt"]


ACCEPTED = {
    "nested": {"a": [1, 2.5, "x", None, True], "t": (torch.ones(2), b"raw")},
    "ordered": collections.OrderedDict(b=1, a=2),
    "set": {1, 2},
    "torch": [torch.Size([2, 3]), torch.float64, torch.device("cpu"), torch.strided],
    "float64_tensor": torch.arange(3, dtype=torch.float64),
    "numpy_as_tensor": torch.from_numpy(np.arange(3.0)),
    "complex": 1 + 2j,
    "int_keys": {0: "a", 1: "b"},
}


def test_allowed_values_round_trip(tmp_path: Path) -> None:
    """Tensors of any dtype, numbers, strings, bytes, None, containers and torch's own small
    types round-trip through save_checkpoint/load_checkpoint unchanged."""
    path = tmp_path / "a.ckpt"
    ft.save_checkpoint(_state(), path, extra={"extra": ACCEPTED})
    got = ft.load_checkpoint(path)["extra"]
    assert got.keys() == ACCEPTED.keys()
    assert got["nested"]["a"] == ACCEPTED["nested"]["a"]
    assert torch.equal(got["nested"]["t"][0], torch.ones(2)) and got["nested"]["t"][1] == b"raw"
    assert type(got["ordered"]) is collections.OrderedDict and got["ordered"] == ACCEPTED["ordered"]
    assert got["set"] == {1, 2} and got["torch"] == ACCEPTED["torch"]
    assert got["float64_tensor"].dtype == torch.float64
    assert torch.equal(got["numpy_as_tensor"], ACCEPTED["numpy_as_tensor"])
    assert got["complex"] == 1 + 2j and got["int_keys"] == {0: "a", 1: "b"}


def test_a_callbacks_unloadable_state_fails_the_save_in_fit(tmp_path: Path) -> None:
    """Through fit, a callback whose state holds a Path fails the first save, naming it."""

    class Keeper:
        def state_dict(self) -> dict[str, Any]:
            return {"root": pathlib.Path("/data")}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    data = ft.TensorLoader(torch.randn(4, 2), batch_size=2)
    with pytest.raises(CheckpointError, match=r"callbacks\['Keeper0'\]\['root'\]: PosixPath"):
        ft.fit(
            _state(),
            ft.train_step(lambda m, b: m(b[0]).pow(2).mean()),
            data,
            max_epochs=1,
            logger=False,
            callbacks=[Keeper()],
            default_root_dir=tmp_path,
            enable_progress_bar=False,
            enable_model_summary=False,
        )


def test_read_errors_are_clear(tmp_path: Path) -> None:
    """A directory, a legacy-format torch file and a blocked global each get their message."""
    with pytest.raises(CheckpointError, match="is a directory"):
        safe_load(tmp_path)
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        safe_load(legacy)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"ftrain_format": 1, "p": pathlib.Path("/x")}, unsafe)
    with pytest.raises(CheckpointError, match=r"pathlib\.PosixPath"):
        safe_load(unsafe)


def _flip_a_tensor_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    with open(path, "r+b") as f:
        # The local header's own name and extra lengths (torch pads the extra field).
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def test_verify_catches_a_flipped_bit(tmp_path: Path) -> None:
    """A flipped bit in tensor data loads silently without verify, and is a CheckpointError
    naming the record with verify=True."""
    path = tmp_path / "a.ckpt"
    ft.save_checkpoint(_state(), path)
    ft.load_checkpoint(path, verify=True)
    _flip_a_tensor_byte(path)
    ft.load_checkpoint(path)  # torch itself does not notice
    with pytest.raises(CheckpointError, match="CRC"):
        ft.load_checkpoint(path, verify=True)


def test_last_skips_a_corrupt_newest_file(tmp_path: Path) -> None:
    """ckpt_path="last" verifies its candidates: a newest file with a flipped bit is skipped
    (with a warning) for the next newest."""
    from ftrain.driver._resume_source import newest_checkpoint

    state = _state()
    ft.save_checkpoint(state, tmp_path / "old.ckpt")
    ft.save_checkpoint(state.replace(step=5), tmp_path / "new.ckpt")
    assert newest_checkpoint([str(tmp_path)]) == str(tmp_path / "new.ckpt")
    _flip_a_tensor_byte(tmp_path / "new.ckpt")
    with pytest.warns(RuntimeWarning, match="CRC"):
        assert newest_checkpoint([str(tmp_path)]) == str(tmp_path / "old.ckpt")


class _FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f: Any, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._f.write(data)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def test_disk_full_is_a_checkpoint_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing: CheckpointError with the path and "no space left on device",
    the previous file intact, no temp file left."""
    path = tmp_path / "a.ckpt"
    atomic_save({"w": torch.zeros(10)}, path)
    before = path.read_bytes()
    real_open = open

    def full_open(name: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(name, mode, *args, **kw)
        return _FullDisk(f, 1000) if "x" in mode else f

    monkeypatch.setattr(_io, "open", full_open, raising=False)
    with pytest.raises(CheckpointError, match="no space left on device") as info:
        atomic_save({"w": torch.zeros(10_000)}, path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.ckpt"]
