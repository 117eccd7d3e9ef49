"""``savepoint diff``: what changed between two checkpoints; exit 0 when identical, 1 when not."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from savepoint.checkpoint import format as fmt
from savepoint.cli import _read
from savepoint.cli._common import add_command, emit, print_json, text

EXIT_DIFFERENT = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "diff",
        run,
        summary="compare two checkpoints (exit 0 identical, 1 different)",
        description="Top-level keys only in one, hyperparameter changes, position changes (epoch, step, "
        "batch) and, for every weight, the maximum absolute difference (or a shape/dtype change). "
        "Exit code 0 when nothing differs, 1 when something does, 2 when a file cannot be read: usable "
        "in scripts and CI.",
        examples=["savepoint diff epoch=3.ckpt epoch=4.ckpt", "savepoint diff a.ckpt b.ckpt --json"],
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)}


def _tensor_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    only_a = sorted(str(k) for k in a if k not in b)
    only_b = sorted(str(k) for k in b if k not in a)
    changed: dict[str, Any] = {}
    for name in a:
        if name not in b or not isinstance(a[name], torch.Tensor) or not isinstance(b[name], torch.Tensor):
            continue
        x, y = a[name], b[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            changed[name] = {"a": f"{tuple(x.shape)} {x.dtype}", "b": f"{tuple(y.shape)} {y.dtype}"}
        elif not torch.equal(x, y):
            delta = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
            changed[name] = {"max_abs_diff": delta}
    return {"only_in_a": only_a, "only_in_b": only_b, "changed": changed}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    ignored = {fmt.SAVEPOINT_VERSION}
    keys_a = {str(k) for k in a} - ignored
    keys_b = {str(k) for k in b} - ignored
    return {
        "keys_only_in_a": sorted(keys_a - keys_b),
        "keys_only_in_b": sorted(keys_b - keys_a),
        "hyper_parameters": _changes(
            _read.plain(_read.hyperparameters(a)), _read.plain(_read.hyperparameters(b))
        ),
        "position": _changes(_read.position(a), _read.position(b)),
        "tensors": _tensor_diff(a.get(fmt.STATE_DICT) or {}, b.get(fmt.STATE_DICT) or {}),
    }


def is_identical(report: dict[str, Any]) -> bool:
    t = report["tensors"]
    return not (
        report["keys_only_in_a"]
        or report["keys_only_in_b"]
        or report["hyper_parameters"]
        or report["position"]
        or t["only_in_a"]
        or t["only_in_b"]
        or t["changed"]
    )


def _print(report: dict[str, Any], a: str, b: str) -> None:
    if is_identical(report):
        emit(text(f"identical: {a} and {b} (keys, hyperparameters, position and weights)"))
        return
    for key in report["keys_only_in_a"]:
        emit(text(f"key only in A: {key}"))
    for key in report["keys_only_in_b"]:
        emit(text(f"key only in B: {key}"))
    for section in ("hyper_parameters", "position"):
        for key, (x, y) in report[section].items():
            emit(text(f"{section.replace('_', ' ')}: {key}: {x!r} -> {y!r}"))
    t = report["tensors"]
    for name in t["only_in_a"]:
        emit(text(f"tensor only in A: {name}"))
    for name in t["only_in_b"]:
        emit(text(f"tensor only in B: {name}"))
    for name, change in t["changed"].items():
        detail = (
            f"max abs diff {change['max_abs_diff']:.6g}"
            if "max_abs_diff" in change
            else f"{change['a']} -> {change['b']}"
        )
        emit(text(f"tensor {name}: {detail}"))


def run(args: argparse.Namespace) -> int:
    report = compare(_read.load_full(args.a), _read.load_full(args.b))
    report["identical"] = is_identical(report)
    if args.json:
        print_json(report)
    else:
        _print(report, args.a, args.b)
    return 0 if report["identical"] else EXIT_DIFFERENT
