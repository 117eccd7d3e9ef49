"""The validation loop: used inside fit (and for the sanity check) and by ``Trainer.validate``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from savepoint.trainer.data import check_fraction_limit, first_tensor_len

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


def _limit(loader: Any, limit: int | float) -> int | float:
    try:
        total = len(loader)
    except TypeError:
        return limit if isinstance(limit, int) else float("inf")
    if isinstance(limit, float):
        check_fraction_limit("limit_val_batches", limit, total, "validation")
        return int(total * limit)
    return min(total, limit)


def run_validation(
    trainer: Trainer,
    loaders: list[Any],
    max_batches: int | float | None,
    on_end: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``validation_step`` over `loaders`; return the epoch-aggregated metrics."""
    module = trainer.training_module
    strategy = trainer.strategy
    metrics = trainer._metrics
    was_training = module.training
    module.eval()
    previous_stage = metrics.stage
    metrics.stage = "validate"
    metrics.reset_stage("validate")
    try:
        trainer._call("on_validation_start")
        trainer._call("on_validation_epoch_start")
        with torch.no_grad():
            for dataloader_idx, loader in enumerate(loaders):
                limit = _limit(loader, trainer._cfg.limit_val_batches)
                if max_batches is not None and max_batches >= 0:
                    limit = min(limit, max_batches)
                if limit <= 0:
                    continue
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= limit:
                        break
                    batch = strategy.batch_to_device(batch)
                    metrics.batch_size = first_tensor_len(batch)
                    extra = (dataloader_idx,) if len(loaders) > 1 else ()
                    trainer._call_callbacks("on_validation_batch_start", batch, batch_idx, *extra)
                    trainer._call_module("on_validation_batch_start", batch, batch_idx)
                    with trainer._precision.autocast():
                        args = (batch, batch_idx, dataloader_idx) if len(loaders) > 1 else (batch, batch_idx)
                        output = trainer._run_module("validation_step", strategy.validation_step, *args)
                    trainer._call_module("on_validation_batch_end", output, batch, batch_idx)
                    trainer._call_callbacks("on_validation_batch_end", output, batch, batch_idx, *extra)
        metrics.preview_epoch("validate")  # the module's epoch-end hook sees this epoch's aggregates
        trainer._call_module("on_validation_epoch_end")
        results = metrics.end_epoch("validate", trainer.global_step, trainer.current_epoch)
        trainer._call_callbacks("on_validation_epoch_end")
        if on_end is not None:
            on_end()
        trainer._call("on_validation_end")
    finally:
        metrics.stage = previous_stage
        if was_training:
            module.train()
    return results
