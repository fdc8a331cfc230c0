"""Checkpoints and logs written to fsspec URLs, and runs resumed from them.

``memory://`` runs in process; S3 runs against a real S3-compatible server (moto)
started on 127.0.0.1 by the test, through ``s3fs``, with a run killed by SIGKILL in
a child process. Resumed runs are compared bit for bit with uninterrupted ones.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.checkpoint import CheckpointError, atomic_save, list_checkpoints, safe_load
from ftrain.loggers import CSVLogger, TensorBoardLogger

fsspec = pytest.importorskip("fsspec")

CHILD = Path(__file__).parent / "resume_scripts" / "remote_child.py"


def _child() -> Any:
    spec = importlib.util.spec_from_file_location("remote_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def memory_root() -> str:
    return f"memory://ftrain-test-{uuid.uuid4().hex[:10]}/run"


def store(url: str) -> Any:
    fs, _ = fsspec.core.url_to_fs(url)
    return fs


def names(url: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    return sorted(os.path.basename(p) for p in fs.ls(path, detail=False))


def val_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    return {"val_loss": torch.nn.functional.mse_loss(model(batch[0]), batch[1])}


class TermAt:
    """Sends this process SIGTERM after step ``at``: fit finishes the step, saves, returns."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, state: ft.TrainState, **_: Any) -> None:
        if state.step == self.at:
            signal.raise_signal(signal.SIGTERM)


class Unsafe:
    """A class the safe loader refuses."""


def memory_fit(root: str, **flags: Any) -> ft.FitResult:
    """A dropout MLP, 2 steps per epoch, validated once per epoch, top-2 + last."""
    state, step, data, _ = _child().build(root)
    return ft.fit(
        state,
        step,
        data,
        val_step=ft.eval_step(val_loss),
        val_data=ft.TensorLoader(
            torch.linspace(-1, 1, 12).view(4, 3), torch.ones(4, 1), batch_size=4, shuffle=False
        ),
        default_root_dir=root,
        logger=[CSVLogger(root), TensorBoardLogger(root, name="tb")],
        checkpoint=ft.checkpoint.ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True),
        log_every_n_steps=1,
        limit_train_batches=2,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"max_epochs": 5, **flags},
    )


def test_fit_writes_checkpoints_and_logs_to_a_memory_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints, metrics.csv, TensorBoard events and hparams go to the URL store,
    top-k evictions delete there, and nothing is written to a local folder."""
    monkeypatch.chdir(tmp_path)
    root = memory_root()
    result = memory_fit(root)
    ckpts = f"{root}/ftrain_logs/version_0/checkpoints"
    csv_text = store(root).cat_file(f"{root}/ftrain_logs/version_0/metrics.csv").decode()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert max(int(r["step"]) for r in rows) == 9  # steps are logged from 0
    val = [(float(r["val_loss"]), int(r["epoch"])) for r in rows if r.get("val_loss")]
    assert len(val) == 5
    # Top-2 by val_loss of 5 epochs (2 steps each); the other three were deleted.
    best = sorted(val)[:2]
    kept = sorted(f"epoch={e}-step={2 * e + 2}.ckpt" for _, e in best)
    assert names(ckpts) == [*kept, "last.ckpt"]
    assert result.best_checkpoint == f"{ckpts}/epoch={best[0][1]}-step={2 * best[0][1] + 2}.ckpt"
    assert safe_load(f"{ckpts}/last.ckpt")["counters"]["step"] == 10
    infos = {i.name: i for i in list_checkpoints(ckpts)}
    assert infos[kept[0]].score in {v for v, _ in best}
    tb = names(f"{root}/tb/version_0")
    assert any(n.startswith("events.out.tfevents.") for n in tb), tb
    assert os.listdir(tmp_path) == []  # no local folder named "memory:"


def test_resume_from_a_memory_url_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped mid-epoch and resumed from ``memory://.../last.ckpt`` (and one
    resumed with ``"last"`` from the URL root) ends with the weights, optimizer state
    and metrics.csv of an uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    whole = memory_root()
    reference = memory_fit(whole).state
    ref_csv = store(whole).cat_file(f"{whole}/ftrain_logs/version_0/metrics.csv")
    for how in ("path", "last"):
        root = memory_root()
        memory_fit(root, callbacks=[TermAt(5)])  # stops after the first batch of epoch 2
        ckpt = f"{root}/ftrain_logs/version_0/checkpoints/last.ckpt"
        assert safe_load(ckpt)["counters"]["step"] == 5
        resumed = memory_fit(root, ckpt_path=ckpt if how == "path" else "last").state
        assert resumed.step == reference.step == 10
        for a, b in zip(reference.model.parameters(), resumed.model.parameters(), strict=True):
            assert torch.equal(a, b)
        ref_opt, opt = reference.optimizer.state_dict(), resumed.optimizer.state_dict()
        for k in ref_opt["state"]:
            assert torch.equal(ref_opt["state"][k]["exp_avg"], opt["state"][k]["exp_avg"])
        assert store(root).cat_file(f"{root}/ftrain_logs/version_0/metrics.csv") == ref_csv
        # TensorBoard: the resumed run's event file (with its purge marker) beside the first.
        events = [n for n in names(f"{root}/tb/version_0") if n.startswith("events.out.")]
        assert len(events) == 2, events
    assert os.listdir(tmp_path) == []


def test_url_checkpoint_files(tmp_path: Path) -> None:
    """atomic_save / safe_load on memory:// (one put) and file:// (temp name, then move):
    round trip, no temp file left, overwrite=False, unsafe and missing files refused."""
    for folder in (memory_root(), f"file://{tmp_path.as_posix()}/ckpts"):
        path = f"{folder}/a.ckpt"
        atomic_save({"w": torch.arange(3.0)}, path)
        assert torch.equal(safe_load(path, verify=True)["w"], torch.arange(3.0))
        assert names(folder) == ["a.ckpt"]  # no temp file left behind
        with pytest.raises(FileExistsError):
            atomic_save({"w": 1}, path, overwrite=False)
        atomic_save({"w": torch.ones(1)}, path)  # replaced
        assert torch.equal(safe_load(path)["w"], torch.ones(1))
        buffer = io.BytesIO()
        torch.save({"ftrain_format": 1, "bad": Unsafe()}, buffer)
        store(folder).pipe_file(fsspec.core.url_to_fs(f"{folder}/bad.ckpt")[1], buffer.getvalue())
        with pytest.raises(CheckpointError, match="refused for safety"):
            safe_load(f"{folder}/bad.ckpt")
        with pytest.raises(CheckpointError, match="does not exist"):
            safe_load(f"{folder}/missing.ckpt")
        with pytest.raises(CheckpointError, match="is a directory"):
            safe_load(folder)
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["a.ckpt", "bad.ckpt"]


def test_bad_urls_are_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown protocol names the argument and fsspec; a missing fsspec says what to
    install; loggers that cannot write a URL say so."""
    with pytest.raises(ValueError, match=r"default_root_dir='nosuch://x'.*fsspec cannot resolve"):
        ft.FitConfig(default_root_dir="nosuch://x")
    with pytest.raises(ValueError, match=r"dirpath='nosuch://x'.*fsspec cannot resolve"):
        ft.checkpoint.ModelCheckpoint(dirpath="nosuch://x")
    with pytest.raises(ValueError, match="save_dir='nosuch://x'"):
        CSVLogger("nosuch://x")
    with pytest.raises(ValueError, match=r"JSONLinesLogger.*URL"):
        ft.loggers.JSONLinesLogger("memory://x")
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'torch-ftrain\[fsspec\]'"):
        ft.FitConfig(default_root_dir="memory://x")
    with pytest.raises(ImportError, match=r"dirpath='s3://b/c'.*torch-ftrain\[fsspec\]"):
        ft.checkpoint.ModelCheckpoint(dirpath="s3://b/c")


def test_loggers_on_a_url_claim_versions_upload_at_flush_and_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each logger on a URL root takes the next version a listing shows; rows reach the
    store at flush (or at a log point once UPLOAD_EVERY_S has passed); a resume downloads
    metrics.csv and drops the rows at steps >= the resumed step."""
    root = memory_root()
    first, second = CSVLogger(root), CSVLogger(root)
    assert (first.version, second.version) == (0, 1)
    assert names(f"{root}/ftrain_logs") == ["version_0", "version_1"]
    first.log_metrics({"loss": 1.0}, step=0)
    first.log_metrics({"loss": 0.5}, step=1)
    assert names(first.log_dir) == [".ftrain-version"]  # nothing uploaded before a flush
    first.flush()
    uploaded = store(root).cat_file(first.metrics_file).decode()
    assert uploaded.splitlines() == ["step,loss", "0,1.0", "1,0.5"]
    monkeypatch.setattr("ftrain.loggers._base.UPLOAD_EVERY_S", 0.0)
    first.log_metrics({"loss": 0.25}, step=2)  # no flush: due at this log point
    assert store(root).cat_file(first.metrics_file).decode().splitlines()[-1] == "2,0.25"
    first.finalize("success")
    again = CSVLogger(root)
    again.resume(0, step=1)
    again.log_metrics({"loss": 0.75}, step=1)
    again.finalize("success")
    text = store(root).cat_file(first.metrics_file).decode()
    assert text.splitlines() == ["step,loss", "0,1.0", "1,0.75"]


def test_ckpt_path_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL ckpt_path with an unknown protocol, or naming no file, is a clear error."""
    monkeypatch.chdir(tmp_path)
    root = memory_root()
    with pytest.raises(ValueError, match=r"ckpt_path='nosuch://x/last.ckpt'.*fsspec cannot"):
        memory_fit(root, ckpt_path="nosuch://x/last.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        memory_fit(root, ckpt_path=f"{root}/missing.ckpt")


# --- S3, through a real S3-compatible server on 127.0.0.1 ---------------------------


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on a free local port with an empty bucket ``ftrain``; fsspec
    (in process and in children, through the environment) points at it."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    try:
        store("s3://ftrain").mkdir("ftrain")
        yield endpoint
    finally:
        server.stop()


def test_s3_run_killed_midway_resumes_exactly_from_its_url(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child process writing to ``s3://ftrain/run`` is SIGKILLed after step 6 of 12;
    resuming from ``s3://.../last.ckpt`` ends bit for bit where an uninterrupted local
    run does, with the same metrics.csv on S3."""
    child = _child()
    local = tmp_path / "local"
    state, step, data, flags = child.build(str(local))
    reference = ft.fit(state, step, data, **flags).state
    root = "s3://ftrain/run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(CHILD), root, "--kill-at", "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == -9, done.stderr[-3000:]
    folder = f"{root}/ftrain_logs/version_0"
    ckpt = f"{folder}/checkpoints/last.ckpt"
    assert safe_load(ckpt)["counters"]["step"] == 6
    monkeypatch.chdir(tmp_path)
    state, step, data, flags = child.build(root)
    flags["async_checkpointing"] = True  # the resumed run writes to S3 in the background
    resumed = ft.fit(state, step, data, ckpt_path=ckpt, **flags).state
    assert resumed.step == reference.step == child.EPOCHS * child.STEPS_PER_EPOCH
    for a, b in zip(reference.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    remote_csv = store(root).cat_file(f"{folder}/metrics.csv").decode()
    local_csv = (local / "ftrain_logs" / "version_0" / "metrics.csv").read_bytes().decode()
    assert remote_csv == local_csv
    assert "last.ckpt" in names(f"{folder}/checkpoints")
    assert sorted(os.listdir(tmp_path)) == ["local"]  # nothing local for the S3 run
