"""`AsyncCheckpointIO`: training waits only for a memory copy; a background thread writes.

Order of work: ``save_checkpoint`` (caller's thread) waits for the save in flight, if any, then copies
every tensor into host buffers it keeps between saves (pinned when the source is on CUDA; reused when
shapes and dtypes match) and deep-copies the rest, so the file is a point-in-time snapshot. The write
then runs on one background thread with the base plugin. Saves, links and removals share one FIFO queue,
so a removal never overtakes the save it depends on and a link (``last.ckpt`` as a second name of the file
just saved) is made only after that file committed; after a failed save the queued removals and links are
dropped (an old checkpoint is never removed for a replacement that does not exist, and no name points at a
file that was not written). One snapshot serves every file of a save point: a link is the base plugin's
link where it has one, else the same snapshot written again under the second name, queued without waiting.
When a save is requested while the previous one is still being written, training waits, and a warning says
so once, with the measured write rate.

Errors: the first failure is kept and raised, with its path, at the next ``save_checkpoint`` or at
``teardown()`` (the end of ``fit``), whichever comes first, once.
"""

from __future__ import annotations

import contextlib
import copy
import mmap
import os
import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.plugins.io._writeback import O_DIRECT
from savepoint.plugins.io.checkpoint_io import CheckpointEntry, CheckpointIO
from savepoint.plugins.io.sharded import make_writer
from savepoint.plugins.io.torch_io import TorchCheckpointIO

_STOP = object()


_PAGE_ALIGNED_MIN = 1 << 20  # buffers this large start on a page: the writer can send them with O_DIRECT


def _host_buffer(src: torch.Tensor) -> torch.Tensor:
    """An empty host tensor of `src`'s shape, strides and dtype: pinned when `src` is on CUDA (cudaHostAlloc's
    memory is page-aligned; the writer checks each buffer's address anyway), else, from 1 MB and where the
    system has ``O_DIRECT``, in pages of its own (a private anonymous mapping, which the tensor keeps
    alive), so that the background write can hand it to the disk without a copy through the page cache."""
    if src.is_cuda and torch.cuda.is_available():
        return torch.empty_strided(src.shape, src.stride(), dtype=src.dtype, device="cpu", pin_memory=True)
    span = 1 + sum((n - 1) * st for n, st in zip(src.shape, src.stride(), strict=True)) if src.numel() else 0
    nbytes = span * src.element_size()
    if nbytes >= _PAGE_ALIGNED_MIN and not src.is_quantized and O_DIRECT and hasattr(mmap, "MAP_PRIVATE"):
        with contextlib.suppress(RuntimeError, TypeError, ValueError, OSError):
            # private, as any heap memory (a forked DataLoader worker gets a copy-on-write view of it)
            pages = torch.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype=torch.uint8)
            return pages.view(src.dtype).as_strided(src.shape, src.stride())
    return torch.empty_strided(src.shape, src.stride(), dtype=src.dtype, device="cpu")


class _HostBuffers:
    """Host tensors keyed by their position in the checkpoint, reused while shape and dtype match."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def copy(self, key: tuple[Any, ...], src: torch.Tensor) -> torch.Tensor:
        buf = self._buffers.get(key)
        if (
            buf is None
            or buf.shape != src.shape
            or buf.dtype != src.dtype
            or buf.stride() != src.stride()
            or buf.layout != src.layout
        ):
            if src.layout != torch.strided or (
                not src.is_contiguous() and not src.is_non_overlapping_and_dense()
            ):
                return src.detach().to("cpu", copy=True)
            buf = _host_buffer(src)
            self._buffers[key] = buf
        buf.copy_(src.detach(), non_blocking=src.is_cuda)
        return buf

    def snapshot(self, obj: Any) -> Any:
        memo: dict[int, torch.Tensor] = {}
        cuda_devices: set[torch.device] = set()

        def walk(value: Any, key: tuple[Any, ...]) -> Any:
            if isinstance(value, torch.Tensor):
                if id(value) in memo:
                    return memo[id(value)]
                if value.is_cuda:
                    cuda_devices.add(value.device)
                out = self.copy(key, value)
                memo[id(value)] = out
                return out
            if isinstance(value, dict):
                out_dict = {k: walk(v, (*key, k)) for k, v in value.items()}
                if isinstance(value, OrderedDict):
                    out_dict = OrderedDict(out_dict)
                    if hasattr(value, "_metadata"):  # module versions, used by load_state_dict
                        out_dict._metadata = copy.deepcopy(value._metadata)  # type: ignore[attr-defined]
                return out_dict
            if isinstance(value, list):
                return [walk(v, (*key, i)) for i, v in enumerate(value)]
            if isinstance(value, tuple) and not hasattr(value, "_fields"):
                return tuple(walk(v, (*key, i)) for i, v in enumerate(value))
            return copy.deepcopy(value)

        result = walk(obj, ())
        for device in cuda_devices:  # the copies were queued without blocking: wait for each device's
            torch.cuda.synchronize(device)
        return result


class _BufferUsers:
    """How many queued writes still read the host buffers: a new snapshot waits until none does."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def acquire(self) -> None:
        with self._cond:
            self._count += 1

    def release(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def busy(self) -> bool:
        with self._cond:
            return self._count > 0

    def wait_idle(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._count == 0)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


class AsyncCheckpointIO(CheckpointIO):
    """Wraps a base `CheckpointIO` (default `TorchCheckpointIO`) and writes in the background."""

    writer_niceness = 10

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        if checkpoint_io is not None and not isinstance(checkpoint_io, CheckpointIO):
            raise TypeError(
                f"AsyncCheckpointIO(checkpoint_io=...) expects a CheckpointIO instance, got {checkpoint_io!r}."
            )
        if isinstance(checkpoint_io, AsyncCheckpointIO):
            raise TypeError("AsyncCheckpointIO(checkpoint_io=...) cannot wrap another AsyncCheckpointIO.")
        self._base = checkpoint_io
        self._buffers = _HostBuffers()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._error_raised = False
        self._buffer_users = _BufferUsers()
        self._snapshot: tuple[str, Any, Any] | None = (
            None  # (path, snapshot, storage_options) of the last save
        )
        self._queued: dict[str, int] = {}  # paths a queued save or link will create
        self._lock = threading.Lock()
        self._dcp_group: Any = None
        self._sharded_future: Any = None
        self._sharded_path = ""
        self._failed: list[str] = []
        self._last_bytes = 0
        self._last_write_s = 0.0
        self._warned_behind = False

    _PROCESS_LOCAL = (
        "_buffers", "_queue", "_thread", "_error", "_error_raised", "_buffer_users", "_lock", "_dcp_group",
        "_sharded_future", "_sharded_path", "_snapshot", "_queued",
    )  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        # The writer thread, its queue and buffers belong to this process: a copy (pickle, deepcopy, torch.save
        # of a Trainer) carries the configuration only and starts its own writer when it first saves.
        return {k: v for k, v in self.__dict__.items() if k not in self._PROCESS_LOCAL}

    def __setstate__(self, state: dict[str, Any]) -> None:
        AsyncCheckpointIO.__init__(self, state.get("_base"))
        self.__dict__.update(state)

    @property
    def checkpoint_io(self) -> CheckpointIO:
        if self._base is None:
            self._base = TorchCheckpointIO()
        return self._base

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._base = io

    @property
    def supports_sharded(self) -> bool:  # type: ignore[override]
        return self.checkpoint_io.supports_sharded

    @property
    def supports_link(self) -> bool:  # type: ignore[override]
        """Always: a second name of the file just saved is the base plugin's link, or else the same snapshot
        written again in the background (either is cheaper than a second snapshot)."""
        return True

    @property
    def failed_paths(self) -> tuple[str, ...]:
        """Paths whose queued save or link failed, or was skipped after an earlier failure, in queue order:
        no file was written there. Callers that recorded such a path (ModelCheckpoint) roll their
        bookkeeping back. Cleared by `teardown`."""
        with self._lock:
            return tuple(self._failed)

    # -- the worker ---------------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="savepoint-async-writer", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        # Below the training threads in the OS scheduler: on a machine with few cores the write then
        # takes the idle time instead of the training step's (Linux: per-thread nice value).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.writer_niceness)
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                kind, fn, path, done = item
                with self._lock:
                    failed = self._error is not None
                    if kind == "link" and failed:
                        self._failed.append(path)
                if kind in ("remove", "link") and failed:
                    if done is not None:
                        done()
                    continue  # never remove an old file, nor link to a file, for a save that did not land
                try:
                    fn()
                except BaseException as err:
                    with self._lock:
                        if kind != "remove":
                            self._failed.append(path)
                        if self._error is None:
                            self._error = err
                            self._error_raised = False
                finally:
                    if done is not None:
                        done()
            finally:
                self._queue.task_done()

    def _submit(
        self, kind: str, fn: Callable[[], None], path: str, done: Callable[[], None] | None = None
    ) -> None:
        self._ensure_thread()
        if kind != "remove":
            with self._lock:
                self._queued[path] = self._queued.get(path, 0) + 1

            def finished(inner: Callable[[], None] | None = done) -> None:
                with self._lock:
                    left = self._queued.get(path, 1) - 1
                    if left:
                        self._queued[path] = left
                    else:
                        self._queued.pop(path, None)
                if inner is not None:
                    inner()

            done = finished
        self._queue.put((kind, fn, path, done))

    def _raise_pending(self) -> None:
        with self._lock:
            err, raised = self._error, self._error_raised
            if err is not None:
                self._error_raised = True
                self._error = None
        if err is not None and not raised:
            if isinstance(err, CheckpointWriteError):
                raise CheckpointWriteError(f"background save failed: {err}", err.path) from err
            raise CheckpointWriteError(f"background save failed ({type(err).__name__}: {err})") from err

    # -- the CheckpointIO API -----------------------------------------------------------------------------

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str, storage_options: Any | None = None
    ) -> None:
        self._raise_pending()
        behind = self._buffer_users.busy()
        waited = time.perf_counter()
        self._buffer_users.wait_idle()  # at most one save in flight; its buffers are ours again after this
        if behind:
            self._warn_behind(time.perf_counter() - waited)
        self._raise_pending()
        snapshot = self._buffers.snapshot(checkpoint)
        self._snapshot = (str(path), snapshot, storage_options)
        self._write_snapshot("save", snapshot, str(path), storage_options)

    def _write_snapshot(self, kind: str, snapshot: Any, path: str, storage_options: Any) -> None:
        """Queue a write of `snapshot` (whose buffers stay in use until it is done)."""
        base = self.checkpoint_io
        nbytes = _tensor_bytes(snapshot)

        def write() -> None:
            started = time.perf_counter()
            base.save_checkpoint(snapshot, path, storage_options=storage_options)
            self._last_bytes, self._last_write_s = nbytes, time.perf_counter() - started

        self._buffer_users.acquire()
        self._submit(kind, write, path, self._buffer_users.release)

    def _warn_behind(self, waited_s: float) -> None:
        """Once: saves come faster than the disk writes them, so training waited for the previous one."""
        if self._warned_behind or not self._last_write_s:
            return
        self._warned_behind = True
        took, size = self._last_write_s, self._last_bytes
        warnings.warn(
            f"AsyncCheckpointIO: a save was requested while the previous one ({size / 1e6:.0f} MB) was still being "
            f"written, so training waited {waited_s:.2f} s for the disk. That write took {took:.2f} s "
            f"({size / 1e6 / took:.0f} MB/s); save at most every {2 * took:.1f} s or so (raise "
            f"every_n_train_steps or train_time_interval) to keep writes off the training path. Said once.",
            UserWarning,
            stacklevel=4,
        )

    def link_checkpoint(self, src: str, dst: str) -> None:
        """`dst` becomes a second name of `src`: the base plugin's link, or where it has none, the snapshot
        of `src` (the save just made) written again, without a second snapshot. Queued after every save
        already submitted, so `dst` never names a file whose write has not committed; skipped (and `dst`
        listed in `failed_paths`) if an earlier queued save failed."""
        self._wait_sharded()
        base = self.checkpoint_io
        if base.supports_link:
            self._submit("link", lambda: base.link_checkpoint(src, dst), str(dst))
            return
        if self._snapshot is not None and self._snapshot[0] == str(src):
            _, snapshot, storage_options = self._snapshot
            self._write_snapshot("link", snapshot, str(dst), storage_options)
            return

        def copy() -> None:  # not the save just made (a full file after a weights-only one): read it back
            base.save_checkpoint(base.load_checkpoint(src, map_location="cpu"), dst)

        self._submit("link", copy, str(dst))

    def remove_checkpoint(self, path: str) -> None:
        self._wait_sharded()  # a sharded save must land before anything it replaces leaves
        base = self.checkpoint_io
        self._submit("remove", lambda: base.remove_checkpoint(path), str(path))

    def load_checkpoint(self, path: str, map_location: Any | None = None, **kwargs: Any) -> dict[str, Any]:
        self.wait()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, **kwargs)

    def save_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        """Every rank: DCP's own async path (``dcp.async_save``) on a dedicated gloo process group, so its
        collectives never interleave with the training's. Training waits for DCP's planning and its copy of
        the shards to host memory; the write continues in the background."""
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        self._wait_sharded()
        self._raise_pending()
        if not isinstance(self.checkpoint_io, TorchCheckpointIO):
            raise TypeError(
                f"AsyncCheckpointIO writes sharded checkpoints with torch.distributed.checkpoint.async_save; its base "
                f"{type(self.checkpoint_io).__name__} would be bypassed. Use AsyncCheckpointIO() (or a "
                f"TorchCheckpointIO base) with sharded saves, or save synchronously with your plugin."
            )
        if self._dcp_group is None:
            self._dcp_group = dist.new_group(backend="gloo")  # every rank reaches this save together
        self._sharded_path = str(path)
        self._sharded_future = dcp.async_save(
            state, storage_writer=make_writer(str(path)), process_group=self._dcp_group
        )

    def _wait_sharded(self) -> None:
        future, self._sharded_future = self._sharded_future, None
        if future is None:
            return
        try:
            future.result()
        except BaseException as err:
            with self._lock:
                if self._error is None:
                    self._error = CheckpointWriteError(
                        f"saving sharded checkpoint {self._sharded_path!r} failed: {type(err).__name__}: {err}",
                        self._sharded_path,
                    )
                    self._error_raised = False

    def _release_dcp_group(self) -> None:
        """Destroy the gloo group this plugin made for DCP (every rank tears down at the end of a fit), so its
        worker threads end now rather than in the interpreter's shutdown, where a C++ thread that touches a
        Python object aborts the process. A group already destroyed with the world is only forgotten."""
        group, self._dcp_group = self._dcp_group, None
        if group is None:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            # ValueError "Invalid process group": it went with destroy_process_group() already
            with contextlib.suppress(ValueError):
                dist.destroy_process_group(group)

    def load_sharded(self, state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
        self.wait()
        self.checkpoint_io.load_sharded(state, path, process_group)

    def save_sharded_meta(self, meta: dict[str, Any], path: str) -> None:
        self.wait()  # an async save still writing (possibly this very folder) lands first
        self.checkpoint_io.save_sharded_meta(meta, path)

    def load_sharded_meta(self, path: str) -> dict[str, Any]:
        self.wait()
        return self.checkpoint_io.load_sharded_meta(path)

    # -- path questions: the base plugin answers (listings wait for the queue, so they see every save) ----------

    def exists(self, path: str) -> bool:
        """Taken once a queued save or link will create it, or if the base plugin finds it."""
        with self._lock:
            if str(path) in self._queued:
                return True
        return self.checkpoint_io.exists(path)

    def list_checkpoints(self, dirpath: str) -> list[CheckpointEntry]:
        self.wait()
        return self.checkpoint_io.list_checkpoints(dirpath)

    def list_folders(self, dirpath: str) -> list[str]:
        return self.checkpoint_io.list_folders(dirpath)

    def makedirs(self, path: str) -> None:
        self.checkpoint_io.makedirs(path)

    def check_writable(self, dirpath: str) -> None:
        self.checkpoint_io.check_writable(dirpath)

    def save_text(self, text: str, path: str) -> None:
        self.checkpoint_io.save_text(text, path)

    def load_text(self, path: str) -> str:
        return self.checkpoint_io.load_text(path)

    def is_sharded_checkpoint(self, path: str) -> bool:
        self.wait()
        return self.checkpoint_io.is_sharded_checkpoint(path)

    def wait(self) -> None:
        """Block until every queued save and removal has finished."""
        self._wait_sharded()
        if self._thread is not None:
            self._queue.join()

    def teardown(self) -> None:
        self.wait()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._thread = None
        with self._lock:
            self._failed = []
        self._snapshot = None
        self._buffers = _HostBuffers()  # a checkpoint's worth of (pinned) host memory, not held between fits
        self._release_dcp_group()
        self.checkpoint_io.teardown()
        self._raise_pending()
