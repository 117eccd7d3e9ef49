"""The one check of a loaded checkpoint dict, shared by every load and by `verify`.

`load_from_checkpoint`, ``fit(ckpt_path=)`` and `verify` all call `validated`, so `verify` fails exactly
the files that loading refuses, with the same message. Only the file's own consistency is checked here
(types and versions); whether it fits a given module or Trainer is the caller's business.
"""

from __future__ import annotations

import argparse
from typing import Any

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import NotACheckpointError

# Top-level keys and the types a checkpoint of any supported version holds there.
_TOP_LEVEL: dict[str, tuple[type, ...]] = {
    fmt.EPOCH: (int,),
    fmt.GLOBAL_STEP: (int,),
    fmt.STATE_DICT: (dict,),
    fmt.OPTIMIZER_STATES: (list, tuple),
    fmt.LR_SCHEDULERS: (list, tuple),
    fmt.CALLBACKS: (dict,),
    fmt.LOOPS: (dict,),
    fmt.HYPER_PARAMETERS: (dict, argparse.Namespace),
    fmt.HPARAMS_NAME: (str, type(None)),
    fmt.DATAMODULE_HYPER_PARAMETERS: (dict, argparse.Namespace),
    fmt.DATAMODULE_HPARAMS_NAME: (str, type(None)),
    fmt.DATAMODULE_STATE: (dict,),
    fmt.RNG_STATES: (list, tuple),
}
# savepoint's own loop position (format_version >= 1).
_FIT_LOOP: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "batches_done": (int,),
    "phase": (str,),
    "global_step": (int,),
    "total_batches": (int,),
    "accumulated": (int,),
    "val_runs": (int,),
    "exact": (bool,),
    "data": (dict,),
    "metrics": (dict,),
    "data_state": (dict,),
    "elapsed_s": (int, float),
}
_PHASES = ("epoch_start", "batches", "after_batch", "epoch_end", "epoch_done")


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def _check_type(value: Any, types: tuple[type, ...], where: str, path: str) -> None:
    # bool is an int subclass: an int field holding True is as wrong as one holding "1"
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
        raise NotACheckpointError(
            f"{path!r}: {where} holds a {type(value).__name__} ({value!r:.60}), expected {_describe(types)}. "
            f"The file was not written by savepoint or Trainer.save_checkpoint, or was edited.",
            path,
        )


def check_layout(checkpoint: dict[str, Any], path: str) -> None:
    """Every known key of `checkpoint` holds the type its format says; `NotACheckpointError` otherwise."""
    for key, types in _TOP_LEVEL.items():
        if key in checkpoint:
            _check_type(checkpoint[key], types, f"checkpoint[{key!r}]", path)
    for i, state in enumerate(checkpoint.get(fmt.OPTIMIZER_STATES) or ()):
        _check_type(state, (dict,), f"checkpoint[{fmt.OPTIMIZER_STATES!r}][{i}]", path)
    for i, state in enumerate(checkpoint.get(fmt.LR_SCHEDULERS) or ()):
        _check_type(state, (dict,), f"checkpoint[{fmt.LR_SCHEDULERS!r}][{i}]", path)
    if fmt.format_version_of(checkpoint, path) < 1 or fmt.LOOPS not in checkpoint:
        return  # the older layout's loop state is the other framework's, replaced by the upgrade
    where = f"checkpoint[{fmt.LOOPS!r}][{fmt.FIT_LOOP!r}]"
    if fmt.FIT_LOOP not in checkpoint[fmt.LOOPS]:
        return
    fit_loop = checkpoint[fmt.LOOPS][fmt.FIT_LOOP]
    _check_type(fit_loop, (dict,), where, path)
    for key, types in _FIT_LOOP.items():
        if key in fit_loop:
            _check_type(fit_loop[key], types, f"{where}[{key!r}]", path)
    if fit_loop.get("phase", "epoch_start") not in _PHASES:
        raise NotACheckpointError(
            f"{path!r}: {where}['phase'] is {fit_loop['phase']!r}, expected one of {list(_PHASES)}. The file "
            f"was not written by this savepoint, or was edited.",
            path,
        )


def validated(raw: Any, path: str) -> dict[str, Any]:
    """`raw` (what a file unpickled to) as a checkpoint of the current format, or a typed error naming `path`."""
    checkpoint = fmt.check_is_checkpoint(raw, path)
    fmt.format_version_of(checkpoint, path)  # a bad version is named before any other key
    check_layout(checkpoint, path)
    return fmt.upgrade_checkpoint(checkpoint, path)
