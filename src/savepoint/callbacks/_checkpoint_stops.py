"""ModelCheckpoint's saves when training stops early: on a signal (preemption) and on an exception.

A mixin of `ModelCheckpoint`; both save through a save point like the periodic saves (``_save_point.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from savepoint.callbacks._save_point import save_point
from savepoint.trainer.preemption import Preempted

if TYPE_CHECKING:
    from savepoint.callbacks.model_checkpoint import ModelCheckpoint
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class CheckpointStops:
    """Mixed into `ModelCheckpoint`."""

    @property
    def saves_on_exception(self: ModelCheckpoint) -> bool:
        return bool(self.save_on_exception)

    def save_on_stop(self: ModelCheckpoint, trainer: Trainer) -> str | None:
        """Called on every rank when a signal stops training at a consistent point: save there and return
        the path to resume from. Without a monitor the file joins the top-k like a periodic save (newest
        ranks best, the one it replaces is removed); with a monitor a file ranked on a stale score would
        compete with real ones, so the stop writes ``last.ckpt`` (also when ``save_last`` is off, so that
        ``ckpt_path="last"`` finds it; it is replaced in place by later stops, never versioned)."""
        candidates = self._monitor_candidates(trainer)
        with save_point(trainer) as point:
            self._last_checkpoint_saved = ""
            if self.monitor is None and self.save_top_k != 0:
                self._plan_topk(trainer, candidates, point)
            written = self._last_checkpoint_saved
            if self.save_last or not written:
                written = self._last_name(trainer, candidates, point)
                self._plan(
                    trainer, point, written, {"last_model_path": written}, self._drop_previous_last(trainer)
                )
            self._last_global_step_saved = trainer.global_step
        return written

    def on_exception(
        self: ModelCheckpoint, trainer: Trainer, pl_module: TrainingModule, exception: BaseException
    ) -> None:
        """With ``save_on_exception=True``: save the last consistent state under the usual file name (and
        ``last.ckpt`` with ``save_last``), as Lightning names it, then let the exception propagate."""
        if (
            not self.save_on_exception
            or isinstance(exception, Preempted)  # the stop already saved through this callback
            or not trainer.can_save_on_exception
            or self._last_global_step_saved == trainer.global_step  # already saved at this step
        ):
            return
        candidates: dict[str, Any] = self._monitor_candidates(trainer)
        path = self.format_checkpoint_name(candidates)
        with save_point(trainer) as point:

            def saved() -> None:
                if trainer.is_global_zero:
                    print(
                        f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint "
                        f"to {path}"
                    )

            self._plan(trainer, point, path, {}, saved)
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = path
            self._plan_last(trainer, candidates, point)
