"""Integrity of a checkpoint archive, checked before its tensors reach the caller.

A ``torch.save`` file is a zip archive: one pickle record (``<prefix>/data.pkl``) and one record per tensor
storage (``<prefix>/data/<key>``). ``torch.load`` checks none of the archive's own consistency: it does not
compare CRC32s, it takes a storage's size from the pickle (with ``mmap=True`` a record shorter than its
tensor silently reads the bytes that follow it), and it inflates a compressed pickle record whole. Before
a load returns, savepoint checks:

1. the archive's directory: every record lies inside the file (a truncated copy is refused);
2. the pickle record's uncompressed size against a limit (`max_pickle_bytes`), before inflating it;
3. every storage the pickle references: the record exists, is stored uncompressed, and its size is the
   size the pickle claims (``numel * element size``);
4. unless opted out (``verify_integrity=False`` or ``SAVEPOINT_VERIFY_INTEGRITY=0``), the CRC32 of every
   record, computed in threads that release the GIL (``isal`` when installed, else ``zlib``).

1-3 read only the zip directory and the pickle (small); 4 reads every byte once. Failures raise
`CorruptCheckpointError` (or `OversizedCheckpointError`, `UnsafeCheckpointError`) naming file and record.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch
from torch import _weights_only_unpickler

from savepoint.checkpoint.errors import (
    CorruptCheckpointError,
    NotACheckpointError,
    OversizedCheckpointError,
    UnsafeCheckpointError,
)

try:  # about 4x faster than zlib's CRC32; both release the GIL on large buffers
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - the optional accelerator is missing
    from zlib import crc32 as _crc32

VERIFY_ENV = "SAVEPOINT_VERIFY_INTEGRITY"
MAX_PICKLE_ENV = "SAVEPOINT_MAX_PICKLE_BYTES"
# Real checkpoints hold a few bytes of pickle per tensor plus hyperparameters: a few MB even for models
# with tens of thousands of tensors. Unpickling costs about three times the record's size in memory.
DEFAULT_MAX_PICKLE_BYTES = 256 << 20
_CHUNK = 4 << 20
_LOCAL = b"PK\x03\x04"


def crc32(data: Any, value: int = 0) -> int:
    """CRC32 of a buffer, continuing from `value` (isal when installed, else zlib; same result)."""
    return _crc32(data, value) & 0xFFFFFFFF


def resolve_verify(verify_integrity: bool | None) -> bool:
    """An explicit argument wins; otherwise ``SAVEPOINT_VERIFY_INTEGRITY`` (on unless ``0``/``false``/``no``)."""
    if verify_integrity is not None:
        if not isinstance(verify_integrity, bool):
            raise TypeError(f"verify_integrity must be True, False or None, got {verify_integrity!r}")
        return verify_integrity
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def resolve_max_pickle_bytes(max_pickle_bytes: int | None) -> int:
    """An explicit argument wins; otherwise ``SAVEPOINT_MAX_PICKLE_BYTES``; otherwise 256 MiB."""
    if max_pickle_bytes is None:
        raw = os.environ.get(MAX_PICKLE_ENV)
        if raw is None:
            return DEFAULT_MAX_PICKLE_BYTES
        try:
            max_pickle_bytes = int(raw)
        except ValueError:
            raise ValueError(f"{MAX_PICKLE_ENV} must be a number of bytes, got {raw!r}") from None
    if isinstance(max_pickle_bytes, bool) or not isinstance(max_pickle_bytes, int) or max_pickle_bytes <= 0:
        raise ValueError(f"max_pickle_bytes must be a positive number of bytes, got {max_pickle_bytes!r}")
    return max_pickle_bytes


def refuse_empty(size: int, shown: str) -> None:
    if size == 0:
        raise CorruptCheckpointError(
            f"{shown!r} is empty (0 bytes): expected a checkpoint written by torch.save. A copy that did not "
            f"finish, or a file created but never written; resume from another checkpoint.",
            shown,
        )


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
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
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


def pickle_record(records: list[Record], shown: str) -> Record:
    pickles = [r for r in records if r.name.endswith("data.pkl") and r.name.count("/") == 1]
    if not pickles:
        raise NotACheckpointError(
            f"{shown!r} is a zip archive but not a torch.save file: expected a '<name>/data.pkl' record, found "
            f"{[r.name for r in records[:5]]}.",
            shown,
        )
    return pickles[0]


def check_pickle_size(record: Record, limit: int, shown: str) -> None:
    if record.size > limit:
        raise OversizedCheckpointError(
            f"{shown!r}: its pickle record {record.name!r} inflates to {record.size} bytes, over the limit of "
            f"{limit} bytes ({record.stored_size} bytes in the file). Refused before inflating it (a "
            f"decompression bomb, or unusually large hyperparameters). If you trust the file, raise the limit: "
            f"TorchCheckpointIO(max_pickle_bytes=...) or the {MAX_PICKLE_ENV} environment variable.",
            shown,
        )


def read_pickle(f: BinaryIO, record: Record, limit: int, shown: str) -> bytes:
    """The pickle record's bytes, inflated at most to `limit` bytes (its declared size may lie)."""
    if not record.compressed:
        f.seek(record.start)
        return f.read(record.size)
    f.seek(0)
    out = io.BytesIO()
    try:
        with zipfile.ZipFile(f).open(record.name) as stream:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                if out.tell() > min(limit, record.size):
                    raise OversizedCheckpointError(
                        f"{shown!r}: its pickle record {record.name!r} inflates past its declared size "
                        f"({record.size} bytes) or the limit ({limit} bytes): refused.",
                        shown,
                    )
    except OversizedCheckpointError:
        raise
    except Exception as err:  # zlib.error, a bad CRC, a truncated stream
        raise CorruptCheckpointError(
            f"{shown!r}: record {record.name!r} does not inflate ({type(err).__name__}: {err}).", shown
        ) from err
    return out.getvalue()


@dataclass
class Claims:
    """What the pickle says about its storages: size of each, and which top-level keys reference which."""

    nbytes: dict[str, int]
    keys_under: dict[Any, set[str]]  # top-level key -> storage keys reached from it (empty: not a dict)


def storage_claims(data: bytes, shown: str) -> Claims:
    """The storages the pickle claims, from a weights-only unpickling onto the meta device.

    No tensor data is read and nothing but the weights-only allow-list is constructed. A view reaching
    outside its storage fails here too.
    """
    nbytes: dict[str, int] = {}
    by_impl: dict[int, str] = {}
    keep: list[Any] = []  # holds the storages, so that no address is reused during the walk

    def persistent_load(saved_id: Any) -> Any:
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}")
        storage_type, key, _location, numel = saved_id[1:]
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        size = int(numel) * torch._utils._element_size(dtype)
        if nbytes.setdefault(str(key), size) != size:
            raise pickle.UnpicklingError(f"storage {key!r} is claimed with two sizes")
        meta = torch.UntypedStorage(size, device="meta")
        by_impl[meta._cdata] = str(key)
        keep.append(meta)
        return torch.storage.TypedStorage(wrap_storage=meta, dtype=dtype, _internal=True)

    unpickler = _weights_only_unpickler.Unpickler(io.BytesIO(data), encoding="utf-8")
    unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    try:
        obj = unpickler.load()
    except pickle.UnpicklingError as err:
        raise unpickling_error(shown, err) from err
    except Exception as err:  # a truncated pickle, a view outside its storage, a bad dtype...
        first = (str(err).splitlines() or [""])[0]
        raise CorruptCheckpointError(
            f"{shown!r}: its pickle record does not describe a valid checkpoint ({type(err).__name__}: "
            f"{first}): the file is damaged.",
            shown,
        ) from err
    keys_under: dict[Any, set[str]] = {}
    if isinstance(obj, dict):
        for top, value in obj.items():
            keys_under[top] = {by_impl[t.untyped_storage()._cdata] for t in _tensors(value)}
    return Claims(nbytes, keys_under)


def _tensors(obj: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return out


def unused_records(
    records: list[Record], pkl: Record, claims: Claims, unused_keys: tuple[str, ...]
) -> set[str]:
    """Names of the storage records reached only from the top-level keys in `unused_keys`."""
    if not unused_keys or not claims.keys_under:
        return set()
    skipped = set().union(*(claims.keys_under.get(k, set()) for k in unused_keys))
    used = set().union(*(v for k, v in claims.keys_under.items() if k not in unused_keys))
    prefix = pkl.name[: -len("data.pkl")] + "data/"
    return {prefix + key for key in skipped - used}


def unpickling_error(shown: str, err: BaseException) -> Exception:
    """Classify a weights-only unpickling failure: a refused global (unsafe) or damaged bytes (corrupt)."""
    message = (str(err).splitlines() or [""])[0]
    if "global" in message.lower() or "weights_only" in message.lower():
        return UnsafeCheckpointError(
            f"{shown!r} holds pickled objects that are not plain data (refused, never executed): {message}. "
            f"savepoint loads only tensors, numbers, strings and containers; re-save the checkpoint with "
            f"savepoint, or, if you trust its origin, convert it with `savepoint convert --trust-pickle`.",
            shown,
        )
    return CorruptCheckpointError(
        f"{shown!r}: its pickle record is damaged ({message}); resume from another checkpoint.", shown
    )


def check_storages(records: list[Record], pkl: Record, claims: Claims, shown: str) -> None:
    """Each referenced storage has its record, stored uncompressed, of exactly the claimed size."""
    prefix = pkl.name[: -len("data.pkl")] + "data/"
    by_name = {r.name: r for r in records}
    for key, nbytes in claims.nbytes.items():
        record = by_name.get(prefix + key)
        if record is None:
            raise CorruptCheckpointError(
                f"{shown!r}: the pickle references storage record {prefix + key!r}, which the archive lacks: "
                f"the file is damaged.",
                shown,
            )
        if record.compressed:
            raise CorruptCheckpointError(
                f"{shown!r}: storage record {record.name!r} is compressed; torch.save stores tensors "
                f"uncompressed and a memory-mapped load reads them in place. Not a file torch.save wrote.",
                shown,
            )
        if record.size != nbytes:
            raise CorruptCheckpointError(
                f"{shown!r}: storage record {record.name!r} holds {record.size} bytes but the pickle claims "
                f"{nbytes} (numel x element size): the file is damaged; resume from another checkpoint.",
                shown,
            )


def crc_error(shown: str, record: Record, found: int) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{shown!r}: record {record.name!r} fails its CRC32 check (stored {record.crc:08x}, computed "
        f"{found:08x}): the file changed after it was written (a flipped bit, a partial copy). Resume from "
        f"another checkpoint; to load it anyway, pass verify_integrity=False.",
        shown,
    )


def crc_of_file(f: BinaryIO, record: Record, buffer: bytearray) -> int:
    """CRC32 of a stored record read through `buffer` (memory stays at one buffer); -1 if it is cut short."""
    view = memoryview(buffer)
    crc, left = 0, record.size
    f.seek(record.start)
    while left > 0:
        n = f.readinto(view[: min(left, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            return -1
        crc = crc32(view[:n], crc)
        left -= n
    return crc


def crc_of_compressed(f: BinaryIO, record: Record, limit: int) -> int:
    """CRC32 of a compressed record's inflated bytes, streamed (a record inflating past `limit` fails)."""
    crc, total = 0, 0
    f.seek(0)
    try:
        with zipfile.ZipFile(f).open(record.name) as stream:
            stream._expected_crc = None  # type: ignore[attr-defined]  # we compare ourselves, naming the file
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    return -1
                crc = crc32(chunk, crc)
    except Exception:  # zlib.error, a truncated stream: the CRC cannot match
        return -1
    return crc


def check_crcs_streamed(f: BinaryIO, records: list[Record], limit: int, shown: str) -> None:
    """Every record's CRC32, one record after another through one 4 MB buffer (for `verify`)."""
    buffer = bytearray(_CHUNK)
    for record in records:
        found = crc_of_compressed(f, record, limit) if record.compressed else crc_of_file(f, record, buffer)
        if found != record.crc:
            raise crc_error(shown, record, found & 0xFFFFFFFF)


def start_crc_check(path: str, records: list[Record], limit: int, shown: str) -> Callable[[], None]:
    """Start checking every stored record's CRC32 in threads over a read-only mapping of the file.

    Returns a function that waits for the threads and raises the first mismatch. The pages read here are
    those a memory-mapped ``torch.load`` then finds in the page cache.
    """
    stored = [r for r in records if not r.compressed and r.size > 0]
    compressed = [r for r in records if r.compressed]
    if not stored and not compressed:
        return lambda: None
    f = open(path, "rb")  # noqa: SIM115 - closed by the returned function
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if stored else None
    if mapped is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)

    def one(record: Record) -> int:
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
                    raise crc_error(shown, record, found & 0xFFFFFFFF)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if mapped is not None:
                mapped.close()
            f.close()

    return wait


def _nothing() -> None:
    return None


def check_local_file(
    path: str, shown: str, *, verify: bool, limit: int, unused_keys: tuple[str, ...] = ()
) -> Callable[[], None]:
    """Check the archive at local `path` (1-3 of the module docstring) and start its CRC threads (4).

    Returns the function that waits for the CRCs; call it before handing loaded data to anyone. Records
    reached only from the top-level keys `unused_keys` (which the caller does not use) are not CRC-checked.
    """
    with open(path, "rb") as f:
        records = read_records(f, os.fstat(f.fileno()).st_size, shown)
        pkl = pickle_record(records, shown)
        check_pickle_size(pkl, limit, shown)
        claims = _check_pickle_and_storages(f, records, pkl, shown, verify=verify, limit=limit)
    if not verify:
        return _nothing
    skip = unused_records(records, pkl, claims, unused_keys)
    return start_crc_check(path, [r for r in records if r is not pkl and r.name not in skip], limit, shown)


def check_stream(f: BinaryIO, size: int, shown: str, *, verify: bool, limit: int) -> None:
    """The same checks, one record after another through one buffer: for `verify` and in-memory files."""
    records = read_records(f, size, shown)
    pkl = pickle_record(records, shown)
    check_pickle_size(pkl, limit, shown)
    _check_pickle_and_storages(f, records, pkl, shown, verify=verify, limit=limit)
    if verify:
        check_crcs_streamed(f, [r for r in records if r is not pkl], limit, shown)


def _check_pickle_and_storages(
    f: BinaryIO, records: list[Record], pkl: Record, shown: str, *, verify: bool, limit: int
) -> Claims:
    data = read_pickle(f, pkl, limit, shown)
    if verify and not pkl.compressed and crc32(data) != pkl.crc:
        raise crc_error(shown, pkl, crc32(data))
    claims = storage_claims(data, shown)
    check_storages(records, pkl, claims, shown)
    return claims
