"""ModelCheckpoint's decisions as pure functions: no Trainer, no files, easy to test.

- `validate_config`: is this combination of arguments meaningful?
- `due_after_batch` / `due_after_epoch`: should a save happen now?
- `format_checkpoint_name` / `versioned_name`: what is the file called?
- `rank_key` / `select_top_k` / `top_k_update`: which files stay in the top-k?
- `strays_to_remove`: after a resume, which files left by an interrupted eviction go?
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

MODES = ("min", "max")


def validate_config(
    *,
    save_top_k: int,
    mode: str,
    monitor: str | None,
    every_n_train_steps: int | None,
    every_n_epochs: int | None,
    train_time_interval: timedelta | None,
    save_last: bool | str | None,
) -> None:
    """Raise `ValueError` naming the arguments at fault."""
    if isinstance(save_top_k, bool) or not isinstance(save_top_k, int) or save_top_k < -1:
        raise ValueError(
            f"ModelCheckpoint(save_top_k={save_top_k!r}) must be an int >= -1 (-1 keeps every checkpoint)."
        )
    if mode not in MODES:
        raise ValueError(f"ModelCheckpoint(mode={mode!r}) must be one of {MODES}.")
    if save_top_k > 1 and monitor is None:
        raise ValueError(
            f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None): keeping the {save_top_k} best checkpoints "
            f"needs a metric to rank them; pass `monitor=` or use save_top_k=1 (latest) or -1 (all)."
        )
    if save_last not in (None, True, False, "link"):
        raise ValueError(f"ModelCheckpoint(save_last={save_last!r}) must be True, False or 'link'.")
    intervals = {
        "every_n_train_steps": every_n_train_steps,
        "every_n_epochs": every_n_epochs,
        "train_time_interval": train_time_interval,
    }
    for name in ("every_n_train_steps", "every_n_epochs"):
        value = intervals[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"ModelCheckpoint({name}={value!r}) must be an int >= 0.")
    if train_time_interval is not None:
        if not isinstance(train_time_interval, timedelta):
            raise ValueError(
                f"ModelCheckpoint(train_time_interval={train_time_interval!r}) must be a datetime.timedelta."
            )
        if train_time_interval.total_seconds() < 0:
            raise ValueError(
                f"ModelCheckpoint(train_time_interval={train_time_interval!r}) must not be negative "
                f"(timedelta(0) saves at every check)."
            )
    active = [name for name, value in intervals.items() if value not in (None, 0)]
    if len(active) > 1:
        given = ", ".join(f"{name}={intervals[name]!r}" for name in active)
        raise ValueError(
            f"ModelCheckpoint({given}): these intervals are mutually exclusive; set only one of "
            f"every_n_train_steps, every_n_epochs and train_time_interval."
        )


# -- when ---------------------------------------------------------------------------------------------------


def due_after_batch(
    *,
    global_step: int,
    last_step_saved: int,
    every_n_train_steps: int,
    elapsed_s: float | None = None,
    last_time_saved_s: float | None = None,
    train_time_interval: timedelta | None = None,
) -> bool:
    """After a training batch: is a step- or time-triggered save due?"""
    if global_step == last_step_saved:
        return False  # nothing new since the last save (e.g. mid gradient accumulation)
    if every_n_train_steps >= 1 and global_step % every_n_train_steps == 0:
        return True
    if train_time_interval is not None and elapsed_s is not None:
        since = elapsed_s - (last_time_saved_s or 0.0)
        return since >= train_time_interval.total_seconds()
    return False


def due_after_epoch(*, epoch: int, every_n_epochs: int, global_step: int, last_step_saved: int) -> bool:
    """After validation or at the end of a training epoch: is an epoch-triggered save due?"""
    if every_n_epochs < 1 or global_step == last_step_saved:
        return False
    return (epoch + 1) % every_n_epochs == 0


# -- what is the file called --------------------------------------------------------------------------------

_GROUP = re.compile(r"\{([^{}:!]+)([^{}]*)\}")


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (RuntimeError, ValueError):
            return value
    return value


def format_checkpoint_name(
    template: str | None,
    metrics: Mapping[str, Any],
    *,
    prefix: str = "",
    auto_insert_metric_name: bool = True,
    join_char: str = "-",
    extension: str = ".ckpt",
    version: int | None = None,
    default_template: str = "{epoch}-{step}",
) -> str:
    """``"sample-{epoch:02d}-{val_loss:.2f}"`` with epoch=2, val_loss=0.3215 -> ``"sample-epoch=02-val_loss=0.32.ckpt"``.

    A metric missing from `metrics` formats as 0 (as the framework users know does). A ``/`` in a metric
    name becomes ``_`` in the file name, so names never create folders.
    """
    template = template if template else default_template

    def substitute(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2)
        value = _plain(metrics.get(name, 0))
        try:
            text = format(value, spec[1:]) if spec.startswith(":") else str(value)
        except (ValueError, TypeError):
            text = str(value)
        shown = name.replace("/", "_")
        return f"{shown}={text}" if auto_insert_metric_name else text

    name = _GROUP.sub(substitute, template).replace("/", "_")
    if prefix:
        name = f"{prefix}{join_char}{name}"
    if version is not None:
        name = f"{name}{join_char}v{version}"
    return name + extension


def versioned_name(
    make_name: Callable[[int | None], str],
    exists: Callable[[str], bool],
    start: int,
    reusable: str | None = None,
) -> str:
    """The first of ``make_name(None)``, ``make_name(start)``, ``make_name(start + 1)``... not taken by another file.

    `reusable` is a path this save may overwrite (one being replaced by this very save).
    """
    candidate = make_name(None)
    version = start
    while exists(candidate) and candidate != reusable:
        candidate = make_name(version)
        version += 1
    return candidate


# -- which files stay ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    path: str
    score: float
    order: int  # when it was saved: ties keep the earlier


def rank_key(candidate: Candidate, mode: str) -> tuple[int, float, int]:
    """Smaller is better. Non-finite scores rank below every finite one; ties go to the earlier file."""
    if not math.isfinite(candidate.score):
        return (1, 0.0, candidate.order)
    return (0, candidate.score if mode == "min" else -candidate.score, candidate.order)


def select_top_k(candidates: Sequence[Candidate], k: int, mode: str) -> list[Candidate]:
    """The `k` best candidates, best first (all of them for k = -1)."""
    ranked = sorted(candidates, key=lambda c: rank_key(c, mode))
    return ranked if k < 0 else ranked[:k]


@dataclass(frozen=True)
class TopKUpdate:
    keep_new: bool
    kept: tuple[Candidate, ...]  # best first, the new candidate included if kept
    evicted: tuple[Candidate, ...]


def top_k_update(current: Sequence[Candidate], new: Candidate, k: int, mode: str) -> TopKUpdate:
    """What happens to the top-k when `new` arrives: is it saved, and which files leave."""
    if k == 0:
        return TopKUpdate(False, tuple(select_top_k(current, -1, mode)), ())
    kept = select_top_k([*current, new], k, mode)
    keep_new = any(c.path == new.path and c.order == new.order for c in kept)
    kept_paths = {c.path for c in kept}
    evicted = tuple(c for c in current if c.path not in kept_paths)
    if not keep_new:
        return TopKUpdate(False, tuple(select_top_k(current, k, mode)), ())
    return TopKUpdate(True, tuple(kept), evicted)


def strays_to_remove(strays: Sequence[Candidate], kept: Sequence[Candidate], k: int, mode: str) -> list[str]:
    """Files this callback wrote and ranked that the restored top-k no longer lists: a crash came between
    committing a new file and removing the one it evicted. Those that rank strictly below every kept file of
    a full top-k go; any other stays (a file is never deleted on a guess, and a tie is not a ranking)."""
    if k < 0 or not kept or len(kept) < k:
        return []
    worst = max(rank_key(c, mode)[:2] for c in kept)
    return [c.path for c in strays if rank_key(c, mode)[:2] > worst]
