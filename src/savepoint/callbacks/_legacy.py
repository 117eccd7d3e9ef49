"""ModelCheckpoint's arguments of document 004 (``filepath=``, ``prefix=``, ``period=``, ``save_top_k=True``),
translated to the current ones with a DeprecationWarning naming each replacement."""

from __future__ import annotations

import os
import warnings
from typing import Any


def accept_deprecated(
    deprecated: dict[str, Any],
    dirpath: Any,
    filename: str | None,
    every_n_epochs: int | None,
    save_top_k: Any,
) -> tuple[Any, str | None, str, int | None, int]:
    """Document 004's arguments: ``filepath=``, ``prefix=``, ``period=``, and ``save_top_k=True``."""
    prefix = ""
    unknown = set(deprecated) - {"filepath", "prefix", "period"}
    if unknown:
        raise TypeError(
            f"ModelCheckpoint() got unexpected argument(s) {sorted(unknown)}; see help(ModelCheckpoint) "
            f"for the arguments it takes."
        )
    if "filepath" in deprecated:
        warnings.warn(
            "ModelCheckpoint(filepath=...) is deprecated; use ModelCheckpoint(dirpath=..., filename=...).",
            DeprecationWarning,
            stacklevel=3,
        )
        filepath = deprecated["filepath"]
        if filepath is not None:
            filepath = os.fspath(filepath)
            if os.path.isdir(filepath) or filepath.endswith(os.sep):
                dirpath = dirpath or filepath
            else:
                dirpath = dirpath or os.path.dirname(filepath) or "."
                filename = filename or os.path.splitext(os.path.basename(filepath))[0]
    if "prefix" in deprecated:
        warnings.warn(
            "ModelCheckpoint(prefix=...) is deprecated; put the prefix in ModelCheckpoint(filename=...).",
            DeprecationWarning,
            stacklevel=3,
        )
        prefix = deprecated["prefix"] or ""
    if "period" in deprecated:
        warnings.warn(
            "ModelCheckpoint(period=...) is deprecated; use ModelCheckpoint(every_n_epochs=...).",
            DeprecationWarning,
            stacklevel=3,
        )
        every_n_epochs = deprecated["period"] if every_n_epochs is None else every_n_epochs
    if isinstance(save_top_k, bool):
        warnings.warn(
            f"ModelCheckpoint(save_top_k={save_top_k}) is deprecated; pass an int ({int(save_top_k)}).",
            DeprecationWarning,
            stacklevel=3,
        )
        save_top_k = int(save_top_k)
    return dirpath, filename, prefix, every_n_epochs, save_top_k
