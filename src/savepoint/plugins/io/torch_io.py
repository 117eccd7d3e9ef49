"""`TorchCheckpointIO`: ``torch.save`` / ``torch.load(weights_only=True)`` with atomic, streamed writes."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from savepoint.checkpoint.errors import (
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
)
from savepoint.checkpoint.export import is_export_dir, read_export
from savepoint.checkpoint.lightning_format import foreign_containers_allowed
from savepoint.plugins.io._fs import fsync_path, get_fs, is_local, sweep_stale_temps, temp_name_for
from savepoint.plugins.io._zipcrc import crc_disabled, fill_crc32
from savepoint.plugins.io.checkpoint_io import CheckpointIO


def _keep_aside(final: Path) -> Path | None:
    """Hard-link the file about to be replaced to a hidden temporary name.

    Replacing a large file frees its blocks inside the rename (0.3 s for 1 GB here); with a second link
    the rename only drops a name and the blocks are freed later, off the caller's path. A crash before the
    unlink leaves a temporary name that the next save into the folder sweeps.
    """
    if not final.exists() or final.is_symlink():
        return None
    aside = temp_name_for(final)
    try:
        os.link(final, aside)
    except OSError:  # no hard links on this file system: replace directly
        return None
    return aside


def _root_os_error(err: BaseException) -> OSError | None:
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return None


def _is_cpu_location(map_location: Any) -> bool:
    if map_location is None:
        return True
    if isinstance(map_location, str | torch.device):
        return torch.device(map_location).type == "cpu"
    return False


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def load_file(path: str, map_location: Any = None, storage_options: dict[str, Any] | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a local path or fsspec URL, with errors that name the path."""
    fs, inner = get_fs(path, storage_options)
    if not fs.exists(inner):
        raise CheckpointNotFoundError(
            f"no checkpoint at {path!r}: the file does not exist. Check the path, or pass ckpt_path='last' to "
            f"resume from the newest checkpoint of this run's folder.",
            path,
        )
    if fs.isdir(inner):
        if is_export_dir(path):  # `savepoint export --safetensors`: a weights-only checkpoint
            return read_export(path)
        raise CorruptCheckpointError(
            f"{path!r} is a folder but not a sharded checkpoint (no '.metadata' file): an interrupted sharded "
            f"save leaves such a folder. Choose another checkpoint.",
            path,
        )
    try:
        if is_local(fs):
            # Memory-mapped: tensors read from the page cache on first use, no second copy in memory.
            mmap = _is_cpu_location(map_location) and zipfile.is_zipfile(inner)
            with foreign_containers_allowed():  # Lightning files: Namespace hyperparameters, nothing else
                return torch.load(inner, map_location=map_location, weights_only=True, mmap=mmap)
        with fs.open(inner, "rb") as f:
            data = f.read()
        with foreign_containers_allowed():
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = _ANSI_ESCAPE.sub("", str(err))  # torch's text carries terminal bold codes
        if "weights_only" in message.lower() or "weights only" in message.lower():
            # The line naming the refused global says what is wrong; the rest is torch's advice to unpickle.
            reason = next((ln for ln in message.splitlines() if "Unsupported" in ln), message.splitlines()[0])
            raise UnsafeCheckpointError(
                f"{path!r} holds pickled objects that are not plain data (refused, never executed): "
                f"{reason.split(' Please use')[0].strip()} savepoint loads only tensors, numbers, strings "
                f"and containers; re-save the checkpoint with savepoint, or, if you trust its origin, convert it "
                f"with `savepoint convert --trust-pickle`.",
                path,
            ) from err
        raise CorruptCheckpointError(f"{path!r} is not a readable checkpoint: {err}", path) from err
    except Exception as err:  # torch raises many types for a file that is not an archive it wrote
        if isinstance(err, FileNotFoundError):
            raise CheckpointNotFoundError(f"no checkpoint at {path!r}: {err}", path) from err
        raise CorruptCheckpointError(
            f"{path!r} is torn or not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}). "
            f"A save interrupted by a crash cannot leave such a file under a checkpoint name with savepoint; "
            f"run `savepoint verify {path}` for details, and resume from an earlier checkpoint.",
            path,
        ) from err


class TorchCheckpointIO(CheckpointIO):
    """Saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``.

    Local paths: the archive is streamed into a hidden temporary file in the destination folder, fsynced,
    renamed over the final name with ``os.replace`` and the folder fsynced: a crash at any moment leaves
    the old file or the new one. The temporary name (``.<name>.sp-tmp-<pid>-<hex>``) never matches
    ``*.ckpt``; it is removed when a save fails, and a later save into the folder removes those a killed
    process left. Other fsspec URLs (``s3://``, ``gs://``, ``memory://``): one put of the whole archive,
    atomic on object stores.
    """

    supports_sharded = True

    def __init__(self) -> None:
        self._active: set[Path] = set()
        self._unlinking: list[threading.Thread] = []
        self._lock = threading.Lock()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str, storage_options: Any | None = None
    ) -> None:
        fs, inner = get_fs(path, storage_options)
        if is_local(fs):
            self._save_local(checkpoint, Path(inner), path)
        else:
            self._save_remote(checkpoint, fs, inner, path)

    def _save_local(self, checkpoint: dict[str, Any], final: Path, shown: str) -> None:
        folder = final.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointWriteError(
                f"cannot create checkpoint folder {str(folder)!r}: {err}", shown
            ) from err
        tmp = temp_name_for(final)
        with self._lock:
            self._active.add(tmp)
            sweep_stale_temps(folder, self._active)
        try:
            # A file object, not a path: torch streams each record through it (no copy of the checkpoint in
            # memory) and an OSError such as ENOSPC/EFBIG surfaces with its errno.
            # Off the main thread (an async writer), torch's in-line CRC pass would hold the GIL and stall
            # training: write without it and fill the CRCs with zlib, which releases the GIL. On the
            # caller's thread training waits for the save anyway, and the in-line pass is cheaper.
            background = threading.current_thread() is not threading.main_thread()
            with open(tmp, "xb") as f:
                with crc_disabled() if background else contextlib.nullcontext():
                    torch.save(checkpoint, f)
                f.flush()
            if background:
                fill_crc32(tmp)
            fsync_path(tmp)
            previous = _keep_aside(final)
            os.replace(tmp, final)
            fsync_path(folder)
            if previous is not None:
                self._unlink_in_background(previous)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(err, Exception):
                cause = _root_os_error(err)
                hint = ""
                if cause is not None and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    hint = " The disk is full (or a file size limit was hit): free space or choose another folder."
                raise CheckpointWriteError(
                    f"saving checkpoint {shown!r} failed ({type(cause or err).__name__}: {cause or err}); the file "
                    f"previously at that path, if any, is intact.{hint}",
                    shown,
                ) from err
            raise
        finally:
            with self._lock:
                self._active.discard(tmp)

    def _unlink_in_background(self, path: Path) -> None:
        def unlink() -> None:
            with contextlib.suppress(OSError):
                os.unlink(path)

        thread = threading.Thread(target=unlink, name="savepoint-unlink", daemon=True)
        thread.start()
        with self._lock:
            self._unlinking = [t for t in self._unlinking if t.is_alive()] + [thread]

    def teardown(self) -> None:
        """Wait for the old copies of replaced files to be freed (nothing is left beside the checkpoints)."""
        with self._lock:
            pending, self._unlinking = self._unlinking, []
        for thread in pending:
            thread.join()

    def _save_remote(self, checkpoint: dict[str, Any], fs: Any, inner: str, shown: str) -> None:
        buffer = io.BytesIO()
        try:
            torch.save(checkpoint, buffer)
            parent = inner.rsplit("/", 1)[0] if "/" in inner else ""
            if parent:
                with contextlib.suppress(Exception):
                    fs.makedirs(parent, exist_ok=True)
            fs.pipe_file(inner, buffer.getvalue())
        except Exception as err:
            raise CheckpointWriteError(
                f"saving checkpoint {shown!r} failed ({type(err).__name__}: {err}); the object previously at "
                f"that path, if any, is intact.",
                shown,
            ) from err

    def load_checkpoint(
        self, path: str, map_location: Any | None = None, storage_options: Any | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return load_file(str(path), map_location, storage_options)

    def remove_checkpoint(self, path: str) -> None:
        fs, inner = get_fs(path)
        if fs.exists(inner) or (is_local(fs) and os.path.islink(inner)):
            if is_local(fs) and os.path.islink(inner):
                os.unlink(inner)
            else:
                fs.rm(inner, recursive=True)

    def save_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        """Every rank writes its shards (``torch.distributed.checkpoint``); ``.metadata`` is written last."""
        from savepoint.checkpoint.sharded import save_dcp

        save_dcp(state, path, process_group)

    def load_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        """Fill `state` in place from a sharded folder, resharding to this world size; never runs code."""
        from savepoint.checkpoint.sharded import load_dcp

        load_dcp(state, path, process_group)
