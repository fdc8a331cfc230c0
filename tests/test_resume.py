"""Exact resume after a crash, proven on real processes.

A child process (``resume_scripts/train_child.py``) trains with Dropout, Adam, an
epoch scheduler, accumulation 3 with a short last window, shuffled data, validation
twice per epoch inside accumulation windows, logging every step to TensorBoard and
CSV, and a checkpoint after every optimizer step plus the 2 best by ``val_loss``. The
tests kill it (SIGKILL at exact points, inside a checkpoint save, at random moments,
SIGINT), resume it with ``ckpt_path="last"`` in a new child, possibly several times,
and compare the end of the chain with an uninterrupted run: parameters, optimizer
and scheduler state bit for bit, the TensorBoard scalars as ``EventAccumulator``
reads them (it honours the purge markers of a resume), the CSV file byte for byte,
and the checkpoint files kept.
"""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

SCRIPT = Path(__file__).parent / "resume_scripts" / "train_child.py"
TOTAL_BATCHES = 33  # 3 epochs of 11 batches; 12 optimizer steps
ENV = {**os.environ, "PYTHONWARNINGS": "error,ignore::DeprecationWarning"}

pytestmark = pytest.mark.slow


class Child:
    """A running ``train_child.py``; ``lines`` holds what it printed."""

    def __init__(self, root: Path, *args: str) -> None:
        self.args = [str(root), *args]
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.lines: list[str] = []

    def run(
        self, *, signal_at: int | None = None, sig: int = signal.SIGKILL, delay: float = 0.0
    ) -> int:
        """Read its output to the end; ``delay`` s after it reports the batch ``signal_at``
        (a micro step), send it ``sig``. Returns the exit code (-9 when killed)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if signal_at is not None and line.startswith(f"batch {signal_at} "):
                time.sleep(delay)
                self.proc.send_signal(sig)
                signal_at = None
        rc = self.proc.wait(timeout=120)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.close()
        if rc not in (0, -signal.SIGKILL):
            raise AssertionError(f"child {self.args} exited with {rc}:\n{err}")
        if rc == 0:
            assert self.lines[-1] == "done", self.lines[-3:]
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def micro_steps(self) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith("batch ")]


def ckpt_dir(root: Path) -> Path:
    return root / "tb" / "version_0" / "checkpoints"


def assert_checkpoints_loadable(root: Path) -> list[str]:
    """Every committed file loads; the only other files are temp, lock and name
    reservation files. Returns the temp and reservation files (a write's leftovers)."""
    names = sorted(os.listdir(ckpt_dir(root)))
    for name in names:
        if name.endswith(".ckpt") and not name.startswith("."):
            payload = ft.load_checkpoint(ckpt_dir(root) / name)
            assert "checkpoint_info" in payload
        else:
            # A killed run also leaves its (released) lock file.
            assert name.startswith(".") and name.endswith((".tmp", ".lock", ".reserved")), name
    return [n for n in names if n.endswith((".tmp", ".reserved"))]


def tb_scalars(root: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    versions = glob.glob(str(root / "tb" / "version_*"))
    assert len(versions) == 1, f"a resume must log into the same version: {versions}"
    acc = EventAccumulator(versions[0], size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def csv_text(root: Path) -> str:
    versions = glob.glob(str(root / "csv" / "version_*"))
    assert len(versions) == 1, f"a resume must log into the same version: {versions}"
    return Path(versions[0], "metrics.csv").read_text()


class Reference:
    """An uninterrupted run, started at once and read when first needed."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.child = Child(root, *args)
        self._final: dict[str, Any] | None = None

    def final(self) -> dict[str, Any]:
        if self._final is None:
            assert self.child.run() == 0
            self._final = torch.load(self.root / "final.pt", weights_only=True)
        return self._final


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Reference]]:
    # Both start now and run beside the first test's children.
    refs = {
        loader: Reference(tmp_path_factory.mktemp(f"reference-{loader}"), "--loader", loader)
        for loader in ("tensor", "dataloader")
    }
    yield refs
    for ref in refs.values():
        ref.child.close()


def assert_same_run(ref: Reference, root: Path, history: list[str]) -> None:
    """The resumed chain ended exactly where the uninterrupted run did."""
    want = ref.final()
    got = torch.load(root / "final.pt", weights_only=True)
    where = f"kills: {history}"
    assert got["counters"] == want["counters"], where
    for name, value in want["params"].items():
        assert torch.equal(got["params"][name], value), f"parameter {name} differs; {where}"
    assert got["optimizer"]["param_groups"] == want["optimizer"]["param_groups"], where
    for idx, per_param in want["optimizer"]["state"].items():
        for key, value in per_param.items():
            assert torch.equal(got["optimizer"]["state"][idx][key], value), (idx, key, where)
    assert got["scheduler"] == want["scheduler"], where
    assert Path(got["log_dir"]) == root / "tb" / "version_0"

    tb_want, tb_got = tb_scalars(ref.root), tb_scalars(root)
    assert sorted(tb_got) == sorted(tb_want), where
    for tag, points in tb_want.items():
        assert tb_got[tag] == points, f"TensorBoard {tag!r}; {where}"
        steps = [s for s, _ in tb_got[tag]]
        if tag != "epoch":  # "epoch" rides along with every row, several per step
            assert len(steps) == len(set(steps)), f"duplicate steps in {tag!r}; {where}"
    assert [s for s, _ in tb_got["loss"]] == list(range(12)), where  # no gaps
    assert csv_text(root) == csv_text(ref.root), f"metrics.csv differs; {where}"
    # The policies' state travelled with the checkpoints: the same files are kept.
    files, ref_files = (
        sorted(n for n in os.listdir(ckpt_dir(r)) if not n.startswith("."))
        for r in (root, ref.root)
    )
    assert files == ref_files, where


@pytest.mark.parametrize("saves", ["async", "sync"])
def test_exact_resume_after_sigkill_at_chosen_points(
    references: dict[str, Reference], tmp_path: Path, saves: str
) -> None:
    """SIGKILL inside an accumulation window, at an epoch's last batch (before its
    deferred checkpoint, so the newest file is a validation save inside a window, with
    its partial gradients), at an epoch's end (its logs on disk, its checkpoint not),
    and at the first batch of a window; four resumes end bit-identical to an
    uninterrupted run, with the same logs and the same checkpoint files. With
    background writes a kill may also land inside a write still in flight (a temp
    file is left); with synchronous writes these points are outside any save."""
    sync = ["--sync-saves"] if saves == "sync" else []
    kills = [
        ("--kill-at", "8"),  # epoch 0, second batch of the window 6..8
        ("--kill-at", "11"),  # epoch 0's last batch: the short window 9..10 just stepped
        ("--kill-at-epoch-end", "1"),  # epoch 1's logs written, its checkpoint not
        ("--kill-at", "26"),  # epoch 2, first batch of the window 3..5
    ]
    history: list[str] = []
    for i, kill in enumerate(kills):
        child = Child(tmp_path, *sync, *kill, *(["--resume"] if i else []))
        assert child.run() == -signal.SIGKILL, f"{kill} did not kill it; {history}"
        history.append(" ".join(kill))
        temps = assert_checkpoints_loadable(tmp_path)
        assert not (sync and temps), temps
    assert Child(tmp_path, *sync, "--resume").run() == 0
    assert_same_run(references["tensor"], tmp_path, history)


def test_kill_between_write_and_rename_leaves_loadable_checkpoints(
    references: dict[str, Reference], tmp_path: Path
) -> None:
    """A SIGKILL after a checkpoint's temp file is written and fsynced but before the
    rename leaves the old files loadable and only a hidden temp file (and the name's
    reservation) beside them; the resume removes them. Kills in the save of step 5 (the first after an epoch end), then
    of step 8 (an epoch's last step, saved after the epoch's logs), then a resume that
    ends bit-identical to an uninterrupted run."""
    history: list[str] = []
    for i, step in enumerate((5, 8)):
        child = Child(tmp_path, "--kill-in-save-step", str(step), *(["--resume"] if i else []))
        assert child.run() == -signal.SIGKILL
        history.append(f"in save of step {step}")
        name = f"epoch={(step - 1) // 4}-step={step}.ckpt"
        temps = assert_checkpoints_loadable(tmp_path)
        assert {t.split(".ckpt")[0] + ".ckpt" for t in temps} == {f".{name}"}, history
        assert name not in os.listdir(ckpt_dir(tmp_path)), history
    assert Child(tmp_path, "--resume").run() == 0
    assert not assert_checkpoints_loadable(tmp_path)
    assert_same_run(references["tensor"], tmp_path, history)


def test_kill_during_a_background_write_leaves_previous_files_and_resumes_exactly(
    references: dict[str, Reference], tmp_path: Path
) -> None:
    """With asynchronous checkpointing (the default), the save of step 5 (at batch 14)
    costs the step only a snapshot: training goes on to batch 15 while the file is
    written, and a SIGKILL then (temp file complete, rename not done) leaves the
    earlier files loadable, only a temp file and a reservation beside them and no
    step-5 file; the
    resume ends bit-identical to an uninterrupted run."""
    child = Child(tmp_path, "--kill-in-background-save-step", "5")
    assert child.run() == -signal.SIGKILL
    assert 15 in child.micro_steps(), f"training waited for the write: {child.lines[-3:]}"
    temps = assert_checkpoints_loadable(tmp_path)
    assert {t.split(".ckpt")[0] + ".ckpt" for t in temps} == {".epoch=1-step=5.ckpt"}
    names = os.listdir(ckpt_dir(tmp_path))
    assert "epoch=1-step=5.ckpt" not in names and "epoch=0-step=4.ckpt" in names, names
    assert Child(tmp_path, "--resume").run() == 0
    assert not assert_checkpoints_loadable(tmp_path)
    assert_same_run(references["tensor"], tmp_path, ["in the background write of step 5"])


def test_synchronous_saves_resume_exactly(references: dict[str, Reference], tmp_path: Path) -> None:
    """async_checkpointing=False: the kill in step 5's write happens before any later
    batch (the step waits for the file), and the resume ends bit-identical too."""
    child = Child(tmp_path, "--sync-saves", "--kill-in-background-save-step", "5")
    assert child.run() == -signal.SIGKILL
    assert child.micro_steps()[-1] == 14, child.lines[-3:]
    assert Child(tmp_path, "--sync-saves", "--resume").run() == 0
    assert_same_run(references["tensor"], tmp_path, ["in the synchronous write of step 5"])


def random_kill_chain(reference: Reference, root: Path, seed: int) -> None:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(2, TOTAL_BATCHES - 6), 2))
    history: list[str] = []
    done = 0
    for i, sig in enumerate((signal.SIGKILL, signal.SIGINT)):
        # A resumed child starts at or before ``done``, so it reports every later batch.
        at = max(points[i], done + 1)
        delay = rng.uniform(0.0, 0.02)
        child = Child(root, "--loader", "dataloader", *(["--resume"] if i else []))
        rc = child.run(signal_at=at, sig=sig, delay=delay)
        history.append(f"seed {seed}: {sig.name} after batch {at} (+{delay * 1000:.0f} ms)")
        done = child.micro_steps()[-1]
        assert done >= at, history
        assert_checkpoints_loadable(root)
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, history
        else:
            # Ctrl+C: the current step finishes, a checkpoint is written, fit returns.
            final = torch.load(root / "final.pt", weights_only=True)
            assert rc == 0 and final["interrupted"] is True, history
            assert final["counters"][1] == done, history
    assert Child(root, "--loader", "dataloader", "--resume").run() == 0
    assert_same_run(reference, root, history)


def test_exact_resume_after_random_kills_with_a_dataloader(
    references: dict[str, Reference], tmp_path: Path
) -> None:
    """A shuffled ``torch.utils.data.DataLoader``, for two seeds (run side by side): a
    SIGKILL then a SIGINT sent by the parent at random batches, a few milliseconds
    late, so they land anywhere in the loop (a step, a validation, a log flush, a
    save); each resume continues the same data order, and each chain ends
    bit-identical to an uninterrupted run."""
    with ThreadPoolExecutor(2) as pool:
        chains = [
            pool.submit(random_kill_chain, references["dataloader"], tmp_path / str(seed), seed)
            for seed in (0, 1)
        ]
        for chain in chains:
            chain.result()


@pytest.mark.parametrize("at", [22, 33])
def test_exact_resume_after_ctrl_c_at_an_epochs_last_batch(
    references: dict[str, Reference], tmp_path: Path, at: int
) -> None:
    """Ctrl+C at the last batch of an epoch (22: the second; 33: the run's last) ends
    that epoch as an uninterrupted run would (its logs, callbacks, schedulers, then its
    checkpoint): the resume starts the next epoch, logs no epoch value a second time
    at the epoch's last step (TensorBoard's ``epoch`` once per step) and ends
    bit-identical to an uninterrupted run."""
    args = ("--loader", "dataloader")
    assert Child(tmp_path, *args, "--sigint-at", str(at)).run() == 0
    stopped = torch.load(tmp_path / "final.pt", weights_only=True)
    assert stopped["interrupted"] is True
    assert Child(tmp_path, *args, "--resume").run() == 0
    assert_same_run(references["dataloader"], tmp_path, [f"SIGINT after batch {at}"])
    # The stopped run ended where an uninterrupted one is after that epoch.
    assert stopped["counters"] == [at // 11 * 4, at, at // 11]


def test_random_kills_during_a_save_heavy_run_leave_loadable_checkpoints(
    tmp_path: Path,
) -> None:
    """With a model whose checkpoints take most of the run's time, SIGKILLs at random
    moments (twice) often land inside a save; the folder always holds only
    loadable checkpoints and temp files, and the resume cleans the temp files up and
    finishes the run."""
    rng = random.Random(3)
    points = sorted(rng.sample(range(2, TOTAL_BATCHES - 6), 2))
    history = []
    done = 0
    for i in range(2):
        at = max(points[i], done + 1)
        child = Child(tmp_path, "--wide", *(["--resume"] if i else []))
        rc = child.run(signal_at=at, delay=rng.uniform(0.0, 0.05))
        history.append((at, rc))
        assert rc == -signal.SIGKILL, history
        done = child.micro_steps()[-1]
        assert_checkpoints_loadable(tmp_path)
    assert Child(tmp_path, "--wide", "--resume").run() == 0, history
    assert not assert_checkpoints_loadable(tmp_path)
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert final["counters"] == [12, 33, 3]
