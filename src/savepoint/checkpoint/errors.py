"""Typed errors for everything that can go wrong with a checkpoint.

Every error names the path (or value) involved, what was expected, and how to fix it.
"""

from __future__ import annotations


def interrupt_in(err: BaseException) -> BaseException | None:
    """The KeyboardInterrupt/SystemExit behind `err`, if any. torch's C++ writer turns an interrupt raised in
    a file write into a RuntimeError whose context is the interrupt; a save must surface the interrupt."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if not isinstance(current, Exception):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class CheckpointError(Exception):
    """Base class of every checkpoint problem savepoint reports."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path names no checkpoint file or directory."""


class CorruptCheckpointError(CheckpointError):
    """The file exists but is torn, truncated, or fails its integrity checks."""


class NotACheckpointError(CheckpointError):
    """The file loads, but is not a checkpoint (wrong type, or required keys missing)."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled code or objects that a weights-only load refuses. Never executed."""


class WeightsOnlyCheckpointError(CheckpointError):
    """A weights-only checkpoint was given where a full training state is needed (``fit(ckpt_path=)``)."""


class StateMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the module (shapes, missing or unexpected keys)."""


class CheckpointWriteError(CheckpointError, OSError):
    """A save failed; the previous checkpoint at that path is intact."""


class FormatVersionError(CheckpointError):
    """The checkpoint's format version is one this savepoint cannot read: newer, or not a valid version."""


class OversizedCheckpointError(CheckpointError):
    """A record would inflate past a configured limit (a decompression bomb); refused before inflating."""
