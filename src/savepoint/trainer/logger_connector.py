"""The Trainer's side of loggers: which loggers a run has, the folder they share, what they receive.

Only global rank 0 calls a logger; every rank agrees on the version so ``trainer.log_dir`` (and the
default checkpoint folder under it) is the same everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from savepoint.checkpoint import format as fmt
from savepoint.loggers.csv_logs import CSVLogger
from savepoint.loggers.logger import Logger
from savepoint.loggers.tensorboard import TensorBoardLogger, tensorboard_available

if TYPE_CHECKING:
    import torch

    from savepoint.trainer.trainer import Trainer


def build_loggers(logger: Any, root_dir: str) -> list[Logger]:
    """``True``/``None``: TensorBoard when the package is installed, else CSV (in ``<root>/runs/``);
    ``False``: none; a `Logger` or an iterable of them: those."""
    if logger is True or logger is None:
        cls = TensorBoardLogger if tensorboard_available() else CSVLogger
        return [cls(root_dir, name="runs")]
    if logger is False:
        return []
    if isinstance(logger, Logger):
        return [logger]
    if isinstance(logger, list | tuple):
        bad = [lg for lg in logger if not isinstance(lg, Logger)]
        if not bad:
            return list(logger)
    raise TypeError(
        f"Trainer(logger={logger!r}) must be True, False, a savepoint Logger or a list of them "
        f"(CSVLogger, TensorBoardLogger, MLFlowLogger from savepoint.loggers)."
    )


def adopt_run_folder(trainer: Trainer, ckpt_path: str) -> None:
    """Resuming a checkpoint of ``<root>/<name>/version_N/checkpoints/`` continues in ``version_N`` for
    every file logger whose version was left to choose (Lightning would start ``version_N+1``)."""
    path = Path(os.path.abspath(ckpt_path))
    if path.parent.name != "checkpoints":
        return
    match = re.fullmatch(r"version_(\d+)", path.parent.parent.name)
    if not match:
        return
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger | TensorBoardLogger) or logger._version is not None:
            continue
        if "://" in logger.root_dir:
            continue
        if path.parent.parent.parent == Path(logger.root_dir).resolve():
            logger.version = int(match.group(1))


def resolve_versions(trainer: Trainer) -> None:
    """Fix every file logger's version before anything is written (so several loggers under one folder
    pick the same ``version_N``), and make every rank agree on it."""
    versions: dict[str, Any] = {}
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger | TensorBoardLogger):
            if logger._version is None:
                logger.version = versions.setdefault(logger.root_dir, logger.version)
            logger.version = trainer.strategy.broadcast(logger.version)


def restore_states(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Give each logger the state the checkpoint recorded for a logger of the same type and position."""
    if not trainer.is_global_zero:
        return
    saved = ((checkpoint.get(fmt.LOOPS) or {}).get(fmt.FIT_LOOP) or {}).get("loggers") or []
    for logger, entry in zip(trainer.loggers, saved):
        if isinstance(entry, dict) and entry.get("type") == type(logger).__name__:
            logger.load_state_dict(entry.get("state", {}))


def states(trainer: Trainer) -> list[dict[str, Any]]:
    return [{"type": type(lg).__name__, "state": lg.state_dict()} for lg in trainer.loggers]


def log_hparams(trainer: Trainer) -> None:
    params: dict[str, Any] = {}
    model = trainer.training_module
    if model.hparams and getattr(model, "_log_hyperparams", True):
        params.update(model.hparams)
    datamodule = trainer.datamodule
    if datamodule is not None and datamodule.hparams:
        params.update(datamodule.hparams)
    monitored = [m for cb in trainer.checkpoint_callbacks if (m := getattr(cb, "monitor", None))]
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.monitored_metrics = list(dict.fromkeys(monitored))
        if params:
            logger.log_hyperparams(params)
        logger.log_graph(model)


def log_metrics(trainer: Trainer, metrics: dict[str, torch.Tensor], step: int, epoch: int) -> None:
    values = {k: float(v) for k, v in metrics.items()}
    values["epoch"] = epoch
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)
