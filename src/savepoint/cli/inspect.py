"""``savepoint inspect``: what one checkpoint holds, as its author would describe it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.text import Text

from savepoint.checkpoint import format as fmt
from savepoint.cli import _read
from savepoint.cli._common import add_command, emit, human_size, print_json, show_number, table, text


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "inspect",
        run,
        summary="show what a checkpoint holds",
        description="Versions, the tool that wrote it, the training position, logged metrics at save time, "
        "ModelCheckpoint's monitor and best score, hyperparameters as the user wrote them, sizes, and a "
        "sharded folder's layout (world size, shard files); a folder of checkpoints shows each. --tensors lists the weights (name, shape, "
        "dtype, bytes), optionally only those matching PATTERN (a glob or a substring).",
        examples=[
            "savepoint inspect checkpoints/last.ckpt",
            "savepoint inspect checkpoints/last.ckpt --tensors 'encoder.*'",
            "savepoint inspect checkpoints/last.ckpt --json | jq .metrics",
        ],
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--tensors",
        nargs="?",
        const="",
        default=None,
        metavar="PATTERN",
        help="list weights (matching PATTERN)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def summarize(loaded: _read.Loaded) -> dict[str, Any]:
    raw = loaded.raw
    tensors = _read.tensor_rows(loaded, None)
    summary: dict[str, Any] = {
        "path": loaded.path,
        "kind": loaded.kind,
        "format": _read.format_name(loaded),
        "format_version": raw.get(fmt.FORMAT_VERSION_KEY, 0),
        "written_by": _read.written_by(raw),
        "size_bytes": _read.size_of(loaded.path),
        "weights_only": fmt.is_weights_only(raw),
        "position": _read.position(raw),
        "metrics": _read.metrics(raw),
        "model_checkpoint": _read.model_checkpoints(raw),
        "parameters": {"tensors": len(tensors), "bytes": sum(t["bytes"] for t in tensors)},
        "optimizers": len(raw.get(fmt.OPTIMIZER_STATES) or []),
        "lr_schedulers": len(raw.get(fmt.LR_SCHEDULERS) or []),
        "callbacks": sorted(str(k) for k in (raw.get(fmt.CALLBACKS) or {})),
        "hyper_parameters": _read.plain(_read.hyperparameters(raw)),
        "datamodule_hyper_parameters": _read.plain(
            _read.hyperparameters(raw, fmt.DATAMODULE_HYPER_PARAMETERS)
        ),
        "keys": sorted(str(k) for k in raw),
    }
    if loaded.kind == "sharded":
        summary["sharded"] = _read.sharded_layout(loaded.path)
    return summary


def _hparams_text(loaded: _read.Loaded) -> str:
    decoded = _read.hyperparameters(loaded.raw)
    return "\n".join(f"{k} = {v!r}" for k, v in decoded.items()) or "-"


def _rows(summary: dict[str, Any], loaded: _read.Loaded) -> list[tuple[str, str]]:
    params = summary["parameters"]
    rows = [
        ("kind", summary["kind"]),
        ("format", f"{summary['format']} (format_version {summary['format_version']})"),
        ("written by", summary["written_by"]),
        ("size on disk", human_size(summary["size_bytes"])),
        ("position", ", ".join(f"{k}={v}" for k, v in summary["position"].items())),
        ("weights", f"{params['tensors']} tensors, {human_size(params['bytes'])}"),
        ("optimizers", str(summary["optimizers"])),
        ("lr schedulers", str(summary["lr_schedulers"])),
        ("metrics", ", ".join(f"{k}={show_number(v)}" for k, v in summary["metrics"].items()) or "-"),
    ]
    for cb in summary["model_checkpoint"]:
        rows.append(
            (
                "ModelCheckpoint",
                f"monitor={cb['monitor']}, score={show_number(cb['current_score'])}, "
                f"best={show_number(cb['best_model_score'])} ({cb['best_model_path'] or '-'})",
            )
        )
    rows.append(("hyperparameters", _hparams_text(loaded)))
    if summary["datamodule_hyper_parameters"]:
        rows.append(("datamodule hparams", json.dumps(summary["datamodule_hyper_parameters"])))
    rows.append(("callbacks", "\n".join(summary["callbacks"]) or "-"))
    if "sharded" in summary:
        layout = summary["sharded"]
        files = ", ".join(f"{f['name']} ({human_size(f['bytes'])})" for f in layout["shard_files"])
        rows.append(("sharded", f"world size {layout['world_size']}; {human_size(layout['bytes'])}; {files}"))
    return rows


def run(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.verify_sharded import expand_folders

    paths = expand_folders([args.path])  # a folder of checkpoints: each of them
    if args.json:
        summaries = [_summary_with_tensors(p, args.tensors) for p in paths]
        print_json(summaries[0] if paths == [args.path] else summaries)
        return 0
    for path in paths:
        _print(path, args.tensors)
    return 0


def _summary_with_tensors(path: str, pattern: str | None) -> dict[str, Any]:
    loaded = _read.load_raw(path)
    summary = summarize(loaded)
    if pattern is not None:
        summary["tensors"] = _read.tensor_rows(loaded, pattern or None)
    return summary


def _print(path: str, pattern: str | None) -> None:
    loaded = _read.load_raw(path)
    grid = table("field", "value", title=f"checkpoint {path}")
    for field, value in _rows(summarize(loaded), loaded):
        grid.add_row(Text(field, style="bold"), text(value))
    emit(grid)
    if pattern is not None:
        listing = table("tensor", "shape", "dtype", "bytes")
        for row in _read.tensor_rows(loaded, pattern or None):
            listing.add_row(
                text(row["name"]), str(tuple(row["shape"])), row["dtype"], human_size(row["bytes"])
            )
        emit(listing)
