"""SLURM: rank, world size and master address from srun's variables; requeue on the
pre-timeout signal with ``scontrol requeue``; resuming from ``hpc_ckpt_N.ckpt``.

The 2-task job runs ``tests/dist_scripts/train.py`` twice as srun would start it (SLURM
variables only, no torchrun ones), with a stand-in ``scontrol`` on PATH that records
its arguments; every task sends itself a real SIGUSR1 after step 3.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.driver import _slurm
from ftrain.driver._resume import hpc_ckpt_path as _hpc_ckpt_path

TRAIN = str(Path(__file__).parent / "dist_scripts" / "train.py")
STEPS = 10


def _load_train() -> Any:
    spec = importlib.util.spec_from_file_location("dist_train_slurm", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_train()


def test_first_host_and_job_id() -> None:
    assert _slurm.first_host("gpu[007-009,012],cpu3") == "gpu007"
    assert _slurm.first_host("a-node") == "a-node"
    assert _slurm.job_id({"SLURM_JOB_ID": "77"}) == "77"
    env = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    assert _slurm.job_id(env) == "77_3"


def test_srun_variables_become_torchrun_ones() -> None:
    """Task 3 of 4 on 2 nodes: rank, world, local rank, tasks per node, first node and a
    port from the job id; a variable already set is kept; an interactive shell is not a
    job step."""
    env = {
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "991234",
        "SLURM_JOB_NAME": "train",
        "MASTER_PORT": "29500",
    }
    assert _slurm.export_launch_env(env)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
    }
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["GROUP_RANK"]) == ("gpu07", "29500", "1")
    del env["MASTER_PORT"]
    _slurm.export_launch_env(env)
    assert env["MASTER_PORT"] == str(15000 + 1234)
    shell = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash"}
    assert not _slurm.export_launch_env(shell) and "RANK" not in shell


def test_requeue_flags_are_checked() -> None:
    with pytest.raises(ValueError, match="slurm_requeue_signal must be a signal name"):
        ft.FitConfig(slurm_requeue_signal="USR1")
    assert ft.FitConfig(slurm_requeue_signal="SIGHUP").slurm_requeue_signal == "SIGHUP"


def test_ckpt_path_hpc_picks_the_newest_or_last(tmp_path: Path, monkeypatch: Any) -> None:
    """ "hpc" is the highest-numbered hpc_ckpt_N.ckpt (by number, not name), else "last";
    a requeued job (SLURM_RESTART_COUNT > 0) picks it without being asked."""
    assert _hpc_ckpt_path("hpc", str(tmp_path)) == "last"
    for n in (2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"")
    assert _hpc_ckpt_path("hpc", str(tmp_path)) == str(tmp_path / "hpc_ckpt_10.ckpt")
    assert _hpc_ckpt_path(None, str(tmp_path)) is None
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert _hpc_ckpt_path(None, str(tmp_path)) == str(tmp_path / "hpc_ckpt_10.ckpt")
    assert _hpc_ckpt_path("last", str(tmp_path)) == "last"


def _free_job_id() -> int:
    """A job id whose port (15000 + id) is free now."""
    for job in range(4000, 9999, 37):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 15000 + job))
            except OSError:
                continue
            return job
    raise RuntimeError("no free port")


def _srun(tmp: Path, job: int, restart: int, args: list[str]) -> list[subprocess.Popen[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        base.pop(key, None)
    bin_dir = tmp / "bin"
    base.update(
        PATH=f"{bin_dir}{os.pathsep}{base['PATH']}",
        SCONTROL_LOG=str(tmp / "scontrol.log"),
        PYTHONUNBUFFERED="1",
        SLURM_JOB_ID=str(job),
        SLURM_JOB_NAME="train",
        SLURM_NTASKS="2",
        SLURM_NNODES="1",
        SLURM_TASKS_PER_NODE="2",
        SLURM_JOB_NODELIST="localhost",
        SLURM_RESTART_COUNT=str(restart),
    )
    command = [sys.executable, TRAIN, "--out", str(tmp / "o"), "--default_root_dir", str(tmp)]
    flags = ["--accelerator", "cpu", "--process_timeout", "60", "--agree_every_n_batches", "1"]
    return [
        subprocess.Popen(
            [*command, *flags, "--max_steps", str(STEPS), *args],
            env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]


def _wait(procs: list[subprocess.Popen[str]]) -> None:
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)


def test_srun_job_requeues_on_sigusr1_and_resumes(tmp_path: Path) -> None:
    """Two srun tasks form a DDP group from SLURM's variables alone; SIGUSR1 after step 3
    saves hpc_ckpt_1.ckpt, rank 0 calls `scontrol requeue <job>` once, both exit 0
    without finishing; the requeued job resumes from it by itself and ends with the
    parameters of one process reading both ranks' batches (batch 8)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    scontrol.chmod(0o755)
    job = _free_job_id()
    _wait(_srun(tmp_path, job, 0, ["--fail", "sigusr1", "--fail-at", "3", "--fail-rank", "-1"]))
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job}\n"
    assert not (tmp_path / "o.run0.rank0").exists()  # exited inside fit
    payload = ft.checkpoint.safe_load(tmp_path / "hpc_ckpt_1.ckpt")
    assert payload["counters"]["step"] == 3

    _wait(_srun(tmp_path, job, 1, []))
    outs = [torch.load(tmp_path / f"o.run0.rank{r}", weights_only=True) for r in (0, 1)]
    assert [o["step"] for o in outs] == [STEPS, STEPS]
    parts = train.build("sgd", 8, 1, None)
    parts.pop("val_step"), parts.pop("val_data")
    want = ft.fit(**parts, max_steps=STEPS, accelerator="cpu", logger=False,
                  enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).state.model.state_dict()  # fmt: skip
    for out in outs:
        for key, value in want.items():
            torch.testing.assert_close(out["params"][key], value, rtol=0, atol=1e-6)
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job}\n"  # not again


def test_the_requeue_signal_is_handled_only_under_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside SLURM (or with auto-requeue off) SIGUSR1 keeps its default meaning."""
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert _slurm.requeue_signals(True, "SIGUSR1") == ()
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert _slurm.requeue_signals(True, "SIGHUP") == (signal.SIGHUP,)
    assert _slurm.requeue_signals(False, "SIGUSR1") == ()
