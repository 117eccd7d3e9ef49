"""`Checkpoint`: the base class the Trainer recognises as a checkpointing callback."""

from __future__ import annotations

from savepoint.callbacks.callback import Callback


class Checkpoint(Callback):
    """Subclass it to write your own checkpointing callback.

    Every instance appears in ``trainer.checkpoint_callbacks`` (``trainer.checkpoint_callback`` is the
    first); when any is given, the Trainer adds no default `ModelCheckpoint`; they run after all other
    callbacks for each event. Save through ``trainer.save_checkpoint(path)`` and remove through
    ``trainer.strategy.remove_checkpoint(path)`` so the configured `CheckpointIO` sees every file.
    """
