"""``savepoint export --safetensors``: the weights as ``model.safetensors`` plus their configuration."""

from __future__ import annotations

import argparse

import torch

from savepoint.cli import _read
from savepoint.cli._common import CliError, add_command, emit, text

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "export",
        run,
        summary="export the weights to safetensors (+ config.json, hparams.yaml)",
        description="Writes OUT_DIR/model.safetensors (the weights, loadable with "
        "safetensors.torch.load_file), config.json (hyperparameters, position, versions) and hparams.yaml. "
        "No training state. The folder loads back as a weights-only checkpoint: "
        "`MyModule.load_from_checkpoint(OUT_DIR)`. --dtype casts floating-point weights.",
        examples=[
            "savepoint export checkpoints/best.ckpt --safetensors model/",
            "savepoint export checkpoints/best.ckpt --safetensors model-bf16/ --dtype bfloat16",
        ],
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--safetensors", required=True, metavar="OUT_DIR", help="folder to write")
    p.add_argument("--dtype", choices=sorted(_DTYPES), help="cast floating-point weights")


def run(args: argparse.Namespace) -> int:
    from savepoint.plugins.io.export import write_export

    checkpoint = _read.load_full(args.path)
    if not checkpoint.get("state_dict"):
        raise CliError(f"{args.path!r} holds no weights to export")
    for path in write_export(checkpoint, args.safetensors, _DTYPES.get(args.dtype or "")):
        emit(text(f"wrote {path}"))
    return 0
