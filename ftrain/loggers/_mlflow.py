"""MLflow logger: params, metrics at their step, checkpoints as artifacts, resumable runs.

mlflow is an optional dependency (``pip install mlflow``), imported on the first
write. Metrics go to the run in one batch per log point; the run's id is the
logger's ``version``, so a checkpoint remembers it and ``fit(ckpt_path=...)``
continues the same MLflow run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import warnings
from collections.abc import Mapping
from typing import Any

from .._warn import user_stacklevel
from ._base import flatten_params

__all__ = ["MLFlowLogger"]

_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
# MLflow's allowed key characters; anything else becomes "_".
_BAD_KEY = re.compile(r"[^\w\-. /:]")
_MAX_PARAM = 6000  # characters of a param value MLflow stores


class MLFlowLogger:
    """Log a run to MLflow (Lightning's ``MLFlowLogger`` arguments).

    The run is created on first use. Hyperparameters become MLflow params (nested
    keys joined with ``/``), metrics are logged at the step ``fit`` gives. Local
    files of the run (checkpoints) live in ``save_dir/experiment_name/<run_id>``;
    with ``log_model=True`` the checkpoints kept there are uploaded as artifacts
    under ``checkpoints/`` when the run ends.

    Args:
      experiment_name: MLflow experiment (created if missing).
      run_name: display name of a new run.
      tracking_uri: tracking server or store; None for MLflow's own default
        (the ``MLFLOW_TRACKING_URI`` variable, else ``./mlruns``).
      tags: tags of a new run.
      save_dir: local folder for the run's checkpoints.
      log_model: upload the kept checkpoints as artifacts at the end of the run.
      prefix: prepended to every metric name, joined with ``-``.
      artifact_location: artifact root of a new experiment.
      run_id: continue this existing run instead of creating one.

    Raises:
      ModuleNotFoundError: mlflow is not installed (at construction, before training).
    """

    def __init__(
        self,
        experiment_name: str = "ftrain_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        save_dir: str | os.PathLike[str] = "./mlruns",
        log_model: bool = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ModuleNotFoundError(
                "MLFlowLogger needs mlflow: pip install mlflow (or mlflow-skinny for a "
                "remote tracking server)"
            )
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(
                f"MLFlowLogger: experiment_name must be a non-empty str, got {experiment_name!r}"
            )
        if not isinstance(log_model, bool):
            raise ValueError(f"MLFlowLogger: log_model must be True or False, got {log_model!r}")
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tracking_uri = tracking_uri
        self._tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self._save_dir = os.fspath(save_dir)
        self._log_model = log_model
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._run_id = run_id
        self._client: Any = None
        self._experiment_id: str | None = None
        self._finalized = False
        self._renamed: set[str] = set()
        self._epoch_step: int | None = None  # the step whose epoch is logged

    # identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The experiment name (the folder under ``save_dir``)."""
        return self._experiment_name

    @property
    def save_dir(self) -> str:
        """Local folder holding each run's checkpoints."""
        return self._save_dir

    @property
    def version(self) -> str:
        """The MLflow run id; the first access creates the run."""
        return self.run_id

    @property
    def log_dir(self) -> str:
        """``save_dir/experiment_name/<run_id>``: the run's local files."""
        return os.path.join(self._save_dir, self._experiment_name, self.run_id)

    @property
    def experiment(self) -> Any:
        """The ``mlflow.tracking.MlflowClient``, for anything else (figures, tables, ...)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The MLflow experiment's id (the experiment is created if missing)."""
        if self._experiment_id is None:
            client = self.experiment
            found = client.get_experiment_by_name(self._experiment_name)
            if found is not None:
                self._experiment_id = str(found.experiment_id)
            else:
                self._experiment_id = str(
                    client.create_experiment(
                        self._experiment_name, artifact_location=self._artifact_location
                    )
                )
        return self._experiment_id

    @property
    def run_id(self) -> str:
        """The MLflow run id; the first access creates the run."""
        if self._run_id is None:
            run = self.experiment.create_run(
                self.experiment_id, run_name=self._run_name, tags=self._tags
            )
            self._run_id = str(run.info.run_id)
        return self._run_id

    # writes -----------------------------------------------------------------------------

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` as MLflow params (flattened with ``/``, values as text).

        MLflow params cannot change: a resumed run logs only the new ones, and warns
        about a value that differs from the one recorded.
        """
        from mlflow.entities import Param

        flat = {self._key(k): str(v)[:_MAX_PARAM] for k, v in flatten_params(params).items()}
        recorded = self.experiment.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in recorded and recorded[k] != v)
        if changed:
            warnings.warn(
                f"MLFlowLogger: params {changed} already hold other values in run "
                f"{self.run_id}; MLflow keeps the first ones",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        new = [Param(k, v) for k, v in flat.items() if k not in recorded]
        if new:
            self.experiment.log_batch(self.run_id, params=new)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log every metric at ``step`` in one request; ``epoch`` once per step."""
        from mlflow.entities import Metric

        if "epoch" in metrics:
            if step == self._epoch_step:
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._epoch_step = step
        now = int(time.time() * 1000)
        prefix = f"{self._prefix}-" if self._prefix else ""
        batch = [
            Metric(self._key(prefix + k), float(v), now, int(step)) for k, v in metrics.items()
        ]
        if batch:
            self.experiment.log_batch(self.run_id, metrics=batch)

    def resume(self, version: int | str, step: int) -> None:
        """Continue the MLflow run ``version`` (a run id).

        MLflow cannot delete logged points: values the interrupted run logged at
        steps >= ``step`` stay in the run's history beside the new ones.
        """
        self._run_id = str(version)
        self._finalized = False
        self._epoch_step = None
        self.experiment.update_run(self._run_id, status="RUNNING")

    def flush(self) -> None:
        """Nothing to do: every write is sent when made."""

    def finalize(self, status: str) -> None:
        """Upload the checkpoints if ``log_model``, then end the run with ``status``."""
        if self._finalized or self._run_id is None:
            return
        self._finalized = True
        checkpoints = os.path.join(self.log_dir, "checkpoints")
        if self._log_model and os.path.isdir(checkpoints):
            self.experiment.log_artifacts(self._run_id, checkpoints, "checkpoints")
        self.experiment.set_terminated(self._run_id, status=_STATUS.get(status, "FINISHED"))

    def _key(self, key: str) -> str:
        clean = _BAD_KEY.sub("_", key)
        if clean != key and key not in self._renamed:
            self._renamed.add(key)
            warnings.warn(
                f"MLFlowLogger: {key!r} is logged as {clean!r} (characters MLflow refuses)",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return clean

    def __repr__(self) -> str:
        return f"MLFlowLogger(experiment_name={self._experiment_name!r}, run_id={self._run_id!r})"
