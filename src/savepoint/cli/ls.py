"""``savepoint ls``: every checkpoint of a run, one row each, sorted by step: "which file do I want?"."""

from __future__ import annotations

import argparse
from typing import Any

from savepoint.checkpoint.errors import CheckpointError
from savepoint.cli import _read
from savepoint.cli._common import (
    CliError,
    add_command,
    emit,
    human_size,
    print_json,
    show_number,
    table,
    text,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "ls",
        run,
        summary="list the checkpoints of a run or folder",
        description="One row per checkpoint under RUN_OR_FOLDER (local, or any fsspec URL such as s3://): "
        "epoch, step, the monitored metric and its value, best and last markers, size, format, the tool "
        "that wrote it and a verify status. Sorted by step. Without --verify each file's structure is "
        "read (a weights-only load, tensors not read); --verify also checks every record's CRC32.",
        examples=["savepoint ls lightning_logs/", "savepoint ls s3://bucket/run1 --verify --json"],
    )
    p.add_argument("path", metavar="RUN_OR_FOLDER")
    p.add_argument("--verify", action="store_true", help="check the CRC32 of every record (reads all bytes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _row(path: str, verify: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path,
        "name": path.rstrip("/").rsplit("/", 1)[-1],
        "size": _read.size_of(path),
    }
    try:
        loaded = _read.load_raw(path)
    except CheckpointError as err:
        return {**row, "status": f"FAIL: {err}", "ok": False, "step": None, "epoch": None}
    raw = loaded.raw
    checkpoints = _read.model_checkpoints(raw)
    monitor = next((c for c in checkpoints if c["monitor"]), None)
    row.update(
        {
            "epoch": raw.get("epoch"),
            "step": raw.get("global_step"),
            "monitor": monitor["monitor"] if monitor else None,
            "score": monitor["current_score"] if monitor else None,
            "format": _read.format_name(loaded),
            "written_by": _read.written_by(raw),
            "_best": [c["best_model_path"] for c in checkpoints if c["best_model_path"]],
            "_last": [c["last_model_path"] for c in checkpoints if c["last_model_path"]],
            "ok": True,
            "status": "ok (structure)",
        }
    )
    if verify and loaded.kind != "export":
        problems = _read.verify_problems(path)
        row["ok"] = not problems
        row["status"] = f"FAIL: {problems[0]}" if problems else "ok (crc)"
    return row


def _mark(rows: list[dict[str, Any]]) -> None:
    """Best and last as the newest file's ModelCheckpoint state names them (by file name: runs move)."""
    newest = max((r for r in rows if r.get("step") is not None), key=lambda r: r["step"], default=None)
    best = {p.rsplit("/", 1)[-1] for p in (newest or {}).get("_best", [])}
    last = {p.rsplit("/", 1)[-1] for p in (newest or {}).get("_last", [])}
    for row in rows:
        row["best"] = row["name"] in best
        row["last"] = row["name"] in last or row["name"].startswith("last")
        row.pop("_best", None)
        row.pop("_last", None)


def run(args: argparse.Namespace) -> int:
    paths = _read.find_checkpoints(args.path)
    if not paths:
        raise CliError(f"no checkpoints under {args.path!r} (looked for *.ckpt files and sharded folders)")
    rows = [_row(p, args.verify) for p in paths]
    _mark(rows)
    rows.sort(key=lambda r: (r.get("step") is None, r.get("step") or 0, r["last"], r["name"]))
    if args.json:
        print_json(rows)
    else:
        grid = table(
            "name",
            "epoch",
            "step",
            "monitor",
            "value",
            "best",
            "last",
            "size",
            "format",
            "written by",
            "status",
        )
        for r in rows:
            grid.add_row(
                text(r["name"]),
                show_number(r.get("epoch")),
                show_number(r.get("step")),
                text(r.get("monitor") or "-"),
                show_number(r.get("score")),
                "*" if r["best"] else "",
                "*" if r["last"] else "",
                human_size(r["size"]),
                text(r.get("format", "-")),
                text(r.get("written_by", "-")),
                text(r["status"], style="green" if r["ok"] else "red"),
            )
        emit(grid)
    return 0 if all(r["ok"] for r in rows) else 1
