"""Callbacks: `Callback`, `Checkpoint`, `ModelCheckpoint`, `OnExceptionCheckpoint`, `EarlyStopping`,
`RichProgressBar`."""

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.callbacks.early_stopping import EarlyStopping
from savepoint.callbacks.model_checkpoint import ModelCheckpoint
from savepoint.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from savepoint.callbacks.progress import ProgressBar, RichProgressBar

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "ModelCheckpoint",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichProgressBar",
]
