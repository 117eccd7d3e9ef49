"""Callbacks: `Callback`, `Checkpoint`, `ModelCheckpoint`, `EarlyStopping`, `RichProgressBar`, `Timer`,
`BasePredictionWriter`."""

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.callbacks.early_stopping import EarlyStopping
from savepoint.callbacks.model_checkpoint import ModelCheckpoint
from savepoint.callbacks.prediction_writer import BasePredictionWriter
from savepoint.callbacks.progress import ProgressBar, RichProgressBar
from savepoint.callbacks.timer import Timer

__all__ = [
    "BasePredictionWriter",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "ModelCheckpoint",
    "ProgressBar",
    "RichProgressBar",
    "Timer",
]
