"""Checkpoint format, errors and resume state."""

from savepoint.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    FormatVersionError,
    NotACheckpointError,
    OversizedCheckpointError,
    StateMismatchError,
    UnsafeCheckpointError,
    WeightsOnlyCheckpointError,
)
from savepoint.checkpoint.format import FORMAT_VERSION, upgrade_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "FormatVersionError",
    "NotACheckpointError",
    "OversizedCheckpointError",
    "StateMismatchError",
    "UnsafeCheckpointError",
    "WeightsOnlyCheckpointError",
    "upgrade_checkpoint",
]
