"""Distributed runs on the CPU: 2 gloo processes, launched by ftrain, torchrun or spawn.

The jobs run ``tests/dist_scripts/train.py``; each rank writes its final parameters
and metrics, which are compared with a single process reading twice the batch.
"""

from __future__ import annotations

import csv
import datetime
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft
from ftrain.driver import _distributed
from ftrain.driver._distributed import DistEnv, setup_distributed
from ftrain.driver._launch import ScriptLauncher, SpawnLauncher, free_port

SCRIPTS = Path(__file__).parent / "dist_scripts"
TRAIN = str(SCRIPTS / "train.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
STEPS = 10  # optimizer steps of the reference runs: 2.5 epochs of 4 batches per rank
FLAGS = ["--accelerator", "cpu", "--process_timeout", "60"]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("dist_train", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_script()


def job(
    args: list[str], tmp: Path, *, launcher: list[str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the training script (``--devices 2`` by default: ftrain launches the workers)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    head = launcher or [sys.executable]
    devices = [] if launcher or "--devices" in args else ["--devices", "2"]
    command = [*head, TRAIN, "--out", str(tmp / "o"), "--default_root_dir", str(tmp)]
    return subprocess.run(
        [*command, *devices, *FLAGS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def outputs(tmp: Path, run: int = 0) -> list[dict[str, Any]]:
    return [torch.load(tmp / f"o.run{run}.rank{r}", weights_only=True) for r in (0, 1)]


def reference(optim: str, acc: int, clip: float | None, steps: int, val: bool) -> Any:
    """One process reading the union of both ranks' batches (batch 8 = 2 x 4)."""
    parts = train.build(optim, 8, acc, clip)
    if not val:
        parts.pop("val_step"), parts.pop("val_data")
    return ft.fit(
        **parts,
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def assert_params(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], **tol: Any) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], **(tol or {"rtol": 0, "atol": 1e-6}))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four SWEEP configurations, DDP over 2 ranks, STEPS steps each, one job (the
    group is re-created)."""
    tmp = tmp_path_factory.mktemp("sweep")
    ok(job(["--sweep", "--val", "--max_steps", str(STEPS)], tmp))
    return tmp


@pytest.fixture(scope="module")
def baseline(sweep: Path) -> dict[str, torch.Tensor]:
    """An uninterrupted 2-rank DDP run of STEPS steps (SGD, batch 4 per rank): the sweep's
    first run (its validations leave the parameters alone, and no job is started twice)."""
    assert train.SWEEP[0] == ("sgd", 1, None)
    first, second = outputs(sweep, 0)
    assert first["step"] == STEPS
    assert_params(second["params"], first["params"], rtol=0, atol=0)
    return first["params"]


@pytest.mark.parametrize("index", range(len(train.SWEEP)))
def test_ddp_two_ranks_match_one_process_with_twice_the_batch(sweep: Path, index: int) -> None:
    """2 ranks x batch 4 == 1 process x batch 8 (accumulate(2) and clipping included)."""
    optim, acc, clip = train.SWEEP[index]
    want = reference(optim, acc, clip, STEPS, val=True)
    first, second = outputs(sweep, index)
    assert first["step"] == second["step"] == want.state.step == STEPS
    assert_params(second["params"], first["params"], rtol=0, atol=0)
    tol = {"rtol": 0, "atol": 1e-6} if optim == "sgd" else {"rtol": 1e-4, "atol": 1e-5}
    assert_params(first["params"], want.state.model.state_dict(), **tol)


def test_validation_and_synced_metrics_cover_every_rank(sweep: Path) -> None:
    """Validation epoch values (weighted mean, max, sum) and sync_dist training values
    are those of the whole data, on every rank, not rank 0's shard."""
    want = reference("sgd", 1, None, STEPS, val=True).metrics
    for out in outputs(sweep, 0):
        got = out["metrics"]
        for name in ("val_loss", "val_max", "val_sum", "train_mse_epoch", "train_mse_step"):
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-6), name


def test_resume_after_both_ranks_are_killed(tmp_path: Path, baseline: Any) -> None:
    """SIGKILL of every rank mid-run, then ckpt_path="last": the same final parameters."""
    killed = job(
        [
            "--ckpt-every",
            "1",
            "--max_steps",
            str(STEPS),
            "--fail",
            "killall",
            "--fail-at",
            "6",
            "--fail-rank",
            "0",
        ],
        tmp_path,
    )
    assert killed.returncode != 0
    assert not (tmp_path / "o.run0.rank0").exists()
    ok(job(["--ckpt-every", "1", "--max_steps", str(STEPS), "--resume"], tmp_path))
    first, second = outputs(tmp_path)
    assert first["step"] == STEPS
    assert_params(first["params"], baseline)
    assert_params(second["params"], baseline)


def _epoch_means(root: Path) -> list[tuple[str, str]]:
    [metrics] = root.rglob("metrics.csv")
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["step"], r["train_mse_epoch"]) for r in rows if r.get("train_mse_epoch")]


def test_kill_inside_an_accumulation_window_resumes_exactly(tmp_path: Path) -> None:
    """2 ranks, accumulate 4, a validation and a checkpoint every 3 batches (so a checkpoint
    falls inside a window, where each rank holds its own unreduced gradients); every rank
    is SIGKILLed after batch 11, inside a window, after such a checkpoint. The
    resume from the mid-window checkpoint ends bit-identical to an uninterrupted run,
    with the same sync_dist epoch means of the training loss in metrics.csv.
    Checkpoints are written synchronously: a SIGKILL loses a background write still in
    flight, and this test needs the mid-window file on disk before the kill."""
    args = ["--batch", "2", "--acc", "4", "--val", "--val_check_interval", "3", "--ckpt-val"]
    args += ["--async_checkpointing", "false"]
    args += ["--max_steps", "4"]
    ok(job(args, tmp_path / "whole"))
    whole = outputs(tmp_path / "whole")
    want = whole[0]["params"]
    root = tmp_path / "killed"
    fail = ["--fail", "killall@micro", "--fail-at", "11", "--fail-rank", "0"]
    assert job([*args, *fail], root).returncode != 0
    # The file the resume reads, read before the resumed run replaces it (last.ckpt).
    last = root / "ftrain_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert "grads_per_rank" in ft.load_checkpoint(last)  # a checkpoint inside a window
    resumed = job([*args, "--resume"], root)
    ok(resumed)
    line = next(x for x in resumed.stdout.splitlines() if x.startswith("Resuming from "))
    assert line[len("Resuming from ") :].split(" (")[0] == str(last)
    for out in outputs(root):
        assert_params(out["params"], want, rtol=0, atol=0)
    # Epoch 0's sync_dist mean covers every rank's batches from before the kill: the
    # mid-epoch checkpoint holds each rank's partial sums.
    assert _epoch_means(root) == _epoch_means(tmp_path / "whole")
    assert len(_epoch_means(root)) == 2


def test_elastic_restart_resumes_by_itself(tmp_path: Path, baseline: Any) -> None:
    """Under torchrun --max-restarts 1 a worker dies once; the new group resumes."""
    launcher = [
        *TORCHRUN,
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--master-port",
        str(free_port()),
        "--monitor-interval",
        "0.2",
    ]
    proc = job(
        ["--ckpt-every", "1", "--max_steps", str(STEPS), "--fail", "exit", "--fail-at", "5"],
        tmp_path,
        launcher=launcher,
    )
    ok(proc)
    assert (tmp_path / "failed_at").exists()  # the first group did fail
    first, second = outputs(tmp_path)
    assert first["step"] == second["step"] == STEPS
    assert_params(first["params"], baseline)


def test_a_raising_rank_ends_the_job_at_once(tmp_path: Path) -> None:
    """An exception on rank 1: non-zero exit, its message, and the other rank ended
    well within process_timeout."""
    proc = job(
        ["--max_steps", "50", "--fail", "raise", "--fail-at", "3", "--process_timeout", "60"],
        tmp_path,
    )
    ended = time.time()
    assert proc.returncode != 0
    assert "injected failure at step 3" in proc.stderr
    assert ended - float((tmp_path / "failed_at").read_text()) < 30


def test_a_hanging_rank_ends_the_job_within_the_timeout(tmp_path: Path) -> None:
    """Rank 1 sleeps: rank 0's collective times out after process_timeout (5 s), not
    gloo's 30 minutes, and the launcher ends the sleeper."""
    proc = job(
        ["--max_steps", "50", "--fail", "hang", "--fail-at", "3", "--process_timeout", "5"],
        tmp_path,
    )
    ended = time.time()
    waited = ended - float((tmp_path / "failed_at").read_text())
    assert proc.returncode != 0
    assert "rank 0 exited" in proc.stderr
    assert 4 < waited < 40, waited


def test_ranks_agree_to_stop_after_the_same_batch(tmp_path: Path) -> None:
    """SIGTERM on rank 1 after batch 3, agreement every 4 batches: both ranks stop after
    batch 4 and report an interrupted run."""
    ok(
        job(
            [
                "--max_steps",
                "50",
                "--fail",
                "sigterm",
                "--fail-at",
                "3",
                "--ckpt-every",
                "100",
                "--agree_every_n_batches",
                "4",
            ],
            tmp_path,
        )
    )
    for out in outputs(tmp_path):
        assert out["micro_step"] == out["step"] == 4
        assert out["interrupted"] is True
    assert (tmp_path / "ftrain_logs" / "version_0" / "checkpoints" / "last.ckpt").exists()


def test_twenty_runs_end_without_a_teardown_abort() -> None:
    """20 short 2-process DDP runs, each ending with a normal interpreter exit."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "repeat.py"), "20"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    ok(proc)
    assert "20 runs ok" in proc.stdout
    assert "terminate called" not in proc.stderr


def test_two_nodes_on_loopback_match_one_node(tmp_path: Path, baseline: Any) -> None:
    """torchrun --nnodes 2 (one process each, c10d rendezvous on 127.0.0.1)."""
    port = free_port()
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    procs = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                TRAIN,
                "--out",
                str(tmp_path / "o"),
                "--default_root_dir",
                str(tmp_path),
                *FLAGS,
                "--num_nodes",
                "2",
                "--max_steps",
                str(STEPS),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-4000:]
    for out in outputs(tmp_path):
        assert_params(out["params"], baseline)


def test_fsdp_sharded_checkpoints_round_trip(tmp_path: Path, baseline: Any) -> None:
    """FSDP2: sharded saves, a resume from them, then a plain model equal to DDP's."""
    ok(job(["--strategy", "fsdp", "--steps", f"4,{STEPS}", "--ckpt-every", "2"], tmp_path))
    first, second = outputs(tmp_path, run=1)
    assert first["step"] == STEPS
    assert_params(first["params"], baseline)
    assert_params(second["params"], first["params"], rtol=0, atol=0)
    folder = tmp_path / "ftrain_logs" / "version_0" / "checkpoints"
    payload = ft.load_checkpoint(folder / "last.ckpt")
    assert "model" not in payload and (folder / payload["sharded"]).is_dir()
    with pytest.raises(ft.checkpoint.CheckpointError, match="sharded"):
        ft.restore(train.build("sgd", 4, 1, None)["state"], payload)


def test_fsdp_skips_gradient_sync_on_accumulating_batches(tmp_path: Path) -> None:
    """FSDP2 with accumulate 2 reduce-scatters gradients on each window's last batch only
    (counted per batch: none on accumulating batches), and ends equal within float
    tolerance to one process with accumulate 2 reading both ranks' batches (what DDP
    with accumulate 2 equals: test_ddp_two_ranks_match_one_process_with_twice_the_batch)."""
    ok(
        job(
            ["--strategy", "fsdp", "--acc", "2", "--max_steps", "4", "--count-reduce-scatter"],
            tmp_path,
        )
    )
    fsdp, other = outputs(tmp_path)
    want = reference("sgd", 2, None, 4, val=False)
    assert fsdp["step"] == want.state.step == 4
    counts = fsdp["reduce_scatters"]
    per_batch = [b - a for a, b in zip([0, *counts], counts, strict=False)]
    assert len(per_batch) == 8, per_batch
    assert per_batch[0::2] == [0, 0, 0, 0], per_batch
    assert all(c > 0 for c in per_batch[1::2]), per_batch
    assert_params(other["params"], fsdp["params"], rtol=0, atol=0)
    assert_params(fsdp["params"], want.state.model.state_dict())


def test_ddp_spawn_returns_rank_zero_state(tmp_path: Path, baseline: Any) -> None:
    """strategy="ddp_spawn": fit returns in the launching process with rank 0's state."""
    ok(job(["--strategy", "ddp_spawn", "--max_steps", str(STEPS)], tmp_path))
    out = torch.load(tmp_path / "o.run0.rank0", weights_only=True)
    assert out["step"] == STEPS
    assert_params(out["params"], baseline)


# Choosing the environment, without starting processes ----------------------------------


def _launched(monkeypatch: pytest.MonkeyPatch, world: int, local: int) -> None:
    for key, value in dict(
        RANK=0,
        LOCAL_RANK=0,
        WORLD_SIZE=world,
        LOCAL_WORLD_SIZE=local,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=free_port(),
    ).items():
        monkeypatch.setenv(key, str(value))


def test_num_nodes_and_devices_are_checked_against_the_launcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WORLD_SIZE/LOCAL_WORLD_SIZE from torchrun decide; a mismatch names the fix."""
    _launched(monkeypatch, world=2, local=1)
    with pytest.raises(ValueError, match="pass num_nodes=2"):
        setup_distributed(ft.FitConfig(accelerator="cpu"))
    _launched(monkeypatch, world=4, local=2)
    with pytest.raises(ValueError, match="pass devices=2"):
        setup_distributed(ft.FitConfig(accelerator="cpu", num_nodes=2, devices=3))
    with pytest.raises(ValueError, match="single_device"):
        setup_distributed(ft.FitConfig(accelerator="cpu", num_nodes=2, strategy="single_device"))
    _launched(monkeypatch, world=1, local=1)
    assert type(setup_distributed(ft.FitConfig(accelerator="cpu"))) is DistEnv


def test_plain_python_picks_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """devices=N > 1: a script launcher (ddp, fsdp, auto) or spawn; errors are clear."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    cpu = ft.FitConfig(accelerator="cpu")
    assert type(setup_distributed(cpu)) is DistEnv
    assert isinstance(setup_distributed(cpu.replace(devices=2)), ScriptLauncher)
    assert isinstance(setup_distributed(cpu.replace(devices=2, strategy="fsdp")), ScriptLauncher)
    spawn = setup_distributed(cpu.replace(devices=2, strategy="ddp_spawn"))
    assert isinstance(spawn, SpawnLauncher) and spawn.launched_here
    with pytest.warns(RuntimeWarning, match="one device on one node"):
        assert type(setup_distributed(cpu.replace(strategy="ddp"))) is DistEnv
    with pytest.raises(ValueError, match="started on every node by a launcher"):
        setup_distributed(cpu.replace(num_nodes=2))
    with pytest.raises(ValueError, match="needs CUDA"):
        setup_distributed(cpu.replace(devices=2, process_group_backend="nccl"))
    with pytest.raises(ValueError, match="single_device"):
        setup_distributed(cpu.replace(devices=2, strategy="single_device"))


def test_distributed_flags_are_validated() -> None:
    """The new FitConfig fields refuse bad values, naming the field."""
    with pytest.raises(ValueError, match="agree_every_n_batches"):
        ft.FitConfig(agree_every_n_batches=0)
    with pytest.raises(ValueError, match="process_timeout"):
        ft.FitConfig(process_timeout=0)
    with pytest.raises(ValueError, match="process_group_backend"):
        ft.FitConfig(process_group_backend="mpi")
    with pytest.raises(TypeError, match="fsdp_policy"):
        ft.FitConfig(fsdp_policy="children")


def test_agreement_happens_every_n_batches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between agreement points a rank acts on no flag (it waits for the next point)."""
    _launched(monkeypatch, world=1, local=1)
    monkeypatch.setattr(_distributed, "_STORE", None)
    group = _distributed._Group(
        ft.FitConfig(agree_every_n_batches=3, process_timeout=30), "cpu", "gloo", sharded=False
    )
    try:
        assert group.agree((True, False), 1) == (False, False)
        assert group.agree((True, False), 2) == (False, False)
        assert group.agree((True, False), 3) == (True, False)
        assert group.agree((False, True), 4, now=True) == (False, True)
        assert group.share(lambda: "from rank 0") == "from rank 0"
        with pytest.raises(KeyError, match="rank 0's error"):
            group.share(lambda: {}["rank 0's error"])
    finally:
        group.teardown()
        monkeypatch.setattr(_distributed, "_STORE", None)
    assert datetime.timedelta(seconds=30)  # the timeout given above is a timedelta


def test_the_example_runs_alike_in_one_process_torchrun_and_self_launched(tmp_path: Path) -> None:
    """examples/ddp_torchrun.py: 2 ranks (torchrun or --devices 2) x batch 32 reach the
    validation loss of 1 process x batch 64."""
    example = str(Path(__file__).resolve().parents[1] / "examples" / "ddp_torchrun.py")
    common = ["--max_steps", "6", "--val_check_interval", "3", "--accelerator", "cpu", "--enable_progress_bar", "false",
              "--enable_model_summary", "false", "--enable_checkpointing", "false"]  # fmt: skip
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    runs = {
        "one": [sys.executable, example, "--batch_size", "64"],
        "self": [sys.executable, example, "--devices", "2"],
        "torchrun": [*TORCHRUN, "--nproc-per-node", "2", "--master-port", str(free_port()),
                     example],
    }  # fmt: skip
    losses = {}
    for name, command in runs.items():
        cwd = tmp_path / name
        cwd.mkdir()
        done = subprocess.run(
            [*command, *common], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )
        ok(done)
        line = done.stdout.strip().splitlines()[-1]
        assert line.startswith("1 process(es)" if name == "one" else "2 process(es)"), line
        losses[name] = float(line.split("val_loss=")[1].split()[0])
    assert losses["self"] == losses["torchrun"] == pytest.approx(losses["one"], abs=2e-4)
