"""How checkpoints land in storage. ``XLACheckpointIO`` is not provided: see docs/design.md."""

from savepoint.plugins.io.async_io import AsyncCheckpointIO
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]
