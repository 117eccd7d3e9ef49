"""Callbacks: `Callback`, `Checkpoint`, `ModelCheckpoint`, `EarlyStopping`, `RichProgressBar`."""

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.callbacks.early_stopping import EarlyStopping
from savepoint.callbacks.model_checkpoint import ModelCheckpoint
from savepoint.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "ModelCheckpoint",
    "ProgressBar",
    "RichProgressBar",
    "TQDMProgressBar",
]
