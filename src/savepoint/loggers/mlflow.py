"""`MLFlowLogger`: parameters and metrics in an MLflow run. Needs ``mlflow`` or ``mlflow-skinny``
(``pip install 'savepoint[mlflow]'``), imported when the logger is created."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from savepoint.loggers.logger import Logger
from savepoint.loggers.tensorboard import _flat

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from savepoint.callbacks.model_checkpoint import ModelCheckpoint

LOCAL_FILE_URI_PREFIX = "file:"


def _client_class() -> type[MlflowClient]:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise ImportError(
            "MLFlowLogger needs the 'mlflow' package: install it with pip install 'savepoint[mlflow]' "
            "(mlflow-skinny is enough)."
        ) from err
    return MlflowClient


class MLFlowLogger(Logger):
    """Lightning's arguments: ``experiment_name``, ``run_name``, ``tracking_uri`` (default
    ``$MLFLOW_TRACKING_URI``, else a local file store in ``save_dir``), ``tags``, ``save_dir``, ``log_model``
    (``True``: the checkpoint files as artifacts at the end; ``"all"``: after every save), ``prefix``,
    ``artifact_location``, ``run_id`` (log into an existing run).

    ``logger.experiment`` is the ``MlflowClient``; ``version`` is the run id. A run resumed from a
    checkpoint logs into the run that wrote it (the checkpoint records the run id). MLflow keeps every
    metric point it is sent, so values a crashed run logged after its last checkpoint stay in the run.
    MLflow 3 refuses its plain file store (``file:`` URIs, the ``save_dir`` default) unless
    ``MLFLOW_ALLOW_FILE_STORE=true`` is set; a ``sqlite:///mlflow.db`` URI (needs ``sqlalchemy``) or a
    tracking server works without it.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "runs",
        run_name: str | None = None,
        tracking_uri: str | None = os.getenv("MLFLOW_TRACKING_URI"),
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: bool | str = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
    ) -> None:
        if log_model not in (True, False, "all"):
            raise ValueError(f"MLFlowLogger(log_model={log_model!r}) must be True, False or 'all'.")
        if not tracking_uri:
            tracking_uri = f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._tracking_uri = tracking_uri
        self._run_name = run_name
        self._run_id = run_id
        self.tags = dict(tags or {})
        self._log_model = log_model
        self._checkpoint_callback: ModelCheckpoint | None = None
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._client = _client_class()(tracking_uri)
        self._initialized = False

    @property
    def experiment(self) -> MlflowClient:
        """The ``MlflowClient``; the experiment and the run are created on first use."""
        if self._initialized:
            return self._client
        if self._run_id is not None:
            self._experiment_id = self._client.get_run(self._run_id).info.experiment_id
        else:
            found = self._client.get_experiment_by_name(self._experiment_name)
            if found is not None and found.lifecycle_stage != "deleted":
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = self._client.create_experiment(
                    name=self._experiment_name, artifact_location=self._artifact_location
                )
            tags = dict(self.tags)
            if self._run_name is not None:
                tags["mlflow.runName"] = self._run_name
            self._run_id = self._client.create_run(experiment_id=self._experiment_id, tags=tags).info.run_id
        self._initialized = True
        return self._client

    @property
    def run_id(self) -> str:
        _ = self.experiment
        return self._run_id  # type: ignore[return-value]

    @property
    def experiment_id(self) -> str | None:
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> str | None:
        return self.experiment_id

    @property
    def version(self) -> str:
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX) :]
        return None

    def log_hyperparams(self, params: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        from mlflow.entities import Param

        # MLflow refuses a changed value for a logged param: a resumed run logs only new ones.
        logged = self.experiment.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:250]) for k, v in _flat(params).items() if k not in logged]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.experiment.log_batch(run_id=self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            name = re.sub(
                r"[^a-zA-Z0-9_/. -]+",
                "",
                f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key,
            )
            if name != key and not self._prefix:
                warnings.warn(
                    f"MLflow allows only '_', '/', '.', ' ' and '-' in metric names: {key!r} is logged as {name!r}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            entries.append(Metric(key=name, value=float(value), timestamp=now, step=step or 0))
        self.experiment.log_batch(run_id=self.run_id, metrics=entries)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._log_model == "all":
            self._log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    def _log_checkpoints(self, checkpoint_callback: ModelCheckpoint) -> None:
        for path in {checkpoint_callback.best_model_path, checkpoint_callback.last_model_path}:
            if path and os.path.isfile(path):
                self.experiment.log_artifact(self.run_id, path, "checkpoints")

    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        if self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)
        self.experiment.set_terminated(self.run_id, "FINISHED" if status == "success" else "FAILED")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self._run_id} if self._run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume logging into the checkpoint's run, unless this logger was given its own run."""
        if state.get("run_id") and not self._initialized and self._run_id is None:
            self._run_id = state["run_id"]
