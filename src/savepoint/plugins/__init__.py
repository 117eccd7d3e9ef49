"""Plugins given as ``Trainer(plugins=[...])``."""

from savepoint.plugins.environments import SLURMEnvironment, StopSignals
from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "SLURMEnvironment", "StopSignals", "TorchCheckpointIO"]
