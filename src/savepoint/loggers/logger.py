"""`Logger`: where the Trainer sends hyperparameters and metrics.

What a logger receives, and when (global rank 0 only; other ranks never call a logger)::

    fit()
    ├── version resolved              every logger's ``version`` is read once, before anything is written,
    │                                 so several loggers under one folder agree on ``version_N``
    ├── log_hyperparams(params)       the module's (and datamodule's) saved hyperparameters
    ├── log_graph(model)              when the logger was asked to (TensorBoard ``log_graph=True``)
    ├── log_metrics(metrics, step)    every ``log_every_n_steps`` optimizer steps (values logged with
    │                                 ``on_step``), and at each training / validation epoch end (``on_epoch``);
    │                                 ``metrics`` maps names to floats and includes ``"epoch"``
    ├── save()                        at the end of each epoch and just before each checkpoint is written,
    │                                 so a checkpoint never refers to log records still in memory
    ├── after_save_checkpoint(cb)     after a `ModelCheckpoint` saved (``cb.last_model_path`` is the file)
    └── finalize(status)              once at the end: ``"success"`` or ``"failed"``

Resuming: a checkpoint records each logger's ``state_dict()`` (by default empty). On resume the logger
gets it back through ``load_state_dict`` before the first new record, so it can drop what a crashed run
logged after that checkpoint and the step axis continues exactly (`CSVLogger` and `TensorBoardLogger`
do).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from savepoint.callbacks.model_checkpoint import ModelCheckpoint


class Logger:
    """Base class of loggers given as ``Trainer(logger=...)`` (one or a list). Override what you need."""

    @property
    def name(self) -> str | None:
        """The experiment name (the folder under ``save_dir`` for file loggers)."""
        return None

    @property
    def version(self) -> int | str | None:
        """The run's version: ``N`` of ``version_N``, or a string naming the run."""
        return None

    @property
    def root_dir(self) -> str | None:
        """The folder holding every version of this experiment."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The folder this run writes into (the default checkpoint folder lives under it)."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The folder given as ``save_dir``."""
        return None

    @property
    def group_separator(self) -> str:
        return "/"

    @property
    def experiment(self) -> Any:
        """The backend object (``SummaryWriter``, ``MlflowClient``...) for things the logger does not wrap."""
        return None

    def log_hyperparams(self, params: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters (called once per fit, before the first metric)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record scalar `metrics` at optimizer step `step`."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model's graph; a no-op unless the logger supports it."""

    def save(self) -> None:
        """Make everything logged so far durable (write buffered rows, flush files)."""

    def finalize(self, status: str) -> None:
        """The run ended with `status` (``"success"`` or ``"failed"``): write what is left and close."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """A `ModelCheckpoint` has just saved ``checkpoint_callback.last_model_path``."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records about this logger (savepoint addition; see the module docstring)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (the result of ``state_dict`` at the checkpoint being resumed)."""


class FolderLogger(Logger):
    """A logger that writes into ``<save_dir>/<name>/version_<N>``: ``version=None`` takes the next free
    ``N`` (read once, then kept), an int names ``version_<N>``, a string names the folder itself."""

    def __init__(self, save_dir: str | os.PathLike, name: str, version: int | str | None) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name
        self._version = version

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @version.setter
    def version(self, value: int | str) -> None:
        self._set_version(value)

    def _set_version(self, value: int | str) -> None:
        self._version = value

    @property
    def log_dir(self) -> str:
        version = self.version
        return os.path.join(self.root_dir, version if isinstance(version, str) else f"version_{version}")


def next_version(root_dir: str) -> int:
    """``max(N) + 1`` over the ``version_N`` folders of `root_dir` (0 when there are none)."""
    if not os.path.isdir(root_dir):
        return 0
    found = [int(m.group(1)) for p in os.listdir(root_dir) if (m := re.fullmatch(r"version_(\d+)", p))]
    return max(found) + 1 if found else 0
