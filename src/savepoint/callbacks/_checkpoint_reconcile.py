"""ModelCheckpoint on resume: remove the files a crash left between writing a top-k file and removing the
one it evicted. A mixin of `ModelCheckpoint`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.plugins.io.checkpoint_io import CheckpointIO

if TYPE_CHECKING:
    from savepoint.callbacks.model_checkpoint import ModelCheckpoint
    from savepoint.trainer.trainer import Trainer


class CheckpointReconcile:
    """Mixed into `ModelCheckpoint`."""

    def _reconcile(self: ModelCheckpoint, trainer: Trainer) -> None:
        """Remove the files a crash left between committing a top-k file and removing the one it evicted:
        only files whose own saved state shows this callback (same configuration, same folder) wrote and
        ranked them, and that rank below the restored top-k. Anything else in the folder is left alone."""
        doomed: list[str] = []
        if trainer.is_global_zero:
            mode = self.mode if self.monitor is not None else "max"
            doomed = policy.strays_to_remove(self._strays(trainer), self._candidates(), self.save_top_k, mode)
        for path in trainer.strategy.broadcast(doomed):
            if self.verbose:
                trainer._print(f"Removing {path!r}: evicted from the top-k before the run was interrupted")
            self._remove(trainer, path)

    def _strays(self: ModelCheckpoint, trainer: Trainer) -> list[policy.Candidate]:
        known = {*self._ranked, self.last_model_path, trainer.ckpt_path or ""}
        io = trainer.strategy.checkpoint_io
        strays = []
        for path in _list_checkpoints(io, self.dirpath or ""):
            if path in known or (trainer.ckpt_path and same_file(path, trainer.ckpt_path)):
                continue
            try:
                state = (io.load_checkpoint(path, map_location="cpu").get("callbacks") or {}).get(
                    self.state_key
                )
            except Exception:  # unreadable: cannot rank it, so it stays
                continue
            if not isinstance(state, dict) or state.get("dirpath") != self.dirpath:
                continue
            ranked = state.get("best_k_models") or state.get("kept_models") or {}
            if path in ranked:
                strays.append(policy.Candidate(path, float(ranked[path]), -1))
        return strays


def _list_checkpoints(io: CheckpointIO, dirpath: str) -> list[str]:
    """The checkpoints directly under `dirpath`, as the CheckpointIO lists them (no hidden temporary names)."""
    return [entry.path for entry in io.list_checkpoints(dirpath)]


def same_file(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    return os.path.abspath(a) == os.path.abspath(b)
