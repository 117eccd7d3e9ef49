"""ModelCheckpoint's saves: rank the new state, plan its files into the save point, commit, remove.

A mixin of `ModelCheckpoint`. A save plans files (`_plan_topk`, `_plan_last`) into the save point of the
current round of hooks (``_save_point.py``): each planned file carries the bookkeeping that holds once it
exists (``_pending``, which ``state_dict`` merges, so every file of the save point records it), and what to
do right after it is written (remove the file it evicted). The bookkeeping changes when the save point
commits; if it is not written, nothing changes. With an `AsyncCheckpointIO` the write journal puts the
bookkeeping back at the end of fit if a queued write failed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.callbacks._checkpoint_reconcile import same_file
from savepoint.callbacks._save_point import SavePoint, save_point

if TYPE_CHECKING:
    from savepoint.callbacks.model_checkpoint import ModelCheckpoint
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


# What ModelCheckpoint reports about its files; restored after a background save that failed.
_BOOKKEEPING = (
    "_ranked",
    "best_model_path",
    "best_model_score",
    "kth_best_model_path",
    "kth_value",
    "last_model_path",
    "current_score",
)


class CheckpointSaves:
    """Mixed into `ModelCheckpoint`."""

    def _score(self: ModelCheckpoint, trainer: Trainer, candidates: dict[str, Any]) -> torch.Tensor | None:
        if self.monitor is None:
            return None
        if self.monitor not in candidates:
            available = sorted(k for k in candidates if k not in ("epoch", "step"))
            raise KeyError(
                f"ModelCheckpoint(monitor={self.monitor!r}) found no metric {self.monitor!r} when a save was due. "
                f"Logged metrics: {available} (plus 'epoch' and 'step'). Log it with "
                f"`self.log({self.monitor!r}, value)` in the TrainingModule, or change `monitor`."
            )
        value = candidates[self.monitor]
        score = (
            value.detach().float().cpu() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        )
        if not math.isfinite(float(score)) and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"ModelCheckpoint: monitored {self.monitor!r} is {float(score)}; a non-finite value never ranks "
                f"as best (its checkpoint is kept only while the top-k has room).",
                UserWarning,
                stacklevel=2,
            )
        if math.isnan(float(score)):
            # Stored as the worst value of the mode, as users know it: best_model_score is never NaN.
            score = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        return score

    def _save_all(self: ModelCheckpoint, trainer: Trainer, candidates: dict[str, Any]) -> None:
        with save_point(trainer) as point:
            self._last_checkpoint_saved = ""
            planned = self._plan_topk(trainer, candidates, point)
            planned = self._plan_last(trainer, candidates, point) or planned
            self._last_global_step_saved = trainer.global_step
            if planned:
                point.on_commit(lambda: self._notify_loggers(trainer))

    def _notify_loggers(self: ModelCheckpoint, trainer: Trainer) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    def _candidates(self: ModelCheckpoint) -> list[policy.Candidate]:
        return [
            policy.Candidate(path, float(score), self._order.get(path, i))
            for i, (path, score) in enumerate(self._ranked.items())
        ]

    def _plan_topk(
        self: ModelCheckpoint, trainer: Trainer, candidates: dict[str, Any], point: SavePoint
    ) -> bool:
        """Plan a top-k file for this save point if the new score ranks; True if one was planned."""
        if self.save_top_k == 0:
            return False
        score = self._score(trainer, candidates)
        self.current_score = score
        if self.monitor is None:
            # No metric: the newest file ranks best (save_top_k=1 keeps the latest, -1 keeps all).
            score_tensor, mode = torch.tensor(float(trainer.global_step)), "max"
        else:
            score_tensor, mode = score, self.mode  # type: ignore[assignment]
        current = self._candidates()
        k = self.save_top_k
        order = self._next_order
        probe = policy.Candidate("\0new", float(score_tensor), order)
        decision = policy.top_k_update(current, probe, k, mode)
        if not decision.keep_new:
            if self.verbose:
                _info(
                    trainer,
                    f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor!r} was not in top {k}",
                )
            return False
        reusable = decision.evicted[0].path if decision.evicted else None
        path = self._free_name(trainer, candidates, None, reusable, point)
        new = policy.Candidate(path, float(score_tensor), order)
        # Ranked best first; an older entry of the same name (no version counter) is the file being replaced.
        kept = [new if c.path == probe.path else c for c in decision.kept if c.path != path]
        evicted = [c.path for c in decision.evicted if c.path != path]
        new_public = score if score is not None else score_tensor
        new_best_k = {
            c.path: new_public if c is new else self._ranked[c.path]
            for c in sorted(kept, key=lambda c: c.order)
        }
        best, worst = kept[0], kept[-1]
        after = {
            "_ranked": new_best_k,
            "best_model_path": best.path,
            "best_model_score": new_best_k[best.path] if self.monitor else None,
            "kth_best_model_path": worst.path if self.monitor else "",
            "kth_value": new_best_k[worst.path] if self.monitor else None,
            "current_score": score,
        }
        self._next_order += 1
        self._last_checkpoint_saved = path

        def written() -> None:
            self._order[path] = order
            if self.verbose:
                shown = f"{self.monitor!r} reached {float(score):.5f}" if score is not None else "saved"
                _info(
                    trainer, f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {shown}, {path!r}"
                )
            for old in evicted:
                self._remove(trainer, old)

        self._plan(trainer, point, path, after, written)
        return True

    def _plan_last(
        self: ModelCheckpoint, trainer: Trainer, candidates: dict[str, Any], point: SavePoint
    ) -> bool:
        """Plan ``last.ckpt`` (with ``save_last``): the same state as every other file of this save point."""
        if not self.save_last:
            return False
        path = self._last_name(trainer, candidates, point)
        self._plan(trainer, point, path, {"last_model_path": path}, self._drop_previous_last(trainer))
        return True

    def _drop_previous_last(self: ModelCheckpoint, trainer: Trainer) -> Callable[[], None]:
        """Once a new last file is written: remove the previous one, unless it is still in the top-k."""
        previous = self.last_model_path

        def written() -> None:
            if previous and previous != self._now("last_model_path") and previous not in self._now("_ranked"):
                self._remove(trainer, previous)

        return written

    def _last_name(
        self: ModelCheckpoint, trainer: Trainer, candidates: dict[str, Any], point: SavePoint
    ) -> str:
        return self._free_name(
            trainer, candidates, self.CHECKPOINT_NAME_LAST, self.last_model_path or None, point
        )

    def _plan(
        self: ModelCheckpoint,
        trainer: Trainer,
        point: SavePoint,
        path: str,
        changes: dict[str, Any],
        written: Callable[[], None] | None = None,
    ) -> None:
        """Plan `path` in the save point. `changes` to the bookkeeping hold once it is written: every file of
        the save point records them (``state_dict`` merges them), and they are applied when it commits.
        `written` runs as soon as this file is written (before the next file of the save point)."""
        if self._pending is None:
            self._pending, self._planned = {}, []
            point.on_commit(self._commit)
            point.on_abort(self._drop_plan)
        self._remember(trainer, path)
        self._planned.append(path)
        self._pending.update(changes)
        point.add(path, self.save_weights_only, written)

    def _commit(self: ModelCheckpoint) -> None:
        pending = self._pending or {}
        self._pending, self._planned = None, []
        self._apply(pending)

    def _drop_plan(self: ModelCheckpoint) -> None:
        """The save point was not written: the bookkeeping stays as it was."""
        for path in reversed(self._planned):
            self._journal.forget(path)
        self._pending, self._planned = None, []

    def _now(self: ModelCheckpoint, key: str) -> Any:
        """`key` of the bookkeeping as it stands, or as it will once the save point being written commits."""
        pending = self._pending or {}
        return pending[key] if key in pending else getattr(self, key)

    def _apply(self: ModelCheckpoint, after: dict[str, Any]) -> None:
        for key, value in after.items():
            setattr(self, key, value)

    def _remove(self: ModelCheckpoint, trainer: Trainer, path: str) -> None:
        if path == self._now("last_model_path") or path in self._now("_ranked"):
            return
        if trainer.ckpt_path and same_file(path, trainer.ckpt_path):
            return  # the checkpoint this run resumed from is the user's to delete, even in this folder
        if self.verbose:
            _info(trainer, f"Removing checkpoint {path!r}")
        trainer.strategy.remove_checkpoint(path)

    # -- bookkeeping of background saves --------------------------------------------------------------------

    def _remember(self: ModelCheckpoint, trainer: Trainer, path: str) -> None:
        """The state to go back to if the write of `path` never lands: as it is, with the changes of the
        files planned before it in this save point (they may have landed)."""
        before = {key: getattr(self, key) for key in _BOOKKEEPING}
        before.update(self._pending or {})
        before["_ranked"] = dict(before["_ranked"])
        self._journal.remember(trainer.strategy.checkpoint_io, path, before)

    def teardown(self: ModelCheckpoint, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        """After a failed background save, the best/last paths and the top-k name only files that exist."""
        before = self._journal.state_before_failure(trainer.strategy.checkpoint_io)
        if before is not None:
            self._apply(before)


def _info(trainer: Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(message)
