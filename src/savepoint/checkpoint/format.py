"""The checkpoint layout: key names, the format version, and upgrades from older layouts.

Key names reuse those of the format users already know, so their tools keep working. The Trainer
assembles a dict with these keys (`trainer/checkpointing.py`); this module owns the names and versions.

Version history:
    0  the layout of the framework users know (``pytorch-lightning_version`` key, no ``format_version``):
       weights, optimizers, schedulers, callbacks, epoch and step, but no savepoint loop or RNG state.
    1  savepoint's layout: adds ``loops["fit_loop"]`` (exact position), ``rng_states``, ``grad_scaler``,
       ``datamodule_state``, ``savepoint_version`` and ``format_version``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from savepoint.checkpoint.errors import FormatVersionError, NotACheckpointError

FORMAT_VERSION = 1

EPOCH = "epoch"
GLOBAL_STEP = "global_step"
STATE_DICT = "state_dict"
OPTIMIZER_STATES = "optimizer_states"
LR_SCHEDULERS = "lr_schedulers"
CALLBACKS = "callbacks"
LOOPS = "loops"
FIT_LOOP = "fit_loop"
HYPER_PARAMETERS = "hyper_parameters"
HPARAMS_NAME = "hparams_name"
DATAMODULE_HYPER_PARAMETERS = "datamodule_hyper_parameters"
DATAMODULE_HPARAMS_NAME = "datamodule_hparams_name"
DATAMODULE_STATE = "datamodule_state"
GRAD_SCALER = "grad_scaler"
RNG_STATES = "rng_states"
SAVEPOINT_VERSION = "savepoint_version"
FORMAT_VERSION_KEY = "format_version"
WEIGHTS_ONLY = "weights_only"

# Keys that only a full training checkpoint carries; their absence means a weights-only file.
TRAINING_STATE_KEYS = (OPTIMIZER_STATES, LR_SCHEDULERS, LOOPS)
_LEGACY_VERSION_KEYS = ("pytorch-lightning_version", "lightning_version")


def format_version_of(checkpoint: Mapping[str, Any], path: str = "<checkpoint>") -> int:
    """The format version a checkpoint dict was written with (0 for the layout users already know).

    Raises `FormatVersionError` naming `path` for a version that is not a whole number >= 0."""
    if FORMAT_VERSION_KEY not in checkpoint:
        return 0
    version = checkpoint[FORMAT_VERSION_KEY]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise FormatVersionError(
            f"{path!r} has format_version {version!r}; expected a whole number from 0 to {FORMAT_VERSION}. "
            f"The file was not written by savepoint or was edited; resume from another checkpoint.",
            path,
        )
    return version


def is_weights_only(checkpoint: Mapping[str, Any]) -> bool:
    if checkpoint.get(WEIGHTS_ONLY):
        return True
    return OPTIMIZER_STATES not in checkpoint


def check_is_checkpoint(obj: Any, path: str) -> dict[str, Any]:
    """Raise `NotACheckpointError` unless `obj` is a checkpoint dict with a ``state_dict``."""
    if not isinstance(obj, dict):
        raise NotACheckpointError(
            f"{path!r} is not a checkpoint: it holds a {type(obj).__name__}, expected a dict with a "
            f"{STATE_DICT!r} key. A file saved with `torch.save(model.state_dict())` is a bare state dict: "
            f"load it with `model.load_state_dict(torch.load(path))` instead.",
            path,
        )
    if STATE_DICT not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise NotACheckpointError(
            f"{path!r} is not a checkpoint: it has no {STATE_DICT!r} key (found {keys or 'no keys'}). "
            f"Expected a file written by `Trainer.save_checkpoint` or `ModelCheckpoint`.",
            path,
        )
    return obj


def _upgrade_0_to_1(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The layout users already know: keep what maps one to one, mark the loop position as unknown.

    Without savepoint's loop state the exact batch position is unknown; the checkpoint resumes at the
    start of the epoch after ``epoch`` (the behaviour that layout had), which the Trainer warns about.
    """
    out = dict(checkpoint)
    for key in _LEGACY_VERSION_KEYS:
        out.pop(key, None)
    loops = out.get(LOOPS)
    if not (isinstance(loops, dict) and isinstance(loops.get(FIT_LOOP), dict) and "exact" in loops[FIT_LOOP]):
        if OPTIMIZER_STATES in out:
            out[LOOPS] = {
                FIT_LOOP: {
                    "exact": False,
                    "epoch": int(out.get(EPOCH, 0)),
                    "global_step": int(out.get(GLOBAL_STEP, 0)),
                    "phase": "epoch_done",
                }
            }
        else:
            out.pop(LOOPS, None)
    out.setdefault(CALLBACKS, {})
    out[FORMAT_VERSION_KEY] = 1
    return out


# UPGRADES[v] turns a version-v checkpoint into version v + 1.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _upgrade_0_to_1}


def upgrade_checkpoint(checkpoint: dict[str, Any], path: str = "<checkpoint>") -> dict[str, Any]:
    """Bring a checkpoint dict from any older format version to `FORMAT_VERSION`, one step at a time."""
    version = format_version_of(checkpoint, path)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path!r} has format_version {version}, but this savepoint reads up to {FORMAT_VERSION}. "
            f"Upgrade savepoint (`pip install -U savepoint`) to load it.",
            path,
        )
    while version < FORMAT_VERSION:
        checkpoint = UPGRADES[version](checkpoint)
        version += 1
    return checkpoint
