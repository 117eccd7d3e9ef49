"""The evaluation loops: validation (inside fit, the sanity check and ``Trainer.validate``) and test.

Both run the same way; only the hook names and the limit differ::

    on_{validation|test}_start, on_{validation|test}_epoch_start
    for each dataloader, for each batch:
        on_{..}_batch_start(batch, batch_idx[, dataloader_idx]) -> {validation|test}_step
        -> on_{..}_batch_end(outputs, batch, batch_idx[, dataloader_idx])
    on_{..}_epoch_end (module, then metrics are aggregated, then callbacks), on_{..}_end

``dataloader_idx`` is passed only when there are several dataloaders, as in Lightning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from savepoint.trainer.data import check_fraction_limit, first_tensor_len

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer

# stage -> (hook prefix, step name, limit attribute of the config)
_STAGES = {
    "validate": ("validation", "validation_step", "limit_val_batches"),
    "test": ("test", "test_step", "limit_test_batches"),
}


def batch_limit(
    loader: Any, limit: int | float, name: str = "limit_val_batches", what: str = "validation"
) -> int | float:
    """Batches to run from `loader` under a ``limit_*_batches`` value (an int count or a float fraction)."""
    try:
        total = len(loader)
    except TypeError:
        return limit if isinstance(limit, int) else float("inf")
    if isinstance(limit, float):
        check_fraction_limit(name, limit, total, what)
        return int(total * limit) if limit < 1.0 else total
    return min(total, limit)


def no_grad_context(trainer: Trainer) -> contextlib.AbstractContextManager[Any]:
    """``torch.inference_mode`` unless ``Trainer(inference_mode=False)`` or a sharded strategy needs grads off
    only (FSDP's parameter views do not survive inference mode)."""
    sharded = type(trainer.strategy).__name__.startswith("FSDP")
    return torch.inference_mode() if trainer._cfg.inference_mode and not sharded else torch.no_grad()


def run_evaluation(
    trainer: Trainer,
    stage: str,
    loaders: list[Any],
    max_batches: int | float | None = None,
    on_end: Callable[[], None] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Run the `stage` step over `loaders`; return the epoch-aggregated metrics, one dict per dataloader."""
    prefix, step_name, limit_name = _STAGES[stage]
    module = trainer.training_module
    metrics = trainer._metrics
    step = getattr(trainer.strategy, step_name)
    was_training = module.training
    module.eval()
    previous_stage = metrics.stage
    metrics.stage = stage
    metrics.reset_stage(stage)
    metrics.num_dataloaders = len(loaders)
    try:
        trainer._call(f"on_{prefix}_start")
        trainer._call(f"on_{prefix}_epoch_start")
        with no_grad_context(trainer):
            for dataloader_idx, loader in enumerate(loaders):
                limit = batch_limit(loader, getattr(trainer._cfg, limit_name), limit_name, prefix)
                if max_batches is not None and max_batches >= 0:
                    limit = min(limit, max_batches)
                metrics.dataloader_idx = dataloader_idx
                _run_loader(trainer, prefix, step_name, step, loader, limit, dataloader_idx, len(loaders))
        metrics.preview_epoch(stage)  # the module's epoch-end hook sees this epoch's aggregates
        trainer._call_module(f"on_{prefix}_epoch_end")
        results = metrics.end_epoch(stage, trainer.global_step, trainer.current_epoch)
        trainer._call_callbacks(f"on_{prefix}_epoch_end")
        if on_end is not None:
            on_end()
        trainer._call(f"on_{prefix}_end")
    finally:
        metrics.stage = previous_stage
        metrics.dataloader_idx = None
        metrics.num_dataloaders = 1
        if was_training:
            module.train()
    return split_by_dataloader(results, len(loaders))


def _run_loader(
    trainer: Trainer,
    prefix: str,
    step_name: str,
    step: Callable[..., Any],
    loader: Any,
    limit: int | float,
    dataloader_idx: int,
    num_loaders: int,
) -> None:
    if limit <= 0:
        return
    extra = (dataloader_idx,) if num_loaders > 1 else ()
    for batch_idx, batch in enumerate(loader):
        if batch_idx >= limit:
            break
        batch = trainer._precision.convert_input(trainer.strategy.batch_to_device(batch))
        trainer._metrics.batch_size = first_tensor_len(batch)
        # Lightning's order: callbacks then module before the step; module then callbacks after it.
        trainer._call_callbacks(f"on_{prefix}_batch_start", batch, batch_idx, *extra)
        trainer._call_module(f"on_{prefix}_batch_start", batch, batch_idx, *extra)
        with trainer._precision.autocast():
            output = trainer._run_module(step_name, step, batch, batch_idx, *extra)
        trainer._call(f"on_{prefix}_batch_end", output, batch, batch_idx, *extra)


def split_by_dataloader(results: dict[str, torch.Tensor], num_loaders: int) -> list[dict[str, torch.Tensor]]:
    """One dict per dataloader: ``name/dataloader_idx_N`` keys go to dataloader N, other keys to all."""
    if num_loaders <= 1:
        return [results]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(num_loaders)]
    for key, value in results.items():
        _head, sep, idx = key.rpartition("/dataloader_idx_")
        if sep and idx.isdigit() and int(idx) < num_loaders:
            out[int(idx)][key] = value
        else:
            for d in out:
                d[key] = value
    return out


def run_validation(
    trainer: Trainer,
    loaders: list[Any],
    max_batches: int | float | None,
    on_end: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Validation inside fit and the sanity check: all dataloaders' metrics in one dict."""
    merged: dict[str, torch.Tensor] = {}
    for part in run_evaluation(trainer, "validate", loaders, max_batches, on_end):
        merged.update(part)
    return merged
