"""Background checkpoint writes: snapshots, order, one job in flight, errors never lost.

``AsyncWriter`` is tested directly (a write held open by a patched ``atomic_save``
shows what the training thread may do meanwhile), and through ``fit``: the files a
run keeps and the final state are the same with background and synchronous writes,
and a failed background write stops the run at the next step or at its end.
(Kills during a background write, and the exact resume after them, are in
``test_resume.py``.)
"""

from __future__ import annotations

import errno
import glob
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
import ftrain.checkpoint._async as async_mod
from ftrain.checkpoint import safe_load
from ftrain.checkpoint._async import AsyncWriter


class HeldWrites:
    """Replaces ``atomic_save`` in the writer: each write waits until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[str] = []
        self.fail_on = fail_on
        self.real = async_mod.atomic_save
        monkeypatch.setattr(async_mod, "atomic_save", self)

    def __call__(self, payload: Any, path: str, **kwargs: Any) -> None:
        self.started.set()
        assert self.release.wait(timeout=30), "the test never released the write"
        if self.fail_on is not None and path.endswith(self.fail_on):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        self.real(payload, path, **kwargs)
        self.written.append(os.path.basename(path))


def test_the_file_holds_the_snapshot_not_later_in_place_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller waits only for the snapshot: tensors changed in place (as training
    does) while the write is in flight, and a list appended to, do not reach the file."""
    held = HeldWrites(monkeypatch)
    writer = AsyncWriter()
    w, steps = torch.arange(4.0), [1]
    with writer.job() as job:
        job.save({"model": {"w": w}, "steps": steps}, tmp_path / "a.ckpt")
    assert held.started.wait(timeout=30) and writer.busy
    w.mul_(10)
    steps.append(2)
    held.release.set()
    writer.close()
    payload = safe_load(tmp_path / "a.ckpt")
    assert torch.equal(payload["model"]["w"], torch.arange(4.0)) and payload["steps"] == [1]
    assert not writer.busy


def test_one_job_in_flight_and_deletes_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second job waits until the first has written; a job's delete runs after its
    save (the old file is still there while the new one is being written)."""
    held = HeldWrites(monkeypatch)
    writer = AsyncWriter()
    old = tmp_path / "old.ckpt"
    ft.checkpoint.atomic_save({"x": 1}, old)
    with writer.job() as job:
        job.save({"x": 2}, tmp_path / "new.ckpt")
        job.then(lambda: os.remove(old))
    assert held.started.wait(timeout=30)
    assert old.exists()
    second_started = threading.Event()

    def second() -> None:
        with writer.job() as job:
            second_started.set()
            job.save({"x": 3}, tmp_path / "third.ckpt")

    thread = threading.Thread(target=second)
    thread.start()
    assert not second_started.wait(timeout=0.3), "a second job started while one was in flight"
    held.release.set()
    thread.join(timeout=30)
    assert second_started.is_set()
    writer.close()
    assert held.written == ["new.ckpt", "third.ckpt"]
    assert sorted(os.listdir(tmp_path)) == ["new.ckpt", "third.ckpt"]


def test_a_failed_write_surfaces_once_and_skips_its_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the background write (here ENOSPC) is raised by the next check,
    with a note naming the file; the job's delete did not run; the error is raised once."""
    held = HeldWrites(monkeypatch, fail_on="b.ckpt")
    held.release.set()
    writer = AsyncWriter()
    keep = tmp_path / "a.ckpt"
    ft.checkpoint.atomic_save({"x": 1}, keep)
    with writer.job() as job:
        job.save({"x": 2}, tmp_path / "b.ckpt")
        job.then(lambda: os.remove(keep))
    with pytest.raises(OSError, match="No space left") as info:
        writer.wait()
    assert any("b.ckpt" in note for note in info.value.__notes__)
    assert keep.exists() and not (tmp_path / "b.ckpt").exists()
    writer.check()  # raised once, not again
    writer.close()


def test_a_failed_write_is_raised_by_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next save waits for the previous one and raises its error instead of writing."""
    held = HeldWrites(monkeypatch, fail_on="a.ckpt")
    held.release.set()
    writer = AsyncWriter()
    with writer.job() as job:
        job.save({"x": 1}, tmp_path / "a.ckpt")
    with pytest.raises(OSError, match="No space left"), writer.job() as job:
        job.save({"x": 2}, tmp_path / "b.ckpt")
    writer.close()
    assert os.listdir(tmp_path) == []


def test_abandon_attaches_the_write_error_to_the_exception_being_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When training fails while a write fails too, neither error is lost."""
    held = HeldWrites(monkeypatch, fail_on="a.ckpt")
    held.release.set()
    writer = AsyncWriter()
    with writer.job() as job:
        job.save({"x": 1}, tmp_path / "a.ckpt")
    exc = RuntimeError("training failed")
    writer.abandon(exc)
    assert any("No space left" in note for note in exc.__notes__)


def test_snapshot_buffers_are_reused_and_hold_the_new_values(tmp_path: Path) -> None:
    """A second save of tensors of the same shapes copies into the first save's
    buffers (no new allocation) and writes the new values."""
    writer = AsyncWriter()
    w = torch.zeros(5)
    with writer.job() as job:
        job.save({"w": w}, tmp_path / "a.ckpt")
    writer.wait()
    first = [b.data_ptr() for b in writer._buffers]
    w.add_(1)
    with writer.job() as job:
        job.save({"w": w}, tmp_path / "b.ckpt")
    writer.wait()
    assert [b.data_ptr() for b in writer._buffers] == first
    writer.close()
    assert torch.equal(safe_load(tmp_path / "a.ckpt")["w"], torch.zeros(5))
    assert torch.equal(safe_load(tmp_path / "b.ckpt")["w"], torch.ones(5))


def test_snapshot_keeps_tied_tensors_views_and_state_dict_metadata(tmp_path: Path) -> None:
    """Tied weights stay one tensor, a non-contiguous tensor keeps its values, and a
    state_dict's ``_metadata`` (module versions) travels along, as with torch.save."""
    model = torch.nn.Linear(3, 3)
    sd = model.state_dict()
    t = torch.arange(12.0).reshape(3, 4).t()
    writer = AsyncWriter()
    with writer.job() as job:
        job.save({"model": sd, "a": t, "b": t, "nt": (1, "x")}, tmp_path / "a.ckpt")
    writer.close()
    loaded = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert isinstance(loaded["model"], OrderedDict)
    assert loaded["model"]._metadata == sd._metadata
    assert torch.equal(loaded["a"], t) and loaded["a"].data_ptr() == loaded["b"].data_ptr()
    assert loaded["nt"] == (1, "x")


def test_inline_writer_writes_before_returning(tmp_path: Path) -> None:
    """background=False: the file exists when the job block ends; bad values are refused."""
    writer = AsyncWriter(background=False)
    with writer.job() as job:
        job.save({"x": 1}, tmp_path / "a.ckpt")
    assert safe_load(tmp_path / "a.ckpt")["x"] == 1 and not writer.busy
    with pytest.raises(ValueError, match="background must be True or False, got 'yes'"):
        AsyncWriter(background="yes")  # type: ignore[arg-type]


# Through fit ----------------------------------------------------------------------------


def _fit(root: Path, **flags: Any) -> ft.FitResult:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    state = ft.TrainState.create(model, torch.optim.Adam(model.parameters(), lr=0.01), seed=1)
    g = torch.Generator().manual_seed(0)
    data = ft.TensorLoader(
        torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g), batch_size=4
    )

    def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    return ft.fit(
        state,
        ft.train_step(loss_fn),
        data,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **{"max_epochs": 3, **flags},
    )


def _policy() -> Any:
    return ft.checkpoint.top_k(2, "step", mode="max", every_n_train_steps=1) | ft.checkpoint.last()


def test_fit_keeps_the_same_files_and_state_with_background_and_synchronous_writes(
    tmp_path: Path,
) -> None:
    """The same policy gives the same kept files, each holding the same tensors, and
    the same final parameters, whether files are written in the background or not."""
    results = {}
    for mode in (True, False):
        root = tmp_path / str(mode)
        result = _fit(root, checkpoint=_policy(), async_checkpointing=mode)
        folder = Path(result.last_checkpoint).parent
        files = {n: safe_load(folder / n) for n in sorted(os.listdir(folder))}
        results[mode] = (result, files)
    (res_a, files_a), (res_s, files_s) = results[True], results[False]
    assert list(files_a) == list(files_s) and len(files_a) >= 2
    for name in files_a:
        for key, value in files_a[name]["model"].items():
            assert torch.equal(value, files_s[name]["model"][key]), (name, key)
        assert files_a[name]["counters"] == files_s[name]["counters"]
    for key, value in res_a.state.model.state_dict().items():
        assert torch.equal(value, res_s.state.model.state_dict()[key])
    assert os.path.basename(res_a.last_checkpoint) == os.path.basename(res_s.last_checkpoint)


class Steps(ft.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_end(self, state: Any, **_: Any) -> None:
        self.steps.append(state.step)


def test_fit_raises_a_failed_background_write_at_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save of step 2 fails in the background: fit raises that error by step 3
    (whose save waits for it), step 1's file stays, no step-2 file appears."""
    held = HeldWrites(monkeypatch, fail_on="step=2.ckpt")
    held.release.set()
    seen = Steps()
    with pytest.raises(OSError, match="No space left"):
        _fit(tmp_path, checkpoint=_policy(), callbacks=[seen])
    assert seen.steps == [1, 2, 3]
    (folder,) = {Path(p).parent for p in glob.glob(f"{tmp_path}/**/*.ckpt", recursive=True)}
    assert sorted(os.listdir(folder)) == ["epoch=0-step=1.ckpt", "last.ckpt"]
    assert safe_load(folder / "last.ckpt")["counters"]["step"] == 1


def test_fit_raises_a_failed_last_background_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the run's last write is raised by fit, not lost with the thread."""
    held = HeldWrites(monkeypatch, fail_on="step=12.ckpt")
    held.release.set()
    with pytest.raises(OSError, match="No space left"):
        _fit(tmp_path, checkpoint=_policy())
