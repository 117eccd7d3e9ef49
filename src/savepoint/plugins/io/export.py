"""Weights-only exports: a folder with ``model.safetensors``, ``config.json`` and ``hparams.yaml``.

The split people use to serve or share a model without its training state. ``model.safetensors`` loads
with ``safetensors.torch.load_file``; ``config.json`` keeps the hyperparameters in savepoint's safe
encoding (so they come back as the user wrote them) with the position and versions; ``hparams.yaml`` is
the plain, human-readable copy. `read_export` turns such a folder back into a weights-only checkpoint
dict, which is how ``load_from_checkpoint(folder)`` accepts it.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CorruptCheckpointError, NotACheckpointError
from savepoint.plugins.io._fs import get_fs

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HPARAMS_FILE = "hparams.yaml"
EXPORT_KIND = "savepoint-safetensors-export"

_CONFIG_KEYS = (
    fmt.EPOCH,
    fmt.GLOBAL_STEP,
    fmt.HYPER_PARAMETERS,
    fmt.HPARAMS_NAME,
    fmt.DATAMODULE_HYPER_PARAMETERS,
    fmt.DATAMODULE_HPARAMS_NAME,
    fmt.SAVEPOINT_VERSION,
    fmt.FORMAT_VERSION_KEY,
)


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as err:  # optional extra
        raise ImportError(
            "safetensors exports need the 'safetensors' package: pip install 'savepoint[safetensors]'"
        ) from err
    return safetensors.torch


def is_export_dir(path: str) -> bool:
    fs, inner = get_fs(path)
    base = inner.rstrip("/")
    try:
        return fs.isdir(inner) and fs.isfile(f"{base}/{WEIGHTS_FILE}")
    except OSError:
        return False


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def build_export(
    checkpoint: dict[str, Any], dtype: torch.dtype | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors for ``model.safetensors``, ``config.json`` content) from a checkpoint dict."""
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}
    for name, value in checkpoint[fmt.STATE_DICT].items():
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        # safetensors refuses tensors that share memory (tied weights): each name gets its own copy.
        tensors[name] = tensor.contiguous().clone() if key in seen or not tensor.is_contiguous() else tensor
        seen[key] = name
    config = {"kind": EXPORT_KIND, "dtype": str(dtype).removeprefix("torch.") if dtype else None}
    for key in _CONFIG_KEYS:
        if key in checkpoint and _json_safe(checkpoint[key]):
            config[key] = checkpoint[key]
    return tensors, config


def write_export(checkpoint: dict[str, Any], out_dir: str, dtype: torch.dtype | None = None) -> list[str]:
    """Write the three files into `out_dir`; returns their paths."""
    import yaml

    from savepoint.hparams import decode, to_plain

    st = _safetensors()
    tensors, config = build_export(checkpoint, dtype)
    fs, inner = get_fs(out_dir)
    fs.makedirs(inner, exist_ok=True)
    base = out_dir.rstrip("/")
    weights = st.save(tensors, metadata={"format": "pt", "kind": EXPORT_KIND})
    hparams = to_plain(decode(checkpoint.get(fmt.HYPER_PARAMETERS) or {}))
    contents = {
        WEIGHTS_FILE: weights,
        CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode(),
        HPARAMS_FILE: yaml.safe_dump(hparams, sort_keys=False).encode(),
    }
    written = []
    for name, data in contents.items():
        fs.pipe_file(f"{inner.rstrip('/')}/{name}", data)
        written.append(f"{base}/{name}")
    return written


def read_export(path: str) -> dict[str, Any]:
    """A weights-only checkpoint dict from an export folder."""
    st = _safetensors()
    fs, inner = get_fs(path)
    base = inner.rstrip("/")
    try:
        weights = st.load(fs.cat_file(f"{base}/{WEIGHTS_FILE}"))
    except Exception as err:  # safetensors raises its own error types for a torn file
        raise CorruptCheckpointError(
            f"{path!r}: {WEIGHTS_FILE} is not a readable safetensors file ({type(err).__name__}: {err}). "
            f"Export the checkpoint again with `savepoint export CKPT --safetensors {path}`.",
            path,
        ) from err
    config: dict[str, Any] = {}
    if fs.isfile(f"{base}/{CONFIG_FILE}"):
        try:
            config = json.loads(fs.cat_file(f"{base}/{CONFIG_FILE}"))
        except ValueError as err:
            raise CorruptCheckpointError(f"{path!r}: {CONFIG_FILE} is not valid JSON ({err})", path) from err
        if not isinstance(config, dict):
            raise NotACheckpointError(f"{path!r}: {CONFIG_FILE} must hold a JSON object", path)
    checkpoint = {k: config[k] for k in _CONFIG_KEYS if k in config}
    checkpoint[fmt.STATE_DICT] = weights
    checkpoint[fmt.WEIGHTS_ONLY] = True
    checkpoint.setdefault(fmt.FORMAT_VERSION_KEY, fmt.FORMAT_VERSION)
    return checkpoint
