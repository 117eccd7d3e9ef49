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

1-3 read only the zip directory and the pickle (small); 4 reads every byte once (`archive.py`). Failures raise
`CorruptCheckpointError` (or `OversizedCheckpointError`, `UnsafeCheckpointError`) naming file and record.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch
from torch import _weights_only_unpickler

from savepoint.checkpoint.archive import (
    Record,
    check_crcs_streamed,
    crc32,
    crc_error,
    read_records,
    start_crc_check,
)
from savepoint.checkpoint.errors import (
    CorruptCheckpointError,
    NotACheckpointError,
    OversizedCheckpointError,
    UnsafeCheckpointError,
)
from savepoint.checkpoint.lightning_format import foreign_containers_allowed

VERIFY_ENV = "SAVEPOINT_VERIFY_INTEGRITY"
MAX_PICKLE_ENV = "SAVEPOINT_MAX_PICKLE_BYTES"
# A real checkpoint's pickle holds about 200 bytes per tensor plus hyperparameters and loop state: a few
# MB even with tens of thousands of tensors. Unpickling costs about three times the record's size in
# memory, so the default bounds that to about 200 MB, whatever the file's compression ratio.
DEFAULT_MAX_PICKLE_BYTES = 64 << 20
_CHUNK = 4 << 20


def resolve_verify(verify_integrity: bool | None) -> bool:
    """An explicit argument wins; otherwise ``SAVEPOINT_VERIFY_INTEGRITY`` (on unless ``0``/``false``/``no``)."""
    if verify_integrity is not None:
        if not isinstance(verify_integrity, bool):
            raise TypeError(f"verify_integrity must be True, False or None, got {verify_integrity!r}")
        return verify_integrity
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def resolve_max_pickle_bytes(max_pickle_bytes: int | None) -> int:
    """An explicit argument wins; otherwise ``SAVEPOINT_MAX_PICKLE_BYTES``; otherwise 64 MiB."""
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
        with foreign_containers_allowed():  # the classes a load accepts (Lightning's Namespace hparams)
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
    return Claims(nbytes, _keys_under(obj, by_impl))


def _keys_under(obj: Any, by_impl: dict[int, str]) -> dict[Any, set[str]]:
    """Top-level key -> storage keys of the tensors under it; {} when any tensor cannot be traced to its
    record (a sparse or subclass tensor): then every record is CRC-checked."""
    if not isinstance(obj, dict):
        return {}
    out: dict[Any, set[str]] = {}
    try:
        for top, value in obj.items():
            keys = set()
            for tensor in _tensors(value):
                key = by_impl.get(tensor.untyped_storage()._cdata)
                if key is None:
                    return {}
                keys.add(key)
            out[top] = keys
    except Exception:  # a tensor without a plain storage
        return {}
    return out


def _tensors(obj: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:  # a pickle may build a list that contains itself
            continue
        seen.add(id(item))
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


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def unpickling_error(shown: str, err: BaseException) -> Exception:
    """Classify a weights-only unpickling failure: a refused global (unsafe) or damaged bytes (corrupt)."""
    # torch's text carries terminal bold codes, and its first line is advice to unpickle anyway: keep the
    # line naming the refused global.
    lines = _ANSI_ESCAPE.sub("", str(err)).splitlines() or [""]
    message = (
        next((ln for ln in lines if "Unsupported global" in ln), lines[0])
        .split(" Please use")[0]
        .strip()
        .rstrip(".")
    )
    if "global" in message.lower() or "weights_only" in message.lower() or "weights only" in message.lower():
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
