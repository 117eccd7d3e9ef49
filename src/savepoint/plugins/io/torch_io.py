"""`TorchCheckpointIO`: ``torch.save`` / ``torch.load(weights_only=True)`` with atomic, streamed writes."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import shutil
import stat
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from savepoint.checkpoint import integrity
from savepoint.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    interrupt_in,
)
from savepoint.checkpoint.lightning_format import foreign_containers_allowed
from savepoint.checkpoint.sharded import COMMIT_FILE, META_FILE
from savepoint.plugins.io import _spare as spare
from savepoint.plugins.io._fs import exchange, fsync_path, get_fs, is_local, sweep_stale_temps, temp_name_for
from savepoint.plugins.io._saveopts import torch_save_options
from savepoint.plugins.io._writeback import PacedWriter, open_direct, storage_alignment_for
from savepoint.plugins.io._zipcrc import fill_crc32
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.export import is_export_dir, read_export
from savepoint.plugins.io.sharded import load_dcp, load_full, prepare_folder, remove_abandoned, save_dcp
from savepoint.plugins.io.verify_sharded import verify_sharded


def _keep_aside(final: Path) -> Path | None:
    """Hard-link the file about to be replaced to a temporary name in the spare folder (where renames
    cannot exchange names): freeing a large file's blocks inside the rename took 0.3 s per GB here; with a
    second name the rename only drops a name and the blocks are freed off the caller's path."""
    if not final.exists() or final.is_symlink() or final.stat().st_nlink > 1:
        return None
    try:
        aside = spare.aside_name(final)
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


def load_file(
    path: str,
    map_location: Any = None,
    storage_options: dict[str, Any] | None = None,
    *,
    verify_integrity: bool | None = None,
    max_pickle_bytes: int | None = None,
    unused_keys: tuple[str, ...] = (),
) -> Any:
    """``torch.load(weights_only=True)`` of a local path or fsspec URL, with errors that name the path.

    The archive is checked before its data reaches the caller (`savepoint.checkpoint.integrity`): record
    sizes against the pickle, the pickle's size against `max_pickle_bytes` and, unless `verify_integrity`
    is False (or ``SAVEPOINT_VERIFY_INTEGRITY=0``), every record's CRC32, except those of tensors reached
    only from the top-level keys `unused_keys`, which the caller promises not to use (a local file's
    optimizer state when only the weights are loaded: two thirds of an Adam checkpoint, not read at all).
    """
    verify = integrity.resolve_verify(verify_integrity)
    limit = integrity.resolve_max_pickle_bytes(max_pickle_bytes)
    if map_location is None and not torch.cuda.is_available():
        # A file saved from CUDA tensors (a sync save of a GPU run) records them as on the GPU: torch.load
        # would fail here, and the file is not torn. Load them where this machine can (as Lightning does).
        map_location = "cpu"
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
        raise CorruptCheckpointError(_folder_message(path, fs, inner), path)
    # Lightning files pickle Namespace hyperparameters: the integrity pass and the load may build that class
    # (and Lightning's AttributeDict), nothing else.
    with foreign_containers_allowed():
        try:
            if is_local(fs):
                integrity.refuse_empty(os.path.getsize(inner), path)
                if not zipfile.is_zipfile(inner):  # the legacy (pre-zip) torch.save format: nothing to check
                    return torch.load(inner, map_location=map_location, weights_only=True)
                wait = integrity.check_local_file(
                    inner, path, verify=verify, limit=limit, unused_keys=unused_keys
                )
                try:
                    # Memory-mapped: tensors read from the page cache on first use, no second copy in memory.
                    mmap = _is_cpu_location(map_location)
                    return torch.load(inner, map_location=map_location, weights_only=True, mmap=mmap)
                finally:
                    wait()  # a CRC mismatch explains whatever torch.load made of the same bytes
            with fs.open(inner, "rb") as f:
                data = f.read()
            integrity.refuse_empty(len(data), path)
            if zipfile.is_zipfile(io.BytesIO(data)):
                integrity.check_stream(io.BytesIO(data), len(data), path, verify=verify, limit=limit)
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except CheckpointError:
            raise
        except pickle.UnpicklingError as err:
            raise integrity.unpickling_error(path, err) from err
        except Exception as err:  # torch raises many types for a file that is not an archive it wrote
            if isinstance(err, FileNotFoundError):
                raise CheckpointNotFoundError(f"no checkpoint at {path!r}: {err}", path) from err
            first = (str(err).splitlines() or [""])[0]
            raise CorruptCheckpointError(
                f"{path!r} is torn or not a checkpoint ({type(err).__name__}: {first}). "
                f"A save interrupted by a crash cannot leave such a file under a checkpoint name with savepoint; "
                f"run `savepoint verify {path}` for details, and resume from an earlier checkpoint.",
                path,
            ) from err


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_spare_folder(folder: Path) -> None:
    spares = folder / spare.SPARE_DIR
    with contextlib.suppress(OSError):
        for entry in os.scandir(spares):
            if entry.name.endswith(spare.SPARE_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        sweep_stale_temps(spares)
        spares.rmdir()


def _folder_message(path: str, fs: Any, inner: str) -> str:
    names = sorted(str(n).rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(inner, detail=False))
    if any(n.endswith(".distcp") or n == META_FILE for n in names):
        return (
            f"{path!r} is not a committed sharded checkpoint: it holds shards but no {COMMIT_FILE!r} commit marker, "
            f"which an interrupted sharded save leaves. Choose another checkpoint."
        )
    ckpts = [n for n in names if n.endswith(".ckpt") and not n.startswith(".")]
    if ckpts:
        return (
            f"{path!r} is a folder of {len(ckpts)} checkpoint(s), not a checkpoint: pass one of them "
            f"(e.g. {ckpts[-1]!r})."
        )
    return f"{path!r} is a folder, not a checkpoint file or a sharded checkpoint. Choose a checkpoint file."


class TorchCheckpointIO(CheckpointIO):
    """Saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``.

    Local paths: the archive is streamed into a hidden temporary file in the destination folder
    (``.<name>.sp-tmp-<host>.<pidns>-<pid>-<hex>``, never matching ``*.ckpt``), fsynced, put at the final
    name atomically and the folder fsynced: a crash at any moment leaves the old file or the new one. Saving
    over an existing name rewrites that name's spare (its previous file, kept in ``.savepoint-spare/``) in
    place and swaps it in with ``renameat2(RENAME_EXCHANGE)`` where the system offers it (see
    ``_spare``); ``use_spares=False`` turns that off. A failed save removes its temporary; a later save into
    the folder removes those whose writer is certainly gone; ``teardown()`` removes the spares. Other
    fsspec URLs (``s3://``, ``gs://``, ``memory://``): one put of the whole archive, atomic on object stores.
    """

    supports_sharded = True
    supports_link = True

    def __init__(
        self,
        verify_integrity: bool | None = None,
        max_pickle_bytes: int | None = None,
        use_spares: bool = True,
        writeback_chunk: int = 8 << 20,
        direct_writes: bool = True,
    ) -> None:
        """`verify_integrity`: check every record's CRC32 on load (None: on, unless the environment variable
        ``SAVEPOINT_VERIFY_INTEGRITY=0``); False skips only the CRCs, never the structural checks.
        `max_pickle_bytes`: the most a checkpoint's pickle record may inflate to (None: 64 MiB, or
        ``SAVEPOINT_MAX_PICKLE_BYTES``). `use_spares`: save over an existing name by rewriting its spare in
        place and swapping it in (see the class docstring). `writeback_chunk`: a save off the main thread
        (an async writer) hands its file to the disk every that many bytes and waits for the piece before,
        instead of all at the fsync, which disturbs the training beside it less (Linux; see ``_writeback``);
        0 writes plainly. `direct_writes`: such a save also aligns the checkpoint's records to 4096 bytes
        (when that pads it by under 2%) and writes each large one from a page-aligned buffer (the async
        snapshot's) with ``O_DIRECT``, bypassing the page cache, where the file system allows (Linux; see
        ``_writeback``). The fsync before the rename is the same either way."""
        if isinstance(writeback_chunk, bool) or not isinstance(writeback_chunk, int) or writeback_chunk < 0:
            raise ValueError(
                f"writeback_chunk must be a number of bytes >= 0 (0: off), got {writeback_chunk!r}"
            )
        self.use_spares = use_spares
        self.writeback_chunk = writeback_chunk
        self.direct_writes = bool(direct_writes)
        self._spare_folders: set[Path] = set()
        self._created = time.time()  # uncommitted sharded folders older than this are certainly abandoned
        if verify_integrity is not None:
            integrity.resolve_verify(verify_integrity)  # a wrong type fails here, not at the first load
        if max_pickle_bytes is not None:
            integrity.resolve_max_pickle_bytes(max_pickle_bytes)
        self.verify_integrity = verify_integrity
        self.max_pickle_bytes = max_pickle_bytes
        self._active: set[Path] = set()
        self._unlinking: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # The lock and the unlink threads belong to this process: a copy (pickle, deepcopy, torch.save of a
        # Trainer) carries the configuration only and starts with its own.
        state = dict(self.__dict__)
        for key in ("_active", "_unlinking", "_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        TorchCheckpointIO.__init__(self)
        self.__dict__.update(state)

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
            spare.sweep_spares(folder)
        # Saving over a regular file: rewrite its spare in place (3-4x faster than a new file here).
        in_place = spare.open_spare(final) if self.use_spares and _regular(final) else None
        target = spare.spare_path(final) if in_place is not None else tmp
        try:
            # A file object, not a path: torch streams each record through it (no copy of the checkpoint in
            # memory) and an OSError such as ENOSPC/EFBIG surfaces with its errno.
            # torch's in-line CRC pass holds the GIL (a background save would stall training) and is slower
            # than isal's: write with it off and take each record's CRC as its bytes go out (`PacedWriter`,
            # isal or zlib, which release the GIL), then fill them in. Off the main thread (an async
            # writer), hand the file to the disk piece by piece as well (`writeback_chunk`), large records
            # with O_DIRECT (`direct_writes`); on the caller's thread training waits for the save anyway,
            # its tensors are not page-aligned, and one writeback at the fsync is quicker.
            background = threading.current_thread() is not threading.main_thread()
            with in_place if in_place is not None else open(tmp, "xb") as f:
                direct = open_direct(target, f.fileno()) if background and self.direct_writes else None
                try:
                    alignment = storage_alignment_for(checkpoint) if direct is not None else None
                    with torch_save_options(crc32=False, storage_alignment=alignment):
                        writer = PacedWriter(f, self.writeback_chunk if background else 0, direct)
                        torch.save(checkpoint, writer)
                finally:
                    if direct is not None:
                        os.close(direct)
                f.truncate()  # a rewritten spare may have been longer
                f.flush()
                fill_crc32(target, writer.crcs)
                os.fsync(f.fileno())
                self._commit(target, final, in_place is not None)  # under the spare's lock
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            interrupt = interrupt_in(err)
            if interrupt is not None and interrupt is not err:
                raise interrupt from None  # Ctrl-C in a write: the interrupt, not a write error
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

    def _commit(self, written: Path, final: Path, is_spare: bool) -> None:
        """Put the fsynced file `written` at `final` atomically; the previous file becomes the spare (or
        is freed off the caller's path). Nothing is left under a hidden name in the folder."""
        if self.use_spares and os.path.lexists(final) and exchange(written, final):
            fsync_path(final.parent)
            self._spare_folders.add(final.parent)
            if not is_spare:
                self._unlink_later(spare.retire(written, final))
            return
        previous = _keep_aside(final)
        os.replace(written, final)
        fsync_path(final.parent)
        if previous is not None:
            self._spare_folders.add(final.parent)
        self._unlink_later(previous)

    def _unlink_later(self, path: Path | None) -> None:
        if path is None:
            return

        def unlink() -> None:
            with contextlib.suppress(OSError):
                os.unlink(path)

        thread = threading.Thread(target=unlink, name="savepoint-unlink", daemon=True)
        thread.start()
        with self._lock:
            self._unlinking = [t for t in self._unlinking if t.is_alive()] + [thread]

    def teardown(self) -> None:
        """Free what replaced files left (old bytes on their way out, spares): nothing stays beside the
        checkpoints once training is over."""
        with self._lock:
            pending, self._unlinking = self._unlinking, []
            folders, self._spare_folders = self._spare_folders, set()
        for thread in pending:
            thread.join()
        for folder in folders:
            _remove_spare_folder(folder)

    def link_checkpoint(self, src: str, dst: str) -> None:
        """Give the committed checkpoint `src` a second name `dst`, atomically: a hard link to a temporary
        name renamed over `dst` (a copy where the file system has no hard links); a server-side copy on
        object stores. Removing either name later never affects the other."""
        fs, inner_src = get_fs(src)
        _, inner_dst = get_fs(dst)
        if inner_src == inner_dst:
            return
        try:
            if is_local(fs):
                self._link_local(Path(inner_src), Path(inner_dst))
            else:
                fs.copy(inner_src, inner_dst)
        except Exception as err:
            raise CheckpointWriteError(
                f"linking checkpoint {dst!r} to {src!r} failed ({type(err).__name__}: {err}); the file "
                f"previously at {dst!r}, if any, is intact.",
                dst,
            ) from err

    def _link_local(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)  # another callback's folder, before its first file
        tmp = temp_name_for(dst)
        with self._lock:
            self._active.add(tmp)
        try:
            try:
                os.link(src, tmp)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                shutil.copyfile(src, tmp)
                fsync_path(tmp)
            self._commit(tmp, dst, False)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            with self._lock:
                self._active.discard(tmp)

    def _save_remote(self, checkpoint: dict[str, Any], fs: Any, inner: str, shown: str) -> None:
        buffer = io.BytesIO()
        try:
            with torch_save_options(crc32=True):  # no CRCs can be filled in afterwards
                torch.save(checkpoint, buffer)
            parent = inner.rsplit("/", 1)[0] if "/" in inner else ""
            if parent:
                with contextlib.suppress(Exception):
                    fs.makedirs(parent, exist_ok=True)
            fs.pipe_file(inner, buffer.getvalue())
        except Exception as err:
            interrupt = interrupt_in(err)
            if interrupt is not None:
                raise interrupt from None
            raise CheckpointWriteError(
                f"saving checkpoint {shown!r} failed ({type(err).__name__}: {err}); the object previously at "
                f"that path, if any, is intact.",
                shown,
            ) from err

    def load_checkpoint(
        self,
        path: str,
        map_location: Any | None = None,
        storage_options: Any | None = None,
        verify_integrity: bool | None = None,
        unused_keys: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A file, or a whole sharded folder assembled in this process (its records' CRCs checked first).

        A file passes the integrity checks first; `verify_integrity` overrides the instance's setting, and
        `unused_keys` names top-level keys the caller will not use (their tensors' CRCs are skipped)."""
        path = str(path)
        if "://" not in path and self.is_sharded_checkpoint(path):
            return load_full(path, self._read_meta(path), verify_sharded(path).problems)
        verify = self.verify_integrity if verify_integrity is None else verify_integrity
        return load_file(
            path,
            map_location,
            storage_options,
            verify_integrity=verify,
            max_pickle_bytes=self.max_pickle_bytes,
            unused_keys=tuple(unused_keys),
        )

    def remove_checkpoint(self, path: str) -> None:
        fs, inner = get_fs(path)
        if is_local(fs):
            spare.remove_spare(Path(inner))
        if fs.exists(inner) or (is_local(fs) and os.path.islink(inner)):
            if is_local(fs) and os.path.islink(inner):
                os.unlink(inner)
            else:
                fs.rm(inner, recursive=True)

    def is_sharded_checkpoint(self, path: str) -> bool:
        return "://" not in str(path) and os.path.isfile(os.path.join(str(path), COMMIT_FILE))

    def save_sharded_meta(self, meta: dict[str, Any], path: str) -> None:
        """Global rank 0, before `save_sharded`: the folder without its old commit marker, and ``meta.ckpt``.
        Uncommitted sharded folders beside it from before this IO existed (crashed saves) are removed."""
        remove_abandoned(os.path.dirname(os.path.abspath(path)), self._created, keep=os.path.abspath(path))
        prepare_folder(path)
        self.save_checkpoint(meta, os.path.join(path, META_FILE))

    def save_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        """Every rank writes its shards (``torch.distributed.checkpoint``); ``.metadata`` is written last."""
        save_dcp(state, path, process_group)

    def load_sharded_meta(self, path: str) -> dict[str, Any]:
        """``meta.ckpt``, after a structural check: a missing or truncated shard is refused here, on every
        rank, before any rank starts reading shards."""
        problems = verify_sharded(path, check_crc=False).problems
        if problems:
            raise CorruptCheckpointError(
                f"{str(path)!r} is a damaged sharded checkpoint: {problems[0]}", str(path)
            )
        return self._read_meta(path)

    def _read_meta(self, path: str) -> dict[str, Any]:
        return load_file(
            os.path.join(str(path), META_FILE),
            map_location="cpu",
            verify_integrity=self.verify_integrity,
            max_pickle_bytes=self.max_pickle_bytes,
        )

    def load_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        """Fill `state` in place from a sharded folder, resharding to this world size; never runs code."""
        load_dcp(state, path, process_group)
