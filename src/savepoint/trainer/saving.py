"""`Trainer.save_checkpoint` and the save-point writer ModelCheckpoint shares: each kind of checkpoint
(full / weights-only) is assembled once per save point, written at its first path, and every later path of
that kind becomes a second name of the committed file through the strategy (a link or a server-side copy)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from savepoint.trainer import checkpointing


class CheckpointSaving:
    """Mixed into `Trainer` (which provides ``_model``, ``_in_fit``, ``_strategy`` and ``_log_flush``)."""

    def save_checkpoint(
        self, filepath: str | os.PathLike, weights_only: bool = False, storage_options: Any | None = None
    ) -> None:
        """Save the full training state (or only the weights) to `filepath`. Call it on every rank: the
        strategy decides who writes, and every rank returns after the write."""
        if self._model is None:
            raise RuntimeError(
                "Trainer.save_checkpoint: no model is attached; call trainer.fit(model) first."
            )
        self._save_checkpoint_files([(os.fspath(filepath), weights_only)], storage_options=storage_options)

    def _save_checkpoint_files(
        self,
        files: list[tuple[str, bool]],
        written: Callable[[int], None] | None = None,
        storage_options: Any | None = None,
    ) -> None:
        """Save one save point's files, given as ``(path, weights_only)`` in order: the checkpoint of each
        kind is assembled once and saved at its first path; each later path of that kind becomes a second
        name of that file once it committed (a link or copy through the CheckpointIO), or the same dict is
        saved again where the IO cannot link. ``written(i)`` runs after file ``i``. Every rank calls this."""
        if self._in_fit:
            self._log_flush()  # the checkpoint records where each log stands: make that durable first
        first: dict[bool, tuple[str, dict[str, Any]]] = {}
        for index, (path, weights_only) in enumerate(files):
            if weights_only not in first:
                checkpoint = checkpointing.dump_checkpoint(self, weights_only=weights_only)  # type: ignore[arg-type]
                first[weights_only] = (path, dict(checkpoint))  # a plugin may pop keys from what it gets
                self._strategy.save_checkpoint(checkpoint, path, storage_options=storage_options)
            elif self._strategy.supports_link and _same_storage(first[weights_only][0], path):
                self._strategy.link_checkpoint(first[weights_only][0], path)
            else:
                checkpoint = dict(first[weights_only][1])
                self._strategy.save_checkpoint(checkpoint, path, storage_options=storage_options)
            if written is not None:
                written(index)
        if not self._in_fit:
            # Outside fit nothing else will flush an async write: commit it before returning.
            self._strategy.checkpoint_io.teardown()
        self._strategy.barrier("Trainer.save_checkpoint")


def _same_storage(a: str, b: str) -> bool:
    """Can `b` be a second name of `a`? Only on the same file system (a local folder, one bucket's store)."""

    def where(path: str) -> str:
        return path.split("://", 1)[0] if "://" in path else "file"

    return where(a) == where(b)
