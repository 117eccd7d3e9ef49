"""savepoint: PyTorch training with checkpoints you can trust."""

from savepoint._version import __version__
from savepoint.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint
from savepoint.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    NotACheckpointError,
    OversizedCheckpointError,
    StateMismatchError,
    UnsafeCheckpointError,
    WeightsOnlyCheckpointError,
)
from savepoint.checkpoint.verify import verify
from savepoint.datamodule import DataModule
from savepoint.hparams import register_hparams_class
from savepoint.module import TrainingModule
from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from savepoint.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy, Strategy
from savepoint.trainer.preemption import Preempted, RankFailedError
from savepoint.trainer.trainer import Trainer
from savepoint.utilities.seed import seed_everything

LightningModule = TrainingModule
LightningDataModule = DataModule

__all__ = [
    "AsyncCheckpointIO",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CheckpointIO",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "DDPStrategy",
    "DataModule",
    "EarlyStopping",
    "FSDPStrategy",
    "LightningDataModule",
    "LightningModule",
    "ModelCheckpoint",
    "NotACheckpointError",
    "Preempted",
    "RankFailedError",
    "OversizedCheckpointError",
    "SingleDeviceStrategy",
    "StateMismatchError",
    "Strategy",
    "TorchCheckpointIO",
    "Trainer",
    "TrainingModule",
    "UnsafeCheckpointError",
    "WeightsOnlyCheckpointError",
    "__version__",
    "register_hparams_class",
    "seed_everything",
    "verify",
]
