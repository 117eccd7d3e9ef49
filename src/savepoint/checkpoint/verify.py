"""``verify``: is this checkpoint whole, and would loading accept it?

The same checks as every load (`savepoint.checkpoint.integrity`: record table, pickle size limit, record
sizes against the pickle, CRC32 of every record), streamed one record at a time through one buffer, then
the weights-only load and the layout check that `load_from_checkpoint` and ``fit(ckpt_path=)`` use
(`savepoint.checkpoint.validate`): a file fails here exactly when loading refuses it, with the same
message.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint import integrity
from savepoint.checkpoint.errors import CheckpointError
from savepoint.checkpoint.validate import validated
from savepoint.plugins.io.torch_io import TorchCheckpointIO, load_file
from savepoint.plugins.io.verify_sharded import verify_sharded


@dataclass
class VerifyReport:
    path: str
    ok: bool
    kind: str = "file"  # file | sharded
    records: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    format_version: int | None = None


def _check_zip(path: str, report: VerifyReport, load: bool = True) -> None:
    """Record count and size, then the integrity checks of a load, streamed (memory: one 4 MB buffer)."""
    try:
        size = os.path.getsize(path)
        integrity.refuse_empty(size, path)
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        report.records = len(infos)
        report.bytes = sum(info.file_size for info in infos)
    except CheckpointError as err:
        report.problems.append(str(err))
        return
    except Exception as err:  # zipfile raises BadZipFile, NotImplementedError, struct.error...
        if not load:  # otherwise the load says why, in its own words (it also reads pre-zip torch files)
            report.problems.append(
                f"not a readable zip archive ({err}): torn, truncated, or not a torch.save file"
            )
        return
    try:
        with open(path, "rb") as f:
            integrity.check_stream(f, size, path, verify=True, limit=integrity.resolve_max_pickle_bytes(None))
    except CheckpointError as err:
        report.problems.append(str(err))
    except OSError as err:
        report.problems.append(f"cannot read: {err}")


def _verify_sharded(path: str, report: VerifyReport, load: bool) -> VerifyReport:
    """A sharded folder: every record's CRC and every shard's size (`verify_sharded`), then its meta."""
    report.kind = "sharded"
    sharded = verify_sharded(path)
    report.records, report.bytes, report.problems = sharded.records, sharded.bytes, list(sharded.problems)
    if load and not report.problems:
        try:
            meta: dict[str, Any] = TorchCheckpointIO().load_sharded_meta(path)
            validated({fmt.STATE_DICT: {}, **meta}, path)  # the tensors live in the shards
            report.keys = sorted(meta)
            report.format_version = fmt.format_version_of(meta, path)
        except CheckpointError as err:
            report.problems.append(str(err))
    report.ok = not report.problems
    return report


def verify_checkpoint(path: str | os.PathLike, load: bool = True) -> VerifyReport:
    """Check `path` (a ``.ckpt`` file or a sharded folder); ``report.ok`` says whether it is whole."""
    path = os.fspath(path)
    report = VerifyReport(path=path, ok=False)
    if not os.path.exists(path):
        report.problems.append("does not exist")
        return report
    if os.path.isdir(path):
        return _verify_sharded(path, report, load)
    _check_zip(path, report, load)
    if load and not report.problems:
        try:
            # CRCs were just checked, streamed; the load repeats the cheap checks, then the shared validation.
            obj = load_file(path, map_location="cpu", verify_integrity=False)
            validated(obj, path)
            report.keys = sorted(obj)
            report.format_version = fmt.format_version_of(obj, path)
        except CheckpointError as err:
            report.problems.append(str(err))
    report.ok = not report.problems
    return report


def verify(path: str | os.PathLike) -> VerifyReport:
    return verify_checkpoint(path)
