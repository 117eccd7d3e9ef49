"""``savepoint upgrade``: rewrite a checkpoint at the current format version (atomically)."""

from __future__ import annotations

import argparse

from savepoint.checkpoint import format as fmt
from savepoint.cli import _read
from savepoint.cli._common import CliError, add_command, emit, text


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "upgrade",
        run,
        summary="rewrite at the current format version (-o OUT or --in-place)",
        description="Loads PATH (any older format, Lightning's included), upgrades it one version at a time "
        f"to format {fmt.FORMAT_VERSION} and writes it atomically to OUT, or over PATH with --in-place.",
        examples=["savepoint upgrade old.ckpt -o new.ckpt", "savepoint upgrade old.ckpt --in-place"],
    )
    p.add_argument("path", metavar="PATH")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="OUT", help="write the upgraded checkpoint here")
    where.add_argument("--in-place", action="store_true", help="replace PATH (atomically)")


def run(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.torch_io import TorchCheckpointIO

    loaded = _read.load_raw(args.path)
    if loaded.kind != "file":
        raise CliError(f"{args.path!r} is a {loaded.kind} checkpoint; `upgrade` rewrites single files")
    before = fmt.format_version_of(loaded.raw)
    ckpt = fmt.upgrade_checkpoint(dict(loaded.raw), args.path)
    out = args.path if args.in_place else args.output
    TorchCheckpointIO().save_checkpoint(ckpt, out)
    emit(text(f"{args.path}: format {before} -> {fmt.FORMAT_VERSION}, written to {out}"))
    return 0
