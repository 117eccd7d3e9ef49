"""`CheckpointIO`: the one door to checkpoint storage. How one checkpoint lands at one path, comes back,
and the few questions about paths the layers above need answered.

Nothing else in savepoint opens, lists, stats or creates a checkpoint path: ModelCheckpoint, the
``ckpt_path="last"``/``"best"`` search, ``load_from_checkpoint`` and the sharded (FSDP) saves all come
here, so a custom plugin sees every operation and works the same on local disks and object stores.

Call order (the Trainer goes through its `Strategy`; ``load_from_checkpoint(checkpoint_io=...)`` calls
the plugin directly):

1. ``Strategy.setup``: the plugin is attached; nothing is called on it.
2. ``check_writable(dirpath)``: at ``fit`` set-up, global rank 0, once per `ModelCheckpoint` folder,
   before the first training step (an unusable folder fails here, not after an epoch).
3. ``list_folders(dirpath)`` / ``list_checkpoints(dirpath)`` / ``load_checkpoint(path)``: resolving
   ``ckpt_path="last"`` or ``"best"``, global rank 0 only (the answer is broadcast).
4. ``load_checkpoint(path, map_location)``: when ``fit``/``validate`` gets a ``ckpt_path`` and when
   ``load_from_checkpoint`` runs. Called on every rank (each rank reads what it needs).
5. ``exists(path)``: ModelCheckpoint choosing a free file name (``-v1`` suffixes), global rank 0.
6. ``save_checkpoint(checkpoint, path, storage_options)``: for every save (`ModelCheckpoint`,
   ``Trainer.save_checkpoint``). Single-file strategies call it on global rank 0 only; the other ranks
   wait at a barrier until it returns.
7. ``remove_checkpoint(path)``: when a file leaves the top-k, always after the save that replaces it has
   returned. Global rank 0 only.
8. ``link_checkpoint(src, dst)``: when `dst` holds exactly the state already committed at `src`: another
   file of the same save point (``last.ckpt``, or the file of another ModelCheckpoint saving at the same
   moment, possibly in another folder of the same storage, which may not exist yet); always after the
   save of `src` returned (with `AsyncCheckpointIO`, queued after it). Global rank 0 only. Only called
   when ``supports_link`` is true and both paths are on the same storage; otherwise the same checkpoint
   dict is saved again at `dst`.
9. ``save_text(text, path)`` / ``load_text(path)``: small text files beside checkpoints
   (``best_k_models.yaml``, an ``hparams.yaml`` given to ``load_from_checkpoint(hparams_file=)``).
10. ``teardown()``: once at the end of ``fit``/``validate``, on every rank, also after an error. Pending
    work (an async write) must be finished, and its errors raised, before it returns.

Sharded checkpoints (``supports_sharded``; FSDP with ``state_dict_type="sharded"``), a folder per
checkpoint: ``save_sharded_meta(meta, path)`` on global rank 0 first (prepares the folder, withdraws an
old commit marker, writes everything but the sharded tensors), then ``save_sharded(state, path)`` on
every rank together (the commit marker is written last). Loading: ``is_sharded_checkpoint(path)`` and
``load_sharded_meta(path)`` on every rank, then ``load_sharded(state, path)`` on every rank together.

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
- ``list_checkpoints`` returns only checkpoints: no temporary file, no uncommitted sharded folder.

What a custom plugin must implement: ``save_checkpoint``, ``load_checkpoint`` and ``remove_checkpoint``.
The path questions (``exists``, ``list_checkpoints``, ``list_folders``, ``makedirs``,
``check_writable``, ``save_text``, ``load_text``, ``is_sharded_checkpoint``) have defaults that look at
the path itself with fsspec (local paths and any URL fsspec knows): right for every plugin that stores a
checkpoint at the path it is given. A plugin that stores elsewhere (a database, a key-value service)
overrides them. The sharded methods raise `NotImplementedError` unless ``supports_sharded`` is True,
which a sharded strategy checks at set-up, never mid-run.

A plugin knows nothing of steps, metrics or retention: those belong to callbacks.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from savepoint.plugins.io import _fs
from savepoint.plugins.io.sharded import is_abandoned_candidate


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint found by `CheckpointIO.list_checkpoints`.

    ``mtime`` (seconds since the epoch) orders checkpoints by when they were committed: a file's
    modification time, a sharded folder's commit marker's. Object stores may round it to the second.
    """

    path: str
    mtime: float
    size: int
    is_dir: bool


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)


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

    # -- path questions (defaults: the path itself, through fsspec) --------------------------------------------

    def exists(self, path: str) -> bool:
        """Is the name `path` taken? Anything there counts (a dangling symlink too), except a sharded folder
        that never got its commit marker: an abandoned save, whose name the next save reuses."""
        return _fs.exists(path) and not is_abandoned_candidate(path)

    def list_checkpoints(self, dirpath: str) -> list[CheckpointEntry]:
        """The checkpoints directly under folder `dirpath` (none when it does not exist), in no order.

        ``*.ckpt`` files and committed sharded folders; hidden names (temporary files) are never listed.
        A dangling symlink or a symlink loop is skipped with a warning naming it.
        """
        found = _fs.list_remote(dirpath) if "://" in dirpath else _fs.list_local(dirpath, _warn)
        return [CheckpointEntry(path, mtime, size, is_dir) for path, mtime, size, is_dir in found]

    def list_folders(self, dirpath: str) -> list[str]:
        """Paths of the folders directly under `dirpath` (run folders such as ``runs/version_3``)."""
        return _fs.list_folders(dirpath)

    def makedirs(self, path: str) -> None:
        """Create folder `path` and its parents; an existing folder is not an error."""
        _fs.makedirs(path)

    def check_writable(self, dirpath: str) -> None:
        """Raise `PermissionError`/`NotADirectoryError` naming `dirpath` if checkpoints cannot be written there."""
        _fs.check_writable_dir(dirpath)

    def save_text(self, text: str, path: str) -> None:
        """Write a small text file (UTF-8) atomically."""
        _fs.save_text(text, path)

    def load_text(self, path: str) -> str:
        return _fs.load_text(path)

    def is_sharded_checkpoint(self, path: str) -> bool:
        """Is `path` a committed sharded checkpoint folder?"""
        return _fs.exists(_fs.join(path, _fs.COMMIT_NAME))

    # Second names for a committed checkpoint (one write per save point). A plugin that can make them
    # cheaply (hard links, server-side copies) sets this and overrides `link_checkpoint`.
    supports_link: bool = False

    def link_checkpoint(self, src: str, dst: str) -> None:
        """Make `dst` hold the checkpoint committed at `src`, atomically. By default a copy through this
        plugin's own load and save (correct for any plugin, but not cheaper than saving twice)."""
        self.save_checkpoint(self.load_checkpoint(src, map_location="cpu"), dst)

    # -- sharded checkpoints (torch.distributed.checkpoint layout) ----------------------------------------------

    supports_sharded: bool = False

    def save_sharded_meta(self, meta: dict[str, Any], path: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot write sharded checkpoints")

    def save_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot write sharded checkpoints")

    def load_sharded_meta(self, path: str) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} cannot read sharded checkpoints")

    def load_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot read sharded checkpoints")
