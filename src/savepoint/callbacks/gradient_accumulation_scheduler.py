"""`GradientAccumulationScheduler`: change ``accumulate_grad_batches`` by epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """``scheduling={epoch: factor}`` (epochs from 0): from ``epoch`` on, accumulate ``factor`` batches per
    optimizer step; before the first key, 1. ``{4: 2}`` accumulates 2 batches from the fifth epoch.

    Nothing to store in a checkpoint: the factor follows from the epoch, and it is set again when a
    resumed run re-enters an epoch (mid-epoch included).
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not scheduling:
            raise TypeError("GradientAccumulationScheduler(scheduling={}) is empty: give {epoch: factor}.")
        if any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in scheduling):
            raise ValueError(f"Epoch should be an int greater than or equal to 0. Got {list(scheduling)}.")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in scheduling.values()):
            raise ValueError(
                f"Accumulation factor should be an int greater than 0. Got {list(scheduling.values())}."
            )
        scheduling = dict(scheduling)
        scheduling.setdefault(0, 1)
        self.scheduling = scheduling
        self.epochs = sorted(scheduling)
        self._set: int | None = None

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        return next((self.scheduling[e] for e in reversed(self.epochs) if epoch >= e), 1)

    def _apply(self, trainer: Trainer) -> None:
        self._set = self.get_accumulate_grad_batches(trainer.current_epoch)
        trainer.accumulate_grad_batches = self._set

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not getattr(pl_module, "automatic_optimization", True):
            raise RuntimeError(
                "GradientAccumulationScheduler needs automatic optimization; remove the callback or set "
                "automatic_optimization back to True."
            )
        if trainer.accumulate_grad_batches not in (1, self._set):
            raise ValueError(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) and GradientAccumulationScheduler "
                f"both set the accumulation: remove one of them."
            )
        self._apply(trainer)  # a resumed run may re-enter an epoch without on_train_epoch_start

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._apply(trainer)
