"""Experiment loggers: `Logger` (the base, with what it receives and when), `CSVLogger`,
`TensorBoardLogger` (extra ``tensorboard``) and `MLFlowLogger` (extra ``mlflow``). The optional packages
are imported when a logger first needs them, never by ``import savepoint``."""

from savepoint.loggers.csv_logs import CSVLogger
from savepoint.loggers.logger import Logger
from savepoint.loggers.mlflow import MLFlowLogger
from savepoint.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "MLFlowLogger", "TensorBoardLogger"]
