"""``savepoint convert``: between layouts. A sharded folder to one file, a full checkpoint to weights only,
a trusted pickle-bearing file to the safe format, and to or from Lightning's layout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from savepoint._version import __version__
from savepoint.checkpoint import format as fmt
from savepoint.cli import _read
from savepoint.cli._common import add_command, emit, text

_WEIGHTS_ONLY_KEYS = (
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


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "convert",
        run,
        summary="convert between layouts (sharded -> file, weights only, Lightning <-> savepoint)",
        description="Reads SRC (a file, a sharded folder, or a Lightning checkpoint) and writes DST "
        "atomically. --to savepoint (the default) writes savepoint's format, keeping the version key of "
        "the tool that wrote SRC; --to lightning writes a file Lightning 2.x loads with "
        "`load_from_checkpoint` and resumes from with `Trainer.fit(ckpt_path=)` at the same epoch, step, "
        "learning rate and optimizer state. --weights-only drops the training state.",
        examples=[
            "savepoint convert checkpoints/last.ckpt full.ckpt          # sharded folder -> one file",
            "savepoint convert last.ckpt for_lightning.ckpt --to lightning",
            "savepoint convert lightning.ckpt savepoint.ckpt --to savepoint",
            "savepoint convert last.ckpt weights.ckpt --weights-only",
        ],
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--to", choices=("savepoint", "lightning"), default="savepoint", help="layout of DST")
    p.add_argument("--weights-only", action="store_true", help="keep weights and hyperparameters only")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="SRC is trusted: load it with pickle (runs its code) and re-save it as plain data",
    )


def _sanitize(obj: Any, where: str = "checkpoint") -> Any:
    """Plain-data copy of a checkpoint holding other objects (Namespaces, dict subclasses...)."""
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


def _read_source(args: argparse.Namespace) -> dict[str, Any]:
    """SRC upgraded to the current layout; the version key of another tool is kept."""
    if args.trust_pickle:
        raw = torch.load(args.src, map_location="cpu", weights_only=False)  # the user vouched for this file
        raw = _read.check_layout(fmt.check_is_checkpoint(raw, args.src), args.src)
    else:
        loaded = _read.load_raw(args.src)
        raw = _read.load_full(args.src) if loaded.kind != "file" else loaded.raw
    foreign = {k: raw[k] for k in fmt._LEGACY_VERSION_KEYS if k in raw}
    ckpt = fmt.upgrade_checkpoint(_sanitize(raw), args.src)
    ckpt.update(foreign)
    if foreign:
        ckpt[fmt.SAVEPOINT_VERSION] = __version__  # who converted it; `inspect` shows both tools
    return ckpt


def run(args: argparse.Namespace) -> int:
    from savepoint.checkpoint.lightning_format import to_lightning
    from savepoint.plugins.io.torch_io import TorchCheckpointIO
    from savepoint.trainer.checkpointing import check_weights_only_safe

    ckpt = _read_source(args)
    if args.weights_only:
        ckpt = {k: v for k, v in ckpt.items() if k in (*_WEIGHTS_ONLY_KEYS, *fmt._LEGACY_VERSION_KEYS)}
        ckpt[fmt.WEIGHTS_ONLY] = True
    if args.to == "lightning":
        ckpt = to_lightning(ckpt, args.src)
    else:
        check_weights_only_safe(ckpt)
    TorchCheckpointIO().save_checkpoint(ckpt, args.dst)
    emit(text(f"wrote {args.dst} ({args.to} layout)"))
    return 0
