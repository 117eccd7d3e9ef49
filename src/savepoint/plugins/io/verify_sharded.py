"""Integrity of a sharded checkpoint folder, record by record, and of folders of ordinary checkpoints.

A sharded folder is whole when: ``.metadata`` (the commit marker) unpickles with the restricted loader;
every shard file it names exists and is as long as its records need (and as long as when it was
written); every record's CRC32 matches the one ``crc32.json`` recorded at save time; and ``meta.ckpt``
is a whole zip archive. Folders written before ``crc32.json`` existed are checked for sizes only.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

from savepoint.checkpoint.errors import CheckpointError
from savepoint.checkpoint.sharded import COMMIT_FILE, CRC_FILE, META_FILE
from savepoint.plugins.io import _fs
from savepoint.plugins.io.sharded import SafeFileSystemReader, crc_of_range


@dataclass
class ShardedReport:
    path: str
    records: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    crc_checked: bool = False


def _needed_sizes(metadata: Any) -> tuple[dict[str, int], int]:
    """Per shard file, the end of its last record, and the number of records, from ``.metadata``."""
    sizes: dict[str, int] = {}
    records = 0
    for info in (metadata.storage_data or {}).values():
        records += 1
        end = int(info.offset) + int(info.length)
        sizes[info.relative_path] = max(sizes.get(info.relative_path, 0), end)
    return sizes, records


def _check_sizes(path: str, sizes: dict[str, int], recorded: dict[str, Any], report: ShardedReport) -> None:
    for name, needed in sorted(sizes.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            report.problems.append(f"shard file {name!r} named in {COMMIT_FILE} is missing")
            continue
        actual = os.path.getsize(file)
        report.bytes += actual
        expected = int(recorded.get(name, {}).get("size", needed))
        if actual < needed or actual != expected:
            report.problems.append(
                f"shard file {name!r} has {actual} bytes, expected {expected} (truncated or replaced)"
            )


def _check_crcs(path: str, recorded: dict[str, Any], report: ShardedReport) -> None:
    for name, entry in sorted(recorded.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue  # reported by the size check
        with open(file, "rb") as f:
            for offset, length, crc in entry.get("records", []):
                if crc_of_range(f, int(offset), int(length)) != int(crc):
                    report.problems.append(
                        f"record at offset {offset} ({length} bytes) of shard file {name!r} fails its CRC32 "
                        f"check: the data changed after it was written"
                    )
    report.crc_checked = True


def _check_meta_zip(path: str, report: ShardedReport) -> None:
    meta = os.path.join(path, META_FILE)
    try:
        with zipfile.ZipFile(meta) as archive:
            bad = archive.testzip()  # reads every record and checks its CRC32
        if bad is not None:
            report.problems.append(f"{META_FILE}: record {bad!r} fails its CRC32 check")
    except (zipfile.BadZipFile, OSError) as err:
        report.problems.append(f"{META_FILE}: not a readable archive ({err})")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def verify_sharded(path: str | os.PathLike, check_crc: bool = True) -> ShardedReport:
    """Check a committed sharded folder; ``report.problems`` is empty when it is whole.

    ``check_crc=False`` checks the structure only (metadata, every shard's presence and size): cheap,
    for every resume; the CRCs need a read of every shard.
    """
    path = os.fspath(path)
    report = ShardedReport(path)
    if not os.path.isfile(os.path.join(path, COMMIT_FILE)):
        report.problems.append(f"folder without {COMMIT_FILE}: an interrupted sharded save, not a checkpoint")
        return report
    try:
        metadata = SafeFileSystemReader(path).read_metadata()
    except CheckpointError as err:
        report.problems.append(str(err))
        return report
    except Exception as err:  # a torn .metadata: pickle raises many types
        report.problems.append(f"{COMMIT_FILE} is unreadable ({type(err).__name__}: {err})")
        return report
    sizes, report.records = _needed_sizes(metadata)
    recorded: dict[str, Any] = {}
    crc_file = os.path.join(path, CRC_FILE)
    if os.path.isfile(crc_file):
        try:
            with open(crc_file, encoding="utf-8") as f:
                recorded = dict(json.load(f)["files"])
        except (ValueError, KeyError, TypeError, OSError) as err:
            report.problems.append(f"{CRC_FILE} is unreadable ({err})")
    _check_sizes(path, sizes, recorded, report)
    if recorded and check_crc:
        _check_crcs(path, recorded, report)
    if check_crc:
        _check_meta_zip(path, report)
    return report


def is_plain_folder(path: str | os.PathLike) -> bool:
    """A folder that is not a sharded checkpoint (no ``.metadata``, no shard files): a folder of files."""
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, COMMIT_FILE)):
        return False
    return not any(name.endswith(".distcp") or name == META_FILE for name in os.listdir(path))


def expand_folders(paths: list[str]) -> list[str]:
    """Each path as given, except a folder of ordinary checkpoints: its checkpoints, file by file."""
    out: list[str] = []
    for path in paths:
        if is_plain_folder(path):
            found = sorted(entry[0] for entry in _fs.list_local(path, _warn))
            out.extend(found or [path])
        else:
            out.append(path)
    return out
