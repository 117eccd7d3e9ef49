"""``savepoint``: inspect, verify, convert and upgrade checkpoints from the shell.

savepoint inspect PATH [--json]          what is inside: versions, position, tensors, callbacks
savepoint verify PATH...                 CRC32 of every record + a weights-only load; exit 1 on failure
savepoint convert SRC DST [--weights-only] [--trust-pickle]
                                         sharded folder -> one .ckpt; strip training state; re-save a
                                         trusted pickle-bearing file in the safe format
savepoint upgrade PATH [-o OUT]          rewrite at the current format version (atomically)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from savepoint import plotting
from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CheckpointError


def _load(path: str) -> dict[str, Any]:
    from savepoint._loading import read_checkpoint

    return read_checkpoint(path, map_location="cpu")


def _tensor_stats(obj: Any) -> tuple[int, int]:
    count = size = 0
    if isinstance(obj, torch.Tensor):
        return 1, obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, list | tuple):
        items = obj
    else:
        return 0, 0
    for value in items:
        c, s = _tensor_stats(value)
        count += c
        size += s
    return count, size


def _summary(path: str) -> dict[str, Any]:
    from savepoint.plugins.io.torch_io import TorchCheckpointIO

    is_sharded_checkpoint = TorchCheckpointIO().is_sharded_checkpoint
    raw_version = None
    if not is_sharded_checkpoint(path):
        from savepoint.plugins.io.torch_io import load_file

        raw_version = fmt.format_version_of(load_file(path, map_location="cpu"))
    ckpt = _load(path)
    n, size = _tensor_stats(ckpt.get(fmt.STATE_DICT, {}))
    loop = (ckpt.get(fmt.LOOPS) or {}).get(fmt.FIT_LOOP, {})
    return {
        "path": path,
        "kind": "sharded folder" if is_sharded_checkpoint(path) else "file",
        "format_version": raw_version if raw_version is not None else ckpt.get(fmt.FORMAT_VERSION_KEY),
        "savepoint_version": ckpt.get(fmt.SAVEPOINT_VERSION),
        "epoch": ckpt.get(fmt.EPOCH),
        "global_step": ckpt.get(fmt.GLOBAL_STEP),
        "weights_only": fmt.is_weights_only(ckpt),
        "position": {
            k: loop.get(k) for k in ("phase", "epoch", "batches_done", "accumulated", "exact") if k in loop
        },
        "parameters": {"tensors": n, "bytes": size},
        "optimizers": len(ckpt.get(fmt.OPTIMIZER_STATES, []) or []),
        "lr_schedulers": len(ckpt.get(fmt.LR_SCHEDULERS, []) or []),
        "callbacks": sorted((ckpt.get(fmt.CALLBACKS) or {}).keys()),
        "hyper_parameters": {k: repr(v) for k, v in (ckpt.get(fmt.HYPER_PARAMETERS) or {}).items()},
        "keys": sorted(ckpt.keys()),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.verify_sharded import expand_folders

    paths = expand_folders([args.path])  # a folder of checkpoints: each of them
    if args.json:
        summaries = [_summary(p) for p in paths]
        print(json.dumps(summaries[0] if paths == [args.path] else summaries, indent=2, default=str))
        return 0
    for path in paths:
        _print_summary(path, _summary(path))
    return 0


def _print_summary(path: str, summary: dict[str, Any]) -> None:
    table = Table(title=f"checkpoint {path}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "path":
            continue
        if key == "parameters":
            value = f"{value['tensors']} tensors, {value['bytes'] / 1e6:.2f} MB"
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    Console().print(table)


def cmd_verify(args: argparse.Namespace) -> int:
    from savepoint.checkpoint.verify import verify_checkpoint
    from savepoint.plugins.io.verify_sharded import expand_folders

    console = Console()
    failed = 0
    for path in expand_folders(args.paths):  # a folder of checkpoints: each of them
        report = verify_checkpoint(path)
        if report.ok:
            console.print(
                f"[green]OK[/green]   {path}  ({report.kind}, {report.records} records, "
                f"{report.bytes / 1e6:.2f} MB, format {report.format_version})"
            )
        else:
            failed += 1
            console.print(f"[red]FAIL[/red] {path}")
            for problem in report.problems:
                console.print(f"       {problem}")
    return 1 if failed else 0


def _sanitize(obj: Any, where: str = "checkpoint") -> Any:
    """Plain-data copy of a trusted, pickle-bearing checkpoint (dict subclasses, Namespaces...)."""
    from savepoint.hparams import UnstorableHyperparameter, encode

    if isinstance(
        obj, torch.Tensor | str | int | float | bool | type(None) | torch.dtype | torch.device | torch.Size
    ):
        return obj
    if isinstance(obj, dict):
        return {k: _sanitize(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_sanitize(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_sanitize(v, f"{where}[{i}]") for i, v in enumerate(obj))
    try:
        return encode(obj, where)
    except UnstorableHyperparameter:
        print(f"dropping {where}: {type(obj).__name__} is not plain data", file=sys.stderr)
        return None


def cmd_convert(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.torch_io import TorchCheckpointIO

    if args.trust_pickle:
        raw = torch.load(args.src, map_location="cpu", weights_only=False)  # the user vouched for this file
        ckpt = fmt.upgrade_checkpoint(fmt.check_is_checkpoint(_sanitize(raw), args.src), args.src)
    else:
        ckpt = _load(args.src)
    if args.weights_only:
        keep = (
            fmt.EPOCH,
            fmt.GLOBAL_STEP,
            fmt.STATE_DICT,
            fmt.HYPER_PARAMETERS,
            fmt.HPARAMS_NAME,
            fmt.DATAMODULE_HYPER_PARAMETERS,
            fmt.DATAMODULE_HPARAMS_NAME,
            fmt.SAVEPOINT_VERSION,
            fmt.FORMAT_VERSION_KEY,
        )
        ckpt = {k: v for k, v in ckpt.items() if k in keep}
        ckpt[fmt.WEIGHTS_ONLY] = True
    from savepoint.trainer.checkpointing import check_weights_only_safe

    check_weights_only_safe(ckpt)
    TorchCheckpointIO().save_checkpoint(ckpt, args.dst)
    print(f"wrote {args.dst}")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.torch_io import TorchCheckpointIO, load_file

    raw = load_file(args.path, map_location="cpu")
    before = fmt.format_version_of(raw)
    ckpt = fmt.upgrade_checkpoint(fmt.check_is_checkpoint(raw, args.path), args.path)
    out = args.output or args.path
    TorchCheckpointIO().save_checkpoint(ckpt, out)
    print(f"{args.path}: format {before} -> {fmt.FORMAT_VERSION}, written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="savepoint", description="Inspect, verify, convert and upgrade checkpoints."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="show what a checkpoint holds")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("verify", help="check CRC32 of every record and load weights-only")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("convert", help="sharded folder -> one file; or strip training state")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--weights-only", action="store_true", help="keep weights and hyperparameters only")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="SRC is trusted: load it with pickle (runs its code) and re-save it as plain data",
    )
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("upgrade", help="rewrite at the current format version")
    p.add_argument("path")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_upgrade)
    plotting.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, TypeError) as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}")
        return 2
    except FileNotFoundError as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
