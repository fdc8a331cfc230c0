"""MLFlowLogger against a real tracking server (``mlflow server`` on 127.0.0.1, sqlite)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ftrain as ft

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow

QUIET: dict[str, Any] = dict(enable_progress_bar=False, enable_model_summary=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server with a sqlite backend and served artifacts, stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    command = [
        mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = open(root / "server.log", "w")  # noqa: SIM115 - open while the server runs
    # Its own process group: the server's processes are stopped together (a SIGTERM to
    # the `mlflow` process alone waits ~10 s for its children).
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine takes over a minute
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _loss(model: torch.nn.Module, batch: Any) -> Any:
    x, y = batch
    loss = torch.nn.functional.mse_loss(model(x), y)
    return loss, {"mae": ft.log((model(x) - y).abs().mean(), on_step=True, on_epoch=True)}


def _val(model: torch.nn.Module, batch: Any) -> dict[str, Any]:
    x, y = batch
    return {"val_loss": torch.nn.functional.mse_loss(model(x), y)}


def _fit(logger: Any, root: Path, max_epochs: int, **kw: Any) -> ft.FitResult:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    state = ft.TrainState.create(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    data = ft.TensorLoader(x, x.sum(1, keepdim=True), batch_size=8, shuffle=False)
    return ft.fit(
        state, ft.train_step(_loss), data, val_step=ft.eval_step(_val), val_data=data,
        logger=logger, hparams={"lr": 0.1, "optim": {"name": "sgd"}}, max_epochs=max_epochs,
        log_every_n_steps=2, default_root_dir=root, **QUIET, **kw,
    )  # fmt: skip


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_params_metrics_artifacts_and_resume(server: str, tmp_path: Path) -> None:
    """One run: params, step metrics at fit's steps, epoch and validation metrics, status;
    the kept checkpoints as artifacts; a resume continues the same MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    save_dir = tmp_path / "mlruns"

    def logger() -> ft.loggers.MLFlowLogger:
        return ft.loggers.MLFlowLogger(
            "exp", tracking_uri=server, save_dir=save_dir, log_model=True, tags={"team": "t"}
        )

    first = logger()
    result = _fit(first, tmp_path, max_epochs=1)
    run_id = first.version
    assert result.log_dir == os.path.join(save_dir, "exp", run_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["team"] == "t"
    assert run.data.params == {"lr": "0.1", "optim/name": "sgd"}
    # 4 batches: step values at steps 1 and 3 (0-based x of steps 2 and 4).
    assert [s for s, _ in _history(client, run_id, "loss")] == [1, 3]
    assert [s for s, _ in _history(client, run_id, "mae_step")] == [1, 3]
    assert _history(client, run_id, "mae_epoch")[0][0] == 3
    assert _history(client, run_id, "val_loss") == [(3, pytest.approx(result.metrics["val_loss"]))]
    assert [(s, v) for s, v in _history(client, run_id, "epoch")] == [(1, 0.0), (3, 0.0)]
    artifacts = [Path(a.path).name for a in client.list_artifacts(run_id, "checkpoints")]
    local = sorted(p.name for p in Path(result.log_dir, "checkpoints").iterdir())
    assert local and sorted(artifacts) == local

    second = logger()
    more = _fit(second, tmp_path, max_epochs=2, ckpt_path="last")
    assert second.version == run_id and more.state.step == 8
    experiment = client.get_experiment_by_name("exp")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert [s for s, _ in _history(client, run_id, "loss")] == [1, 3, 5, 7]
    assert [s for s, _ in _history(client, run_id, "val_loss")] == [3, 7]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_failed_run_status_prefix_and_key_cleanup(server: str, tmp_path: Path) -> None:
    """An error ends the run FAILED; prefix names the metrics; a refused character is
    replaced, with a warning."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    logger = ft.loggers.MLFlowLogger("other", tracking_uri=server, save_dir=tmp_path, prefix="a")
    with pytest.warns(RuntimeWarning, match="'a-acc@1' is logged as 'a-acc_1'"):
        logger.log_metrics({"acc@1": 0.5, "loss": 1.0}, step=4)
    logger.finalize("failed")
    logger.finalize("success")  # idempotent
    run = client.get_run(logger.version)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"a-acc_1": 0.5, "a-loss": 1.0}
