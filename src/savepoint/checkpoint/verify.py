"""``verify``: is this checkpoint whole? CRC32 of every zip record (torch.load does not check them),
then a weights-only load of its structure."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from savepoint.checkpoint.errors import CheckpointError


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


def verify_checkpoint(path: str | os.PathLike, load: bool = True) -> VerifyReport:
    """Check `path` (a ``.ckpt`` file or a sharded folder); ``report.ok`` says whether it is whole."""
    from savepoint.checkpoint import format as fmt
    from savepoint.checkpoint.sharded import COMMIT_FILE, META_FILE, is_sharded_checkpoint, read_meta

    path = os.fspath(path)
    report = VerifyReport(path=path, ok=False)
    if not os.path.exists(path):
        report.problems.append("does not exist")
        return report
    if os.path.isdir(path):
        report.kind = "sharded"
        if not is_sharded_checkpoint(path):
            report.problems.append(
                f"folder without {COMMIT_FILE}: an interrupted sharded save, not a checkpoint"
            )
            return report
        _check_zip(os.path.join(path, META_FILE), report)
        for name in os.listdir(path):
            if name.endswith(".distcp"):
                report.bytes += os.path.getsize(os.path.join(path, name))
        if load and not report.problems:
            try:
                meta: dict[str, Any] = read_meta(path)
                from savepoint.checkpoint.sharded import SafeFileSystemReader

                SafeFileSystemReader(path).read_metadata()
                report.keys = sorted(meta)
                report.format_version = fmt.format_version_of(meta)
            except CheckpointError as err:
                report.problems.append(str(err))
        report.ok = not report.problems
        return report
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
