"""``load_from_checkpoint``: rebuild a module or datamodule from a checkpoint's hyperparameters."""

from __future__ import annotations

import argparse
import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import StateMismatchError
from savepoint.checkpoint.validate import validated
from savepoint.hparams import AttributeDict, decode
from savepoint.hparams_yaml import hparams_from_text
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.torch_io import TorchCheckpointIO

# Keys under which old files of the layout users know stored a module's hyperparameters.
LEGACY_HPARAMS_KEYS = ("module_arguments", "hparams")


def checkpoint_io_or_default(checkpoint_io: CheckpointIO | None, where: str) -> CheckpointIO:
    if checkpoint_io is None:
        return TorchCheckpointIO()
    if not isinstance(checkpoint_io, CheckpointIO):
        raise TypeError(
            f"{where}(checkpoint_io={checkpoint_io!r}) must be a CheckpointIO instance (e.g. the plugin the "
            f"Trainer saved with), or None for a TorchCheckpointIO."
        )
    return checkpoint_io


def read_checkpoint(
    path: str | Path,
    map_location: Any = None,
    checkpoint_io: CheckpointIO | None = None,
    verify_integrity: bool | None = None,
    unused_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load, check and upgrade a checkpoint file or sharded folder through `checkpoint_io`, outside any Trainer.

    `verify_integrity` (None: the IO's own setting) and `unused_keys` (top-level keys whose tensors the
    caller does not use: their CRCs are skipped) reach a `TorchCheckpointIO`; other IOs get them only when
    set, as keyword arguments of their ``load_checkpoint``."""
    path = str(path)
    io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
    options: dict[str, Any] = {}
    if verify_integrity is not None:
        options["verify_integrity"] = verify_integrity
    if unused_keys and isinstance(io, TorchCheckpointIO):
        options["unused_keys"] = unused_keys
    raw = io.load_checkpoint(path, map_location=map_location, **options)
    return validated(raw, path)


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """``__init__``'s parameters without the instance, whatever it is called (``self``, ``obj``...)."""
    params = dict(inspect.signature(cls.__init__).parameters)
    first = next(iter(params), None)
    if first is not None and params[first].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        params.pop(first)
    return params


def build_from_hparams(
    cls: type,
    checkpoint: Mapping[str, Any],
    hparams_key: str,
    name_key: str,
    path: str,
    kwargs: dict[str, Any],
) -> Any:
    """Call ``cls(**hparams, **kwargs)``; kwargs win. Explains a missing ``__init__`` argument."""
    stored: dict[str, Any] = {}
    if hparams_key == fmt.HYPER_PARAMETERS:
        for key in LEGACY_HPARAMS_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                stored.update(checkpoint[key])
    stored.update(checkpoint.get(hparams_key) or {})
    # Dataclass hyperparameters are rebuilt if defined beside `cls` (or registered): see hparams.decode.
    hparams = decode(stored, frozenset({cls.__module__}))
    hparams_name = checkpoint.get(name_key)
    params = _init_parameters(cls)
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if hparams_name and hparams_name in params:
        # Document 004: the whole hparams object is one argument.
        # An AttributeDict reads both ways (`hparams.lr`, `hparams["lr"]`); a Namespace when annotated so.
        merged = {**hparams, **{k: v for k, v in kwargs.items() if k not in params}}
        as_namespace = params[hparams_name].annotation in (
            argparse.Namespace,
            "Namespace",
            "argparse.Namespace",
        )
        init_kwargs = {hparams_name: argparse.Namespace(**merged) if as_namespace else AttributeDict(merged)}
        init_kwargs.update({k: v for k, v in kwargs.items() if k in params and k != hparams_name})
    else:
        # Values the signature does not take (a parent's, say) are dropped; the caller's with a warning, as a
        # misspelt keyword would otherwise go unnoticed.
        init_kwargs = {k: v for k, v in hparams.items() if accepts_var_kw or k in params}
        unknown = [k for k in kwargs if not accepts_var_kw and k not in params]
        if unknown:
            warnings.warn(
                f"{cls.__name__}.load_from_checkpoint({path!r}): {unknown!r} are not arguments of "
                f"{cls.__name__}.__init__ (arguments: {sorted(params)}) and are ignored.",
                UserWarning,
                stacklevel=4,
            )
        init_kwargs.update({k: v for k, v in kwargs.items() if k not in unknown})
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in init_kwargs
    ]
    if missing:
        stored = sorted(hparams)
        raise TypeError(
            f"{cls.__name__}.load_from_checkpoint({path!r}): __init__ needs {missing!r}, which the checkpoint "
            f"does not store (stored hyperparameters: {stored}). Arguments left out by "
            f"`save_hyperparameters(ignore=...)` or never saved must be passed: "
            f"`{cls.__name__}.load_from_checkpoint(path, {', '.join(f'{m}=...' for m in missing)})`."
        )
    return cls(**init_kwargs)


def hparams_from_yaml(path: str | Path, checkpoint_io: CheckpointIO | None = None) -> dict[str, Any] | None:
    """The hyperparameters of an ``hparams_file`` (read through the IO); None, with a warning, when it does
    not exist."""
    io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
    if not io.exists(str(path)):
        warnings.warn(
            f"hparams_file {str(path)!r} does not exist: the hyperparameters stored in the checkpoint are used.",
            UserWarning,
            stacklevel=4,
        )
        return None
    data = hparams_from_text(io.load_text(str(path)))
    if not isinstance(data, dict):
        raise ValueError(
            f"hparams_file {str(path)!r} must hold a mapping of hyperparameters, got {type(data).__name__}"
        )
    return data


def _with_hparams_file(
    checkpoint: dict[str, Any], hparams_file: str | Path | None, io: CheckpointIO, key: str, name_key: str
) -> dict[str, Any]:
    hparams = hparams_from_yaml(hparams_file, io) if hparams_file is not None else None
    if hparams is None:
        return checkpoint
    checkpoint = dict(checkpoint)
    checkpoint[key] = hparams
    checkpoint[name_key] = None
    for legacy in LEGACY_HPARAMS_KEYS:
        checkpoint.pop(legacy, None)
    return checkpoint


def resolve_strict(module: Any, strict: bool | None) -> bool:
    """``strict=None`` means the module's ``strict_loading`` (True unless set); a conflict is an error."""
    own = getattr(module, "_strict_loading", None)
    if own is not None and strict is not None and bool(own) != strict:
        raise ValueError(
            f"load_from_checkpoint(strict={strict!r}) conflicts with {type(module).__name__}.strict_loading="
            f"{own!r}: set the same value for both, or leave strict=None to use strict_loading."
        )
    return bool(getattr(module, "strict_loading", True)) if strict is None else strict


def _warn_loose_keys(module: torch.nn.Module, state_dict: Mapping[str, Any], path: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        warnings.warn(
            f"strict=False: keys of {type(module).__name__} not in {path!r} keep their initial values: {missing[:10]}",
            UserWarning,
            stacklevel=4,
        )
    if unexpected:
        warnings.warn(
            f"strict=False: keys in {path!r} that {type(module).__name__} does not have are ignored: {unexpected[:10]}",
            UserWarning,
            stacklevel=4,
        )


def describe_mismatch(
    module: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool, path: str
) -> None:
    """Raise `StateMismatchError` listing the first mismatched keys, if the weights do not fit."""
    own = module.state_dict()
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    problems = []
    if shape_errors:
        problems.append(f"shape mismatch for {len(shape_errors)} key(s): " + "; ".join(shape_errors[:5]))
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:5]}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:5]}")
    if problems:
        hint = (
            "Build the module with the hyperparameters it was trained with"
            + (
                ""
                if not strict or not (missing or unexpected)
                else ", or pass strict=False to skip absent keys"
            )
            + "."
        )
        raise StateMismatchError(
            f"the weights in {path!r} do not fit {type(module).__name__}: "
            + " | ".join(problems)
            + f". {hint}",
            path,
        )


def load_module_from_checkpoint(
    cls: type,
    checkpoint_path: str | Path,
    map_location: Any = None,
    hparams_file: str | Path | None = None,
    strict: bool | None = None,
    checkpoint_io: CheckpointIO | None = None,
    verify_integrity: bool | None = None,
    **kwargs: Any,
) -> Any:
    path = str(checkpoint_path)
    io = checkpoint_io_or_default(checkpoint_io, f"{cls.__name__}.load_from_checkpoint")
    # The optimizer state is not used here: its records (two thirds of an Adam checkpoint) are not read.
    checkpoint = read_checkpoint(
        path, map_location, io, verify_integrity=verify_integrity, unused_keys=(fmt.OPTIMIZER_STATES,)
    )
    checkpoint = _with_hparams_file(checkpoint, hparams_file, io, fmt.HYPER_PARAMETERS, fmt.HPARAMS_NAME)
    model = build_from_hparams(cls, checkpoint, fmt.HYPER_PARAMETERS, fmt.HPARAMS_NAME, path, kwargs)
    strict = resolve_strict(model, strict)
    model.on_load_checkpoint(checkpoint)
    state_dict = checkpoint[fmt.STATE_DICT]
    if not state_dict:
        warnings.warn(f"the state dict in {path!r} contains no parameters.", UserWarning, stacklevel=3)
    describe_mismatch(model, state_dict, strict, path)
    if not strict:
        _warn_loose_keys(model, state_dict, path)
    try:
        model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:
        raise StateMismatchError(f"the weights in {path!r} do not fit {cls.__name__}: {err}", path) from err
    # Where the weights were loaded (map_location, or where they were saved when it is None): as Lightning
    # does, the module goes there, so a GPU-saved file loads onto the GPU on a machine that has one.
    device = next((t.device for t in state_dict.values() if isinstance(t, torch.Tensor)), None)
    if device is not None:
        model.to(device)
    elif map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model


def load_datamodule_from_checkpoint(
    cls: type,
    checkpoint_path: str | Path,
    map_location: Any = None,
    hparams_file: str | Path | None = None,
    checkpoint_io: CheckpointIO | None = None,
    verify_integrity: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Without stored datamodule hyperparameters the datamodule is built from its defaults (and ``kwargs``)."""
    path = str(checkpoint_path)
    io = checkpoint_io_or_default(checkpoint_io, f"{cls.__name__}.load_from_checkpoint")
    location = map_location if map_location is not None else "cpu"
    # Neither the weights nor the optimizer state are used here: their records are not read.
    unused = (fmt.STATE_DICT, fmt.OPTIMIZER_STATES)
    checkpoint = read_checkpoint(path, location, io, verify_integrity=verify_integrity, unused_keys=unused)
    checkpoint = _with_hparams_file(
        checkpoint, hparams_file, io, fmt.DATAMODULE_HYPER_PARAMETERS, fmt.DATAMODULE_HPARAMS_NAME
    )
    dm = build_from_hparams(
        cls, checkpoint, fmt.DATAMODULE_HYPER_PARAMETERS, fmt.DATAMODULE_HPARAMS_NAME, path, kwargs
    )
    if fmt.DATAMODULE_STATE in checkpoint:
        dm.load_state_dict(checkpoint[fmt.DATAMODULE_STATE])
    return dm
