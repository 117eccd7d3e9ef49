"""`TensorBoardLogger`: event files under ``<save_dir>/<name>/version_<N>``, opened with
``tensorboard --logdir <save_dir>/<name>``. Needs the ``tensorboard`` package (``pip install
'savepoint[tensorboard]'``), imported only when the logger first writes."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from savepoint.hparams import to_plain
from savepoint.loggers.logger import FolderLogger

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _summary_writer_class() -> type[SummaryWriter]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "TensorBoardLogger needs the 'tensorboard' package: install it with "
            "pip install 'savepoint[tensorboard]' (or use CSVLogger, which needs nothing)."
        ) from err
    return SummaryWriter


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``a/b`` keys; values TensorBoard cannot show become their text."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class TensorBoardLogger(FolderLogger):
    """Scalars (per step and per epoch), hyperparameters in the HPARAMS tab, and the ``SummaryWriter``
    itself as ``logger.experiment`` (``add_image``, ``add_histogram``...).

    Same arguments as Lightning's: ``save_dir``, ``name`` (``"runs"`` here), ``version``, ``log_graph``
    (the module's graph from ``example_input_array``), ``default_hp_metric`` (declare ``hp_metric`` in the
    HPARAMS view), ``prefix``, ``sub_dir``; other keywords go to ``SummaryWriter`` (``max_queue``,
    ``flush_secs``). The HPARAMS view also lists the metric each ModelCheckpoint monitors.

    Events are queued and written by the writer's thread; ``save()`` flushes them (each epoch end and
    before each checkpoint), so logging costs the training loop almost nothing.
    """

    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "runs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir, name or "", version)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = os.fspath(sub_dir) if sub_dir is not None else None
        self._kwargs = {"max_queue": 1000, "flush_secs": 30, **kwargs}
        self._experiment: SummaryWriter | None = None
        self.hparams: dict[str, Any] = {}
        self.monitored_metrics: list[str] = []  # declared in the HPARAMS view (set by the Trainer)
        self._resumed = False

    # -- where -----------------------------------------------------------------------------------------------

    def _set_version(self, value: int | str) -> None:
        if self._experiment is not None:
            raise RuntimeError("TensorBoardLogger.version cannot change once the writer is open.")
        self._version = value

    @property
    def log_dir(self) -> str:
        path = super().log_dir
        if self._sub_dir is not None:
            path = os.path.join(path, self._sub_dir)
        return os.path.expanduser(os.path.expandvars(path))

    @property
    def experiment(self) -> SummaryWriter:
        """The ``torch.utils.tensorboard.SummaryWriter`` of this run (created on first use)."""
        if self._experiment is None:
            writer_cls = _summary_writer_class()
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = writer_cls(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    # -- what ------------------------------------------------------------------------------------------------

    def log_hyperparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, Any] | None = None, step: int | None = None
    ) -> None:
        """Hyperparameters for the HPARAMS view; `metrics` are written as scalars at `step` (0)."""
        from torch.utils.tensorboard.summary import hparams

        self.hparams.update(to_plain(dict(params)))
        if metrics is None and self._default_hp_metric:
            metrics = {"hp_metric": -1}
        if metrics and not self._resumed:  # a resumed run has them already: no duplicate points
            self.log_metrics(metrics, step or 0)
        declared = dict.fromkeys([*(metrics or {}), *self.monitored_metrics], 0.0)
        flat = _flat(self.hparams)
        if not flat:
            return
        exp, ssi, sei = hparams(flat, declared)
        writer = self.experiment._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        writer = self.experiment
        for key, value in metrics.items():
            writer.add_scalar(f"{self._prefix}{key}", float(value), step)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if not self._log_graph:
            return
        input_array = getattr(model, "example_input_array", None) if input_array is None else input_array
        if input_array is None:
            warnings.warn(
                "TensorBoardLogger(log_graph=True): set model.example_input_array (or pass input_array) "
                "to log the model's graph.",
                UserWarning,
                stacklevel=2,
            )
            return
        with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            self.experiment.add_graph(model, input_array)

    def save(self) -> None:
        if self._experiment is None:
            return
        self._experiment.flush()
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if self.hparams and not os.path.isfile(hparams_file):
            import yaml

            tmp = hparams_file + ".tmp"
            with open(tmp, "w") as f:
                yaml.safe_dump(self.hparams, f, sort_keys=False)
            os.replace(tmp, hparams_file)

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.save()
            self._experiment.close()
            self._experiment = None

    # -- resume ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # Called at a save point, after save(): every event written so far has a wall time <= now.
        return {"wall_time": time.time()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Drop the events a crashed run wrote after the checkpoint (wall time later than its save)."""
        wall_time = state.get("wall_time")
        self._resumed = True
        if wall_time is not None:
            from savepoint.loggers._tb_events import truncate_events_after

            current = self._experiment.file_writer.event_writer._file_name if self._experiment else None
            truncate_events_after(self.log_dir, float(wall_time), skip=current)
