"""`CheckpointIO`: how one checkpoint lands at one path, and comes back.

Call order (the Trainer never calls these directly; it goes through its `Strategy`):

1. ``Strategy.setup``: the plugin is attached; nothing is called on it.
2. ``load_checkpoint(path, map_location)``: when ``fit``/``validate`` gets a ``ckpt_path`` and when
   ``load_from_checkpoint`` runs. Called on every rank (each rank reads what it needs).
3. ``save_checkpoint(checkpoint, path, storage_options)``: for every save (`ModelCheckpoint`,
   ``Trainer.save_checkpoint``). Single-file strategies call it on global rank 0 only; the other ranks
   wait at a barrier until it returns. Sharded strategies call `save_sharded` on every rank instead.
4. ``remove_checkpoint(path)``: when a file leaves the top-k, always after the save that replaces it has
   returned. Rank 0 only.
5. ``link_checkpoint(src, dst)``: when `dst` (``last.ckpt``, or another callback's file of the same save
   point) holds exactly the state already committed at `src`; always after the save of `src` returned
   (with `AsyncCheckpointIO`, queued after it). Rank 0 only. Only called when ``supports_link`` is true;
   otherwise the state is saved a second time.
6. ``teardown()``: once at the end of ``fit``/``validate``, on every rank, also after an error. Pending work
   (an async write) must be finished, and its errors raised, before it returns.

What each must guarantee:

- ``save_checkpoint`` is atomic: when it returns, `path` holds the whole new checkpoint; if it raises or
  the process dies, `path` holds whatever it held before (the previous checkpoint, or nothing). It must
  not keep a reference to `checkpoint` after returning unless it copied it (the Trainer goes on mutating
  the live tensors).
- ``load_checkpoint`` never executes code from the file and raises `CheckpointError` subclasses naming
  the path.
- ``remove_checkpoint`` of a missing path is not an error.
- ``link_checkpoint`` is atomic like a save, and removing either name later never affects the other
  (a hard link or a copy, never a symbolic link).

A plugin knows nothing of steps, metrics or retention: those belong to callbacks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class CheckpointIO(ABC):
    """Abstract base: subclass it and pass an instance as ``Trainer(plugins=[io])`` or ``Strategy(checkpoint_io=io)``."""

    @abstractmethod
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str, storage_options: Any | None = None
    ) -> None:
        """Write `checkpoint` to `path` atomically."""

    @abstractmethod
    def load_checkpoint(self, path: str, map_location: Any | None = None, **kwargs: Any) -> dict[str, Any]:
        """Read the checkpoint at `path`; tensors land on `map_location`."""

    @abstractmethod
    def remove_checkpoint(self, path: str) -> None:
        """Delete the checkpoint at `path`; a missing path is not an error."""

    def teardown(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Finish pending work and release resources. Raises a pending error."""

    # Second names for a committed checkpoint (one write per save point). A plugin that can make them
    # cheaply (hard links, server-side copies) sets this and overrides `link_checkpoint`.
    supports_link: bool = False

    def link_checkpoint(self, src: str, dst: str) -> None:
        """Make `dst` hold the checkpoint committed at `src`, atomically. By default a copy through this
        plugin's own load and save (correct for any plugin, but not cheaper than saving twice)."""
        self.save_checkpoint(self.load_checkpoint(src, map_location="cpu"), dst)

    # Sharded checkpoints (torch.distributed.checkpoint layout). A plugin that cannot write them says so;
    # sharded strategies check this at setup, never mid-run.
    supports_sharded: bool = False

    def save_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot write sharded checkpoints")

    def load_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot read sharded checkpoints")
