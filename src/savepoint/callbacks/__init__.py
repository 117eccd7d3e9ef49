"""Callbacks: checkpointing (also on exceptions), early stopping, progress bars, model summary,
learning-rate monitoring, fine-tuning, gradient-accumulation scheduling, stochastic weight averaging,
`Timer`, `BasePredictionWriter` and `LambdaCallback`."""

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.callbacks.early_stopping import EarlyStopping
from savepoint.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from savepoint.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from savepoint.callbacks.lambda_function import LambdaCallback
from savepoint.callbacks.lr_monitor import LearningRateMonitor
from savepoint.callbacks.model_checkpoint import ModelCheckpoint
from savepoint.callbacks.model_summary import ModelSummary
from savepoint.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from savepoint.callbacks.prediction_writer import BasePredictionWriter
from savepoint.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
from savepoint.callbacks.rich_model_summary import RichModelSummary
from savepoint.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from savepoint.callbacks.timer import Timer

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "Timer",
]
