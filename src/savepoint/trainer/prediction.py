"""The predict loop: ``predict_step`` over the predict dataloaders, predictions kept or handed to writers.

::

    on_predict_start, on_predict_epoch_start
    for each dataloader, for each batch:
        on_predict_batch_start(batch, batch_idx[, dataloader_idx]) -> predict_step
        -> on_predict_batch_end(outputs, batch, batch_idx[, dataloader_idx])   <- BasePredictionWriter("batch")
    on_predict_epoch_end                                                        <- BasePredictionWriter("epoch")
    on_predict_end

Under DDP every rank predicts its own share of the data (no sample twice) and keeps its own predictions,
as Lightning does; a `BasePredictionWriter` writes them per rank with the dataset indices of each batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from savepoint.strategies.data import move_to_device, rebuild_loader
from savepoint.trainer.evaluation import batch_limit, no_grad_context

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


class _IndexRecorder:
    """A batch sampler that remembers the dataset indices of every batch it hands out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        self.seen = []
        for indices in self.inner:
            self.seen.append(list(indices))
            yield indices

    def __len__(self) -> int:
        return len(self.inner)


def _recording(loader: Any) -> tuple[Any, _IndexRecorder | None]:
    if (
        isinstance(loader, DataLoader)
        and not isinstance(loader.dataset, IterableDataset)
        and loader.batch_sampler is not None
    ):
        recorder = _IndexRecorder(loader.batch_sampler)
        rebuilt = rebuild_loader(loader, batch_sampler=recorder)
        if rebuilt is not None:
            return rebuilt, recorder
    return loader, None


class PredictLoop:
    """``trainer.predict_loop``: what prediction writers read (``predictions``, ``epoch_batch_indices``,
    ``current_batch_indices``)."""

    def __init__(self) -> None:
        self.return_predictions = True
        self._predictions: list[list[Any]] = []
        self.epoch_batch_indices: list[list[list[int]]] = []
        self.current_batch_indices: list[int] = []
        self.num_dataloaders = 0

    @property
    def predictions(self) -> Any:
        """This rank's predictions: a list, or one list per dataloader when there are several."""
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions

    def run(self, trainer: Trainer, loaders: list[Any]) -> Any:
        module = trainer.training_module
        module.eval()
        self.num_dataloaders = len(loaders)
        self._predictions = [[] for _ in loaders]
        self.epoch_batch_indices = [[] for _ in loaders]
        trainer._call("on_predict_start")
        trainer._call("on_predict_epoch_start")
        with no_grad_context(trainer):
            for dataloader_idx, loader in enumerate(loaders):
                self._run_loader(trainer, loader, dataloader_idx)
        trainer._call("on_predict_epoch_end")
        trainer._call("on_predict_end")
        return self.predictions if self.return_predictions else None

    def _run_loader(self, trainer: Trainer, loader: Any, dataloader_idx: int) -> None:
        limit = batch_limit(loader, trainer._cfg.limit_predict_batches, "limit_predict_batches", "predict")
        if limit <= 0:
            return
        loader, recorder = _recording(loader)
        extra = (dataloader_idx,) if self.num_dataloaders > 1 else ()
        for batch_idx, batch in enumerate(loader):
            if batch_idx >= limit:
                break
            self.current_batch_indices = recorder.seen[batch_idx] if recorder is not None else []
            self.epoch_batch_indices[dataloader_idx].append(self.current_batch_indices)
            batch = trainer._precision.convert_input(trainer.strategy.batch_to_device(batch))
            trainer._call_callbacks("on_predict_batch_start", batch, batch_idx, *extra)
            trainer._call_module("on_predict_batch_start", batch, batch_idx, *extra)
            with trainer._precision.autocast():
                output = trainer._run_module(
                    "predict_step", trainer.strategy.predict_step, batch, batch_idx, *extra
                )
            if self.return_predictions:
                self._predictions[dataloader_idx].append(move_to_device(output, torch.device("cpu")))
            trainer._call("on_predict_batch_end", output, batch, batch_idx, *extra)
