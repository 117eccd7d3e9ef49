"""`Timer`: stop training after a time budget (``Trainer(max_time=...)`` adds one), as Lightning's.

The elapsed training time is part of the checkpoint (``state_dict``), so a resumed run counts the time
the earlier attempts spent: the budget is for the whole run, not per process.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from savepoint.callbacks.callback import Callback
from savepoint.utilities.durations import parse_max_time

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer

_STAGES = ("train", "sanity_check", "validate", "test", "predict")


class Timer(Callback):
    """Time each stage; with a `duration`, ask the Trainer to stop once training has used it up.

    ``duration``: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict of its arguments. ``interval``: check after
    every training ``"step"`` or at every ``"epoch"`` end. The stop is a normal one: validation runs and the
    checkpoint callbacks save as at any other stop.
    """

    def __init__(
        self,
        duration: str | timedelta | dict[str, int] | None = None,
        interval: str = "step",
        verbose: bool = True,
    ) -> None:
        if interval not in ("step", "epoch"):
            raise ValueError(f"Timer(interval={interval!r}) must be 'step' or 'epoch'.")
        parsed = parse_max_time(duration)
        self._duration = parsed.total_seconds() if parsed is not None else None
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset = 0.0

    # -- queries ----------------------------------------------------------------------------------------------

    def start_time(self, stage: str = "train") -> float | None:
        return self._start_time[str(getattr(stage, "value", stage))]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end_time[str(getattr(stage, "value", stage))]

    def time_elapsed(self, stage: str = "train") -> float:
        stage = str(getattr(stage, "value", stage))
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + (end if end is not None else time.monotonic()) - start

    def time_remaining(self, stage: str = "train") -> float | None:
        return self._duration - self.time_elapsed(stage) if self._duration is not None else None

    # -- hooks ------------------------------------------------------------------------------------------------

    def _start(self, stage: str) -> None:
        self._start_time[stage], self._end_time[stage] = time.monotonic(), None

    def _end(self, stage: str) -> None:
        self._end_time[stage] = time.monotonic()

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start("train")

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._end("train")

    def on_validation_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start("sanity_check" if trainer.sanity_checking else "validate")

    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._end("sanity_check" if trainer.sanity_checking else "validate")

    def on_test_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start("test")

    def on_test_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._end("test")

    def on_predict_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start("predict")

    def on_predict_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._end("predict")

    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._duration is not None and self.time_elapsed("train") >= self._duration:
            trainer.should_stop = True  # resumed with the budget already spent

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check_time_remaining(trainer)

    def _check_time_remaining(self, trainer: Trainer) -> None:
        assert self._duration is not None
        should_stop = trainer.strategy.broadcast(self.time_elapsed("train") >= self._duration)
        if should_stop and not trainer.should_stop:
            elapsed = timedelta(seconds=int(self.time_elapsed("train")))
            trainer.stop_reason = f"time limit reached ({elapsed} of {timedelta(seconds=self._duration)})"
            if self._verbose and trainer.is_global_zero:
                print(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")
        trainer.should_stop = trainer.should_stop or should_stop

    # -- checkpoint -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))
