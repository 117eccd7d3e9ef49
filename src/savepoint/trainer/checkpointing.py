"""Assemble the checkpoint dict from the Trainer's state, restore from one, and resolve ``ckpt_path``.

The Trainer never opens, lists or stats files: reads and writes go through the strategy and its
CheckpointIO, and the ``"last"``/``"best"`` search asks the CheckpointIO to list the run folders and their
checkpoints, so it works the same on local disks, object stores (``s3://``, ``memory://``) and custom IOs.
"last" is the newest checkpoint training can resume from: files that fail to load, weights-only exports
and files of an unknown format version are skipped, each with a warning naming it.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch

from savepoint._version import __version__
from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    StateMismatchError,
    WeightsOnlyCheckpointError,
)
from savepoint.checkpoint.validate import validated
from savepoint.hparams import encode_hparams
from savepoint.plugins.io._fs import join
from savepoint.plugins.io.checkpoint_io import CheckpointEntry
from savepoint.strategies.strategy import Strategy

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer

_SAFE_LEAVES = (
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type(None),
    torch.Tensor,
    torch.dtype,
    torch.device,
    torch.Size,
)


def check_weights_only_safe(obj: Any, where: str = "checkpoint") -> None:
    """Raise `TypeError` naming the key path of any value ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _SAFE_LEAVES):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, _SAFE_LEAVES):
                raise TypeError(
                    f"{where} has a key of type {type(key).__name__} ({key!r}); use str or int keys."
                )
            check_weights_only_safe(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, list | tuple | set | frozenset):
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            raise TypeError(f"{where} is a namedtuple ({type(obj).__name__}); store a dict or a plain tuple.")
        for i, value in enumerate(obj):
            check_weights_only_safe(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which a checkpoint cannot hold: "
        f"checkpoints load with torch.load(weights_only=True), so only tensors, numbers, strings, bools, None "
        f"and lists/tuples/dicts of them are allowed. Convert it (e.g. to a dict) in the hook that added it."
    )


def dump_checkpoint(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    module = trainer.training_module
    strategy = trainer.strategy
    loop = trainer._fit_loop
    checkpoint: dict[str, Any] = {
        fmt.EPOCH: trainer.current_epoch,
        fmt.GLOBAL_STEP: trainer.global_step,
        fmt.SAVEPOINT_VERSION: __version__,
        fmt.FORMAT_VERSION_KEY: fmt.FORMAT_VERSION,
        fmt.STATE_DICT: strategy.model_state_dict(),
    }
    if weights_only:
        checkpoint[fmt.WEIGHTS_ONLY] = True
    else:
        checkpoint[fmt.LOOPS] = {fmt.FIT_LOOP: loop.state_dict()}
        checkpoint[fmt.CALLBACKS] = {
            cb.state_key: state for cb in trainer.callbacks if (state := cb.state_dict())
        }
        checkpoint[fmt.OPTIMIZER_STATES] = [strategy.optimizer_state(opt) for opt in trainer.optimizers]
        checkpoint[fmt.LR_SCHEDULERS] = [
            config.scheduler.state_dict() for config in trainer.lr_scheduler_configs
        ]
        scaler_state = trainer._precision.state_dict()
        if scaler_state is not None:
            checkpoint[fmt.GRAD_SCALER] = scaler_state
        checkpoint[fmt.RNG_STATES] = strategy.all_gather_object(loop.rank_state())
        dm = trainer.datamodule
        if dm is not None:
            checkpoint[fmt.DATAMODULE_STATE] = dm.state_dict()
    if module.hparams:
        checkpoint[fmt.HYPER_PARAMETERS] = encode_hparams(module.hparams, type(module).__name__)
        checkpoint[fmt.HPARAMS_NAME] = module._hparams_name
    dm = trainer.datamodule
    if dm is not None and dm.hparams:
        checkpoint[fmt.DATAMODULE_HYPER_PARAMETERS] = encode_hparams(dm.hparams, type(dm).__name__)
        checkpoint[fmt.DATAMODULE_HPARAMS_NAME] = dm._hparams_name
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    check_weights_only_safe(checkpoint)
    return checkpoint


def load_checkpoint(trainer: Trainer, path: str) -> dict[str, Any]:
    """Read, check and upgrade a checkpoint through the strategy (and so its CheckpointIO) on every rank.

    The checkpoint "last" already read to check it can be resumed from is not read a second time (one
    process, a strategy that loads the plain way: the same read through the same CheckpointIO)."""
    found, trainer._found_checkpoint = getattr(trainer, "_found_checkpoint", None), None
    if found is not None and found[0] == path:
        return found[1]
    raw = trainer.strategy.load_checkpoint(path, map_location=trainer.strategy.root_device)
    return validated(raw, path)


def load_weights(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """The module's weights, with mismatches listed key by key. A sharded strategy that defers its tensors
    to a sharded load gets an empty ``state_dict`` here and checks the keys itself."""
    from savepoint._loading import describe_mismatch

    strict = trainer.training_module.strict_loading
    if checkpoint[fmt.STATE_DICT]:
        describe_mismatch(trainer.training_module, checkpoint[fmt.STATE_DICT], strict, path)
    trainer.strategy.load_model_state_dict(checkpoint[fmt.STATE_DICT], strict=strict)


def restore_modules_and_callbacks(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """Weights, datamodule and callbacks: before optimizers exist."""
    if fmt.is_weights_only(checkpoint):
        raise WeightsOnlyCheckpointError(
            f"{path!r} is a weights-only checkpoint (saved with save_weights_only=True or "
            f"save_checkpoint(weights_only=True)): it has no optimizer or loop state to resume training from. "
            f"Load the weights with `{type(trainer.training_module).__name__}.load_from_checkpoint({path!r})` and "
            f"call fit() without ckpt_path, or resume from a full checkpoint.",
            path,
        )
    module = trainer.training_module
    module.on_load_checkpoint(checkpoint)
    load_weights(trainer, checkpoint, path)
    dm = trainer.datamodule
    if dm is not None and fmt.DATAMODULE_STATE in checkpoint:
        dm.load_state_dict(checkpoint[fmt.DATAMODULE_STATE])
    stored = dict(checkpoint.get(fmt.CALLBACKS) or {})
    for cb in trainer.callbacks:
        state = stored.pop(cb.state_key, None)
        if state is not None:
            cb.load_state_dict(state)
        cb.on_load_checkpoint(trainer, module, checkpoint)
    if stored:
        warnings.warn(
            f"{path!r} holds state for callback(s) {sorted(stored)} that this Trainer does not have; their state "
            f"is ignored. Add the same callbacks (same configuration) to Trainer(callbacks=[...]) to restore it.",
            UserWarning,
            stacklevel=4,
        )


def _same_count(
    checkpoint: dict[str, Any], key: str, configured: list[Any], what: str, path: str
) -> list[Any]:
    stored = checkpoint.get(key, [])
    if len(stored) != len(configured):
        raise CheckpointError(
            f"{path!r} holds {len(stored)} {what} state(s) but configure_optimizers() returned {len(configured)}; "
            f"resume with the same {what} configuration.",
            path,
        )
    return stored


def _group_sizes(groups: Any) -> list[int]:
    return [len(g.get("params", ())) for g in groups or () if isinstance(g, dict)]


def load_optimizer_state(
    trainer: Trainer, index: int, opt: torch.optim.Optimizer, state: Any, path: str
) -> None:
    """Load one optimizer's state; a parameter-group mismatch names the file and says what differs."""
    try:
        trainer.strategy.load_optimizer_state_dict(opt, state)
    except ValueError as err:
        saved = _group_sizes(state.get("param_groups") if isinstance(state, dict) else None)
        now = [len(g["params"]) for g in opt.param_groups]
        raise StateMismatchError(
            f"{path!r}: optimizer {index} ({type(opt).__name__}) does not match the checkpoint: the checkpoint has "
            f"{len(saved)} parameter group(s) of {saved} parameter(s), the optimizer {len(now)} of {now} "
            f"({err}). Create the same parameter groups before the state is restored: in "
            f"configure_optimizers() or in an on_fit_start hook (parameter groups added later, e.g. when a "
            f"backbone is unfrozen at some epoch, must be added in on_fit_start when resuming).",
            path,
        ) from err


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """Optimizers, schedulers, scaler, loop position and RNG: after optimizers exist and ``on_fit_start`` ran."""
    optimizer_states = _same_count(checkpoint, fmt.OPTIMIZER_STATES, trainer.optimizers, "optimizer", path)
    for index, (opt, state) in enumerate(zip(trainer.optimizers, optimizer_states)):
        load_optimizer_state(trainer, index, opt, state, path)
    scheduler_states = _same_count(
        checkpoint, fmt.LR_SCHEDULERS, trainer.lr_scheduler_configs, "LR scheduler", path
    )
    for config, state in zip(trainer.lr_scheduler_configs, scheduler_states):
        config.scheduler.load_state_dict(state)
    trainer._precision.load_state_dict(checkpoint.get(fmt.GRAD_SCALER))
    fit_state = (checkpoint.get(fmt.LOOPS) or {}).get(fmt.FIT_LOOP) or _position_from_counters(checkpoint)
    rng_states = checkpoint.get(fmt.RNG_STATES) or []
    rank = trainer.global_rank
    rank_state = None
    if rng_states:
        if len(rng_states) != trainer.world_size:
            warnings.warn(
                f"{path!r} was saved by {len(rng_states)} process(es) and resumes on {trainer.world_size}: RNG states "
                f"are reused by rank modulo {len(rng_states)}, so the run is not bit-identical to an uninterrupted one.",
                UserWarning,
                stacklevel=4,
            )
        rank_state = rng_states[rank % len(rng_states)]
    trainer._fit_loop.load_state_dict(fit_state, rank_state)
    trainer._fit_loop.pos.global_step = int(checkpoint.get(fmt.GLOBAL_STEP, fit_state.get("global_step", 0)))
    if not fit_state.get("exact", True):
        warnings.warn(
            f"{path!r} has no savepoint loop state (written by another tool or an older format): training "
            f"resumes at the start of epoch {trainer._fit_loop.pos.epoch}, not at the exact batch.",
            UserWarning,
            stacklevel=4,
        )
    trainer._fit_loop.close_restored_epoch()


def _position_from_counters(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """No loop state at all: resume at the epoch boundary after the stored ``epoch`` (with a warning)."""
    return {
        "exact": False,
        "epoch": int(checkpoint.get(fmt.EPOCH, 0)),
        "global_step": int(checkpoint.get(fmt.GLOBAL_STEP, 0)),
        "phase": "epoch_done",
    }


# -- ckpt_path="last" / "best" -----------------------------------------------------------------------------------


def _search_folders(trainer: Trainer) -> list[str]:
    """Where "last" looks: the root's ``checkpoints``, every run's ``checkpoints``, every ModelCheckpoint dirpath."""
    io = trainer.strategy.checkpoint_io
    root = trainer.default_root_dir
    folders = [join(root, "checkpoints")]
    folders += [join(run, "checkpoints") for run in io.list_folders(join(root, "runs"))]
    folders += [cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    unique: dict[str, None] = {}
    for folder in folders:
        unique.setdefault(folder if "://" in folder else os.path.abspath(folder), None)
    return list(unique)


def _natural(name: str) -> list[Any]:
    """``step=96`` before ``step=100``: digits compare as numbers."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def _newest_first(entries: list[CheckpointEntry]) -> list[CheckpointEntry]:
    # Object stores keep modification times to the second: within one second, a "last" file is the newest
    # save point (it is written after the top-k file of the same save), then the highest step in the name.
    def key(entry: CheckpointEntry) -> tuple[Any, ...]:
        name = entry.path.rstrip("/").rsplit("/", 1)[-1]
        return (entry.mtime, name.startswith("last"), _natural(name))

    return sorted(entries, key=key, reverse=True)


def _resumable(trainer: Trainer, entry: CheckpointEntry) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint at `entry` if training can resume from it, else None and the reason."""
    io = trainer.strategy.checkpoint_io
    try:
        if entry.is_dir:
            raw = io.load_sharded_meta(entry.path)
        else:
            raw = io.load_checkpoint(entry.path, map_location="cpu")
        checkpoint = validated(raw, entry.path)  # the same validation as every load
    except (CheckpointError, OSError) as err:
        return None, f"it fails to load: {err}"
    if fmt.is_weights_only(checkpoint):
        return None, "it is a weights-only checkpoint (no optimizer or loop state to resume from)"
    return checkpoint, ""


def find_last(trainer: Trainer) -> tuple[str | None, dict[str, Any] | None, list[str]]:
    """The newest checkpoint of this root's runs that training can resume from, read through the
    CheckpointIO; the checkpoint itself; and the newer ones skipped (each with a warning)."""
    io = trainer.strategy.checkpoint_io
    entries = [entry for folder in _search_folders(trainer) for entry in io.list_checkpoints(folder)]
    skipped = []
    for entry in _newest_first(list({e.path: e for e in entries}.values())):
        checkpoint, reason = _resumable(trainer, entry)
        if checkpoint is not None:
            return entry.path, checkpoint, skipped
        warnings.warn(f"ckpt_path='last': skipping {entry.path!r}: {reason}", UserWarning, stacklevel=4)
        skipped.append(entry.path)
    return None, None, skipped


def _reusable(trainer: Trainer, path: str) -> bool:
    strategy = trainer.strategy
    plain_load = type(strategy).load_checkpoint is Strategy.load_checkpoint
    return (
        plain_load and not strategy.is_distributed and not strategy.checkpoint_io.is_sharded_checkpoint(path)
    )


def resolve_ckpt_path(trainer: Trainer, ckpt_path: str | os.PathLike | None) -> str | None:
    if ckpt_path is None:
        return None
    ckpt_path = os.fspath(ckpt_path)
    if ckpt_path == "last":
        return _resolve_last(trainer)
    if ckpt_path == "best":
        return _resolve_best(trainer)
    return ckpt_path


def _resolve_last(trainer: Trainer) -> str | None:
    path = None
    if trainer.is_global_zero:
        path, checkpoint, skipped = find_last(trainer)
        if path is None:
            path = "" if not skipped else f"!{skipped[0]}"
        elif _reusable(trainer, path):
            trainer._found_checkpoint = (path, checkpoint)  # type: ignore[assignment]
    path = trainer.strategy.broadcast(path)
    where = join(join(trainer.default_root_dir, "runs"), "*/checkpoints")
    if not path:
        # The first launch of a job that always passes ckpt_path="last" (elastic restarts, requeues).
        warnings.warn(
            f'fit(ckpt_path="last"): no checkpoint under {trainer.default_root_dir!r} (looked in {where!r}, '
            f"the root's 'checkpoints' folder and every ModelCheckpoint dirpath); training starts from scratch.",
            UserWarning,
            stacklevel=5,
        )
        return None
    if path.startswith("!"):
        raise CheckpointNotFoundError(
            f"ckpt_path='last': no checkpoint to resume from under {trainer.default_root_dir!r} (looked in "
            f"{where!r}, the root's 'checkpoints' folder and every ModelCheckpoint dirpath): every candidate failed to "
            f"load or cannot be resumed from (each was skipped with a warning); the newest was {path[1:]!r}. Repair or remove the "
            f"files, or pass the path of a checkpoint.",
            trainer.default_root_dir,
        )
    return path


def _resolve_best(trainer: Trainer) -> str:
    best = ""
    for cb in trainer.checkpoint_callbacks:
        best = getattr(cb, "best_model_path", "") or best
    if not best and trainer.is_global_zero:
        _, last, _ = find_last(trainer)
        stored = (last or {}).get(fmt.CALLBACKS) or {}
        best = next(
            (
                state["best_model_path"]
                for key, state in stored.items()
                if key.startswith("ModelCheckpoint") and state.get("best_model_path")
            ),
            "",
        )
    best = trainer.strategy.broadcast(best)
    if not best:
        raise CheckpointNotFoundError(
            "ckpt_path='best': no best checkpoint is known (no ModelCheckpoint has saved one in this root). "
            "Pass a path, or 'last'.",
            trainer.default_root_dir,
        )
    return best
