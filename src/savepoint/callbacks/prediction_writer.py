"""`BasePredictionWriter`: write predictions as ``Trainer.predict`` produces them, per rank (as Lightning's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer

_INTERVALS = ("batch", "epoch", "batch_and_epoch")


class BasePredictionWriter(Callback):
    """Subclass it and override ``write_on_batch_end`` and/or ``write_on_epoch_end``.

    ``write_interval``: ``"batch"`` (after every predict batch), ``"epoch"`` (once, with all of this rank's
    predictions) or ``"batch_and_epoch"``. ``batch_indices`` are the dataset indices of each batch, so
    files written by several ranks can be put back in dataset order.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        if write_interval not in _INTERVALS:
            raise ValueError(
                f"BasePredictionWriter(write_interval={write_interval!r}) must be one of {_INTERVALS}."
            )
        self.interval = write_interval

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: TrainingModule,
        prediction: Any,
        batch_indices: list[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement write_on_batch_end for write_interval='batch'."
        )

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: TrainingModule, predictions: Any, batch_indices: Any
    ) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement write_on_epoch_end for write_interval='epoch'."
        )

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: TrainingModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.interval in ("batch", "batch_and_epoch"):
            indices = trainer.predict_loop.current_batch_indices
            self.write_on_batch_end(trainer, pl_module, outputs, indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self.interval in ("epoch", "batch_and_epoch"):
            loop = trainer.predict_loop
            self.write_on_epoch_end(trainer, pl_module, loop.predictions, loop.epoch_batch_indices)
