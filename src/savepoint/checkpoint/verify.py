"""``verify``: is this checkpoint whole? CRC32 of every zip record (torch.load does not check them),
then a weights-only load of its structure."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CheckpointError
from savepoint.plugins.io.torch_io import TorchCheckpointIO
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


def _check_zip(path: str, report: VerifyReport) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            report.records = len(infos)
            for info in infos:
                report.bytes += info.file_size
                try:
                    with archive.open(info) as f:
                        while f.read(1 << 22):
                            pass
                except zipfile.BadZipFile as err:
                    report.problems.append(f"record {info.filename!r}: {err}")
                except Exception as err:  # zlib errors, truncated data
                    report.problems.append(f"record {info.filename!r}: {type(err).__name__}: {err}")
    except zipfile.BadZipFile as err:
        report.problems.append(
            f"not a readable zip archive ({err}): torn, truncated, or not a torch.save file"
        )
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
            report.keys = sorted(meta)
            report.format_version = fmt.format_version_of(meta)
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
    _check_zip(path, report)
    if load and not report.problems:
        from savepoint.plugins.io.torch_io import load_file

        try:
            obj = load_file(path, map_location="cpu")
            checkpoint = fmt.check_is_checkpoint(obj, path)
            report.keys = sorted(checkpoint)
            report.format_version = fmt.format_version_of(checkpoint)
        except CheckpointError as err:
            report.problems.append(str(err))
    report.ok = not report.problems
    return report


def verify(path: str | os.PathLike) -> VerifyReport:
    return verify_checkpoint(path)
