"""``savepoint verify``: is each checkpoint whole? CRC32 of every record, then a weights-only load."""

from __future__ import annotations

import argparse

from savepoint.checkpoint.errors import CheckpointError
from savepoint.cli import _read
from savepoint.cli._common import add_command, emit, human_size, text


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "verify",
        run,
        summary="check CRC32 of every record and load weights-only",
        description="Reads every byte of each checkpoint (file or sharded folder), checks each zip record's "
        "CRC32 (torch.load does not) and loads its structure weights-only; a folder of checkpoints "
        "checks each of them. Exit code 1 if any fails.",
        examples=["savepoint verify checkpoints/*.ckpt"],
    )
    p.add_argument("paths", nargs="+", metavar="PATH")


def run(args: argparse.Namespace) -> int:
    from savepoint.checkpoint.verify import verify_checkpoint
    from savepoint.plugins.io.verify_sharded import expand_folders

    failed = 0
    for path in expand_folders(args.paths):  # a folder of checkpoints: each of them
        report = verify_checkpoint(path)
        if report.ok:
            try:  # the layout checks every other command applies: one answer for "is this file usable?"
                _read.load_raw(path)
            except CheckpointError as err:
                report.ok, report.problems = False, [str(err)]
        if report.ok:
            line = text("OK   ", style="green")
            line.append(
                f"{path}  ({report.kind}, {report.records} records, {human_size(report.bytes)}, "
                f"format {report.format_version})"
            )
        else:
            failed += 1
            line = text("FAIL ", style="red")
            line.append(path)
            for problem in report.problems:
                line.append(f"\n       {problem}")
        emit(line)
    return 1 if failed else 0
