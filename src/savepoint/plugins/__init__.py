"""Plugins given as ``Trainer(plugins=[...])``."""

from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]
