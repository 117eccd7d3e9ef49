"""Paced writeback for background saves: hand the file to the disk piece by piece while it is written.

Written plainly, a checkpoint sits in the page cache until the fsync before its rename, which then pushes
it all to the disk at once. An async save written in pieces instead, each piece's writeback started with
``sync_file_range(SYNC_FILE_RANGE_WRITE)`` as soon as it is written and the previous piece waited for, keeps
at most two pieces dirty and spreads the disk's work over the write. On this project's 2-core machine
(``bench/writer_interference.py``, 200 MB checkpoints at nice 10, 8 MB pieces) training steps beside the
write ran at 1.06x-1.14x their time without one (90th percentile 1.10x-1.17x) against 1.15x-1.24x
(1.13x-1.46x) written plainly, lower in each of 7 runs; the write itself took up to ~20% longer. A modest
gain (see docs/design.md, Async saving). Durability is unchanged: this only starts writeback early, the
fsync before the rename still decides what is on disk.

Direct writes (``direct=``): a record's data that starts on a page boundary of the file, from a page-aligned
buffer (the async snapshot's buffers are; background saves align records to 4096 bytes), goes out through
a second descriptor opened with ``O_DIRECT``: its whole pages straight from the buffer to the disk, the
tail through the buffered file. No copy into the page cache, no dirty pages for the kernel to flush: on
the 2-core machine the write itself took half the time and training lost about a third as much per 200 MB
write (``bench/writer_interference.py``; docs/design.md, Async saving). The CRC is still taken as the
bytes go by. A file system that refuses ``O_DIRECT`` (tmpfs, some network file systems), at open or with
EINVAL at a direct write before any of its bytes went out, is written plainly from there on. Durability
is unchanged: the fsync before the rename covers both descriptors' writes.

An error of the waited-for writeback (EIO, ENOSPC) is raised, never swallowed: the kernel reports it once
per file descriptor, so the fsync after it on the same descriptor could succeed. Only a system without
``sync_file_range`` (or a file that refuses it) falls back to plain writes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any, BinaryIO

import numpy as np
import torch

from savepoint.checkpoint.archive import crc32

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4
_PIECE = 1 << 20  # writes go out in pieces this size, each CRC'd right after, while still in the CPU's cache
_PAGE = 4096  # O_DIRECT: file offset, buffer address and length multiples of this (covers 512-byte sectors)
_DIRECT_MIN = 1 << 20  # smaller records go through the page cache: one syscall either way
O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux, FreeBSD; 0: no direct writes on this system
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP, errno.ENOTSUP)


def _load() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load()


def open_direct(path: str | os.PathLike, same_as: int) -> int | None:
    """A second, ``O_DIRECT`` write descriptor of the file open as `same_as`, opened by its `path`; None
    where the system or the file system has no such mode, or where the name no longer leads to that file
    (removed or replaced since it was opened: writes through it would land in another file)."""
    if not O_DIRECT:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | O_DIRECT)
    except OSError as err:
        if err.errno in _UNSUPPORTED or err.errno == errno.ENOENT:
            return None
        raise
    opened, expected = os.fstat(fd), os.fstat(same_as)
    if (opened.st_dev, opened.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        return None
    return fd


def storage_alignment_for(checkpoint: Any) -> int | None:
    """4096 (a page) when the checkpoint has a storage large enough for a direct write and aligning every
    record to a page pads the file by under 2% (torch pads each record's start); else None (torch's)."""
    seen: set[int] = set()
    total = largest = 0
    records = 6  # data.pkl, .format_version, .storage_alignment, byteorder, version, .data/serialization_id
    stack = [checkpoint]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            try:
                storage = value.untyped_storage()
            except (NotImplementedError, RuntimeError):  # sparse and other layouts: torch saves their parts
                records += 3
                continue
            if storage.nbytes() == 0:
                records += 1  # every empty storage is a record of its own (they share data_ptr 0)
            elif storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
                largest = max(largest, storage.nbytes())
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    records += len(seen)
    return _PAGE if largest >= _DIRECT_MIN and records * _PAGE * 50 <= total else None


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, np.uint8).ctypes.data) if len(view) else 0


class PacedWriter:
    """A file object for ``torch.save`` that passes every write on to `f` and, every `chunk` bytes (0: never),
    starts the writeback of what it wrote and waits for that of the piece before (see the module docstring).
    With `direct` (an ``O_DIRECT`` descriptor of the same file, `open_direct`; the caller closes it), a
    page-aligned write at a page-aligned offset goes out through it instead.

    It also takes the CRC32 of each write as it goes by (`crcs`: file offset -> (length, CRC32)), where the
    bytes are already in the cache: torch writes each record's data in one call, so `fill_crc32` finds the
    CRC of every record there instead of reading the file back."""

    def __init__(self, f: BinaryIO, chunk: int, direct: int | None = None) -> None:
        self._f = f
        self._fd = f.fileno()
        self._direct = direct
        self._chunk = chunk
        self._pos = self._start = f.tell()
        self._previous: tuple[int, int] | None = None
        self._on = _SYNC_FILE_RANGE is not None and chunk > 0
        self.crcs: dict[int, tuple[int, int]] = {}

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total, at, crc = len(view), self._pos, 0
        whole = total - total % _PAGE
        if (
            self._direct is not None
            and whole >= _DIRECT_MIN
            and at % _PAGE == 0
            and _address(view) % _PAGE == 0
            and self._write_direct(view[:whole])
        ):
            crc = crc32(view[:whole])
            view = view[whole:]
        while view:
            n = self._f.write(view[:_PIECE])
            if not n:
                raise OSError(errno.EIO, "write returned 0")
            crc = crc32(view[:n], crc)  # of what went out, still in the CPU's cache; releases the GIL
            view = view[n:]
            self._pos += n
            if self._on and self._pos - self._start >= self._chunk:
                self._hand_over()
        self.crcs[at] = (total, crc)
        return total

    def _write_direct(self, view: memoryview) -> bool:
        """Write `view` (whole pages) at the current offset through the ``O_DIRECT`` descriptor; False, and
        direct writes off from then on, where the file system refuses them (nothing was written then)."""
        assert self._direct is not None
        self._f.flush()  # what torch wrote before reaches the kernel first (other pages than these)
        done = 0
        try:
            while done < len(view):
                n = os.pwrite(self._direct, view[done:], self._pos + done)
                if not n:
                    raise OSError(errno.EIO, "write returned 0")
                done += n
        except OSError as err:
            if err.errno != errno.EINVAL or done:
                raise
            self._direct = None  # alignment this file system does not take: write plainly
            return False
        self._pos = self._start = self._f.seek(self._pos + done)  # nothing buffered is left dirty before it
        return True

    def _hand_over(self) -> None:
        self._f.flush()  # a buffered file: its tail reaches the kernel first
        piece = (self._start, self._pos - self._start)
        if not self._sync(piece, _WRITE):
            return
        if self._previous is not None:
            self._sync(self._previous, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
        self._previous, self._start = piece, self._pos

    def _sync(self, piece: tuple[int, int], flags: int) -> bool:
        if _SYNC_FILE_RANGE(self._fd, piece[0], piece[1], flags) == 0:
            return True
        err = ctypes.get_errno()
        if err in _UNSUPPORTED and self._previous is None:
            self._on = False  # refused from the first piece on: write plainly
            return False
        raise OSError(err, f"sync_file_range: {os.strerror(err)}")

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._start = self._f.seek(offset, whence)
        self._previous = None
        return self._pos

    def tell(self) -> int:
        return self._pos
