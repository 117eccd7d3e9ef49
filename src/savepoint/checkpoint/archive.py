"""The zip archive under a checkpoint file: its records and their CRC32s.

CRC32 comes from ``isal`` when installed (the ``fast-crc`` extra; about 13 GB/s against zlib's 3 GB/s
here); both release the GIL on large buffers, so the threads of `start_crc_check` run in parallel.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from savepoint.checkpoint.errors import CorruptCheckpointError

try:  # about 4x faster than zlib's CRC32; both release the GIL on large buffers
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - the optional accelerator is missing
    from zlib import crc32 as _crc32

_CHUNK = 4 << 20
_LOCAL = b"PK\x03\x04"


def crc32(data: Any, value: int = 0) -> int:
    """CRC32 of a buffer, continuing from `value` (isal when installed, else zlib; same result)."""
    return _crc32(data, value) & 0xFFFFFFFF


@dataclass(frozen=True)
class Record:
    name: str
    start: int  # offset of the record's data in the file
    size: int  # uncompressed size
    stored_size: int  # size in the file
    compressed: bool
    crc: int


def read_records(f: BinaryIO, file_size: int, shown: str) -> list[Record]:
    """Every record of the archive with the offset of its data; each must lie inside the file."""
    try:
        infos = zipfile.ZipFile(f).infolist()
    except Exception as err:  # BadZipFile, NotImplementedError (a damaged version field), struct.error...
        raise CorruptCheckpointError(
            f"{shown!r} is not a readable checkpoint archive ({err}): expected a zip archive written by "
            f"torch.save; the file is torn, truncated or of another kind.",
            shown,
        ) from err
    records = []
    for info in infos:
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or header[:4] != _LOCAL:
            raise CorruptCheckpointError(
                f"{shown!r}: record {info.filename!r} has no valid header at offset {info.header_offset} "
                f"(expected a zip local header): the file is damaged.",
                shown,
            )
        name_len, extra_len = struct.unpack_from("<HH", header, 26)
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > file_size:
            raise CorruptCheckpointError(
                f"{shown!r}: record {info.filename!r} ends at byte {start + info.compress_size}, past the end "
                f"of the file ({file_size} bytes): the file is truncated.",
                shown,
            )
        compressed = info.compress_type != zipfile.ZIP_STORED
        records.append(Record(info.filename, start, info.file_size, info.compress_size, compressed, info.CRC))
    return records


def crc_error(shown: str, record: Record, found: int | None) -> CorruptCheckpointError:
    computed = "it cannot be read whole" if found is None else f"computed {found:08x}"
    return CorruptCheckpointError(
        f"{shown!r}: record {record.name!r} fails its CRC32 check (stored {record.crc:08x}, {computed}): the "
        f"file changed after it was written (a flipped bit, a partial copy). Resume from another checkpoint; "
        f"to load it anyway, pass verify_integrity=False.",
        shown,
    )


def crc_of_file(f: BinaryIO, record: Record, buffer: bytearray) -> int | None:
    """CRC32 of a stored record read through `buffer` (memory stays at one buffer); None if cut short."""
    view = memoryview(buffer)
    crc, left = 0, record.size
    f.seek(record.start)
    while left > 0:
        n = f.readinto(view[: min(left, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            return None
        crc = crc32(view[:n], crc)
        left -= n
    return crc


def crc_of_compressed(f: BinaryIO, record: Record, limit: int) -> int | None:
    """CRC32 of a compressed record's inflated bytes, streamed; None if it does not inflate within `limit`."""
    crc, total = 0, 0
    f.seek(0)
    try:
        with zipfile.ZipFile(f).open(record.name) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    return None
                crc = crc32(chunk, crc)
    except Exception:  # zlib.error, a truncated stream, zipfile's own CRC check failing
        return None
    return crc


def check_crcs_streamed(f: BinaryIO, records: list[Record], limit: int, shown: str) -> None:
    """Every record's CRC32, one record after another through one 4 MB buffer (for `verify`)."""
    buffer = bytearray(_CHUNK)
    for record in records:
        found = crc_of_compressed(f, record, limit) if record.compressed else crc_of_file(f, record, buffer)
        if found != record.crc:
            raise crc_error(shown, record, found)


def start_crc_check(path: str, records: list[Record], limit: int, shown: str) -> Callable[[], None]:
    """Start checking every stored record's CRC32 in threads over a read-only mapping of the file.

    Returns a function that waits for the threads and raises the first mismatch. The pages read here are
    those a memory-mapped ``torch.load`` then finds in the page cache.
    """
    stored = [r for r in records if not r.compressed]
    compressed = [r for r in records if r.compressed]
    if not stored and not compressed:
        return lambda: None
    f = open(path, "rb")  # noqa: SIM115 - closed by the returned function
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if stored else None
    if mapped is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)

    def one(record: Record) -> int | None:
        if record.compressed:
            with open(path, "rb") as g:
                return crc_of_compressed(g, record, limit)
        with memoryview(mapped)[record.start : record.start + record.size] as view:  # type: ignore[arg-type]
            return crc32(view)

    # Largest first: the pool stays busy to the end.
    ordered = sorted(stored + compressed, key=lambda r: r.size, reverse=True)
    pool = ThreadPoolExecutor(max_workers=max(1, min(len(ordered), os.cpu_count() or 1, 8)))
    futures = [(r, pool.submit(one, r)) for r in ordered]

    def wait() -> None:
        try:
            for record, future in futures:
                found = future.result()
                if found != record.crc:
                    raise crc_error(shown, record, found)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if mapped is not None:
                mapped.close()
            f.close()

    return wait
