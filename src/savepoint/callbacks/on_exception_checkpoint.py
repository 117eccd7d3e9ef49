"""`OnExceptionCheckpoint`: save a checkpoint when ``fit`` raises, as Lightning's callback of that name.

The file is ``<dirpath>/<filename>.ckpt`` (overwritten by each failure); a run that ends normally removes
it at teardown, so its presence means "the last run failed here". The state saved is the last consistent
one: when the exception interrupted a batch before its optimizer step, the state from before that batch;
when it came from inside an optimizer step (parameters may be partly updated) or under several processes
(a save needs every rank, and the others may be stuck in a collective), nothing is written and a warning
says so. The exception always propagates.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from savepoint.callbacks.checkpoint import Checkpoint

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` when training raises (a signal's stop included)."""

    FILE_EXTENSION = ".ckpt"
    saves_on_exception = True

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError(
                "OnExceptionCheckpoint(filename='') cannot be empty: pass a name without the extension, "
                "e.g. filename='on_exception'."
            )
        # Not deferred to setup: an exception can come before it.
        self.dirpath = os.fspath(dirpath)
        self.filename = filename
        self._failed = False

    @property
    def ckpt_path(self) -> str:
        if "://" in self.dirpath:
            return self.dirpath.rstrip("/") + "/" + self.filename + self.FILE_EXTENSION
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        self._failed = True
        if trainer.can_save_on_exception:
            trainer.save_checkpoint(self.ckpt_path)  # overwrite: the newest failure is the one to resume

    def teardown(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        if not self._failed:
            trainer.strategy.remove_checkpoint(self.ckpt_path)
        self._failed = False
