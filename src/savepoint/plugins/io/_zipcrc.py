"""Fill in the CRC32 of every record of a ``torch.save`` archive after it is written.

torch computes record CRCs in C++ while holding Python's global lock, which stalls the training thread
during a background save. savepoint writes with torch's CRC off (for its own thread only: `_saveopts`),
takes each record's CRC as its bytes go out (``PacedWriter``, with isal's or zlib's ``crc32``, which release
the lock), and then writes them into the central directory and the data descriptors, before the file is
fsynced and renamed. The result is a normal zip archive whose CRCs ``savepoint verify`` (and any zip tool)
checks.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from savepoint.checkpoint.archive import crc32

_CENTRAL = 0x02014B50
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_DESCRIPTOR = b"PK\x07\x08"
_CHUNK = 4 << 20


def _central_offsets(f: BinaryIO, file_size: int) -> list[int]:
    tail_len = min(file_size, (1 << 16) + 22)
    f.seek(file_size - tail_len)
    tail = f.read(tail_len)
    end = tail.rfind(_EOCD)
    if end < 0:
        raise zipfile.BadZipFile("no end of central directory record")
    count, size, offset = struct.unpack_from("<HII", tail, end + 10)
    if offset == 0xFFFFFFFF or count == 0xFFFF:
        locator = end - 20
        if tail[locator : locator + 4] != _EOCD64_LOCATOR:
            raise zipfile.BadZipFile("zip64 locator missing")
        (eocd64,) = struct.unpack_from("<Q", tail, locator + 8)
        f.seek(eocd64 + 32)
        count, size, offset = struct.unpack("<QQQ", f.read(24))
    f.seek(offset)
    directory = f.read(size)
    offsets = []
    pos = 0
    for _ in range(count):
        (sig,) = struct.unpack_from("<I", directory, pos)
        if sig != _CENTRAL:
            raise zipfile.BadZipFile(f"bad central directory entry at {offset + pos}")
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", directory, pos + 28)
        offsets.append(offset + pos)
        pos += 46 + name_len + extra_len + comment_len
    return offsets


def _crc_of(f: BinaryIO, start: int, length: int, buffer: bytearray) -> int:
    crc = 0
    view = memoryview(buffer)
    f.seek(start)
    while length > 0:
        n = f.readinto(view[: min(length, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            raise zipfile.BadZipFile("record shorter than its header says")
        crc = crc32(view[:n], crc)
        length -= n
    return crc & 0xFFFFFFFF


def fill_crc32(path: str | Path, known: Mapping[int, tuple[int, int]] | None = None) -> None:
    """Write the CRC32 of every record of the zip archive at `path`, in place.

    `known` maps a file offset to the (length, CRC32) of bytes written there (`PacedWriter.crcs`): a record
    whose data is one such write takes that CRC. Any other record is read back through one reusable 4 MB
    buffer (no memory growth with the checkpoint's size).
    """
    known = known or {}
    infos = zipfile.ZipFile(path).infolist()  # sizes and local header offsets, zip64 included
    buffer = bytearray(_CHUNK)
    with open(path, "r+b", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        central = _central_offsets(f, size)
        if len(central) != len(infos):
            raise zipfile.BadZipFile("central directory does not match the records")
        for info, cd in zip(infos, central):
            local = info.header_offset
            header = os.pread(f.fileno(), 30, local)
            (flags,) = struct.unpack_from("<H", header, 6)
            name_len, extra_len = struct.unpack_from("<HH", header, 26)
            start = local + 30 + name_len + extra_len
            seen = known.get(start)
            value = seen[1] if seen is not None and seen[0] == info.file_size else None
            if value is None:
                value = _crc_of(f, start, info.file_size, buffer)
            crc = struct.pack("<I", value)
            os.pwrite(f.fileno(), crc, cd + 16)
            if flags & 0x8:
                descriptor = start + info.compress_size
                if os.pread(f.fileno(), 4, descriptor) == _DESCRIPTOR:
                    descriptor += 4
                os.pwrite(f.fileno(), crc, descriptor)
            else:
                os.pwrite(f.fileno(), crc, local + 14)
