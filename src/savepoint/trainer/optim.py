"""Turn what ``configure_optimizers`` returns into optimizers and LR scheduler configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name", "reduce_on_plateau"}


@dataclass
class LRSchedulerConfig:
    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None
    reduce_on_plateau: bool = False


def _scheduler_config(item: Any) -> LRSchedulerConfig:
    if isinstance(item, Mapping):
        unknown = set(item) - _SCHEDULER_KEYS
        if unknown:
            raise ValueError(
                f"lr_scheduler config has unknown keys {sorted(unknown)}; allowed: {sorted(_SCHEDULER_KEYS)}"
            )
        if "scheduler" not in item:
            raise ValueError("an lr_scheduler config dict needs a 'scheduler' key holding the scheduler.")
        config = LRSchedulerConfig(**{k: v for k, v in item.items() if k != "reduce_on_plateau"})
    else:
        config = LRSchedulerConfig(scheduler=item)
    if config.interval not in ("epoch", "step"):
        raise ValueError(f"lr_scheduler interval={config.interval!r} must be 'epoch' or 'step'.")
    if not isinstance(config.frequency, int) or config.frequency < 1:
        raise ValueError(f"lr_scheduler frequency={config.frequency!r} must be an int >= 1.")
    config.reduce_on_plateau = isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if config.reduce_on_plateau and config.monitor is None:
        raise ValueError(
            "ReduceLROnPlateau needs a metric: return {'optimizer': opt, 'lr_scheduler': "
            "{'scheduler': sched, 'monitor': 'val_loss'}} from configure_optimizers."
        )
    if not hasattr(config.scheduler, "step") or not hasattr(config.scheduler, "state_dict"):
        raise TypeError(f"{config.scheduler!r} is not an LR scheduler (it needs step() and state_dict()).")
    return config


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list | tuple) else [x]


def parse_optimizers(result: Any) -> tuple[list[torch.optim.Optimizer], list[LRSchedulerConfig]]:
    """Accepts an optimizer; a list of them; ``(optimizers, schedulers)``; a dict (or list of dicts) with
    ``optimizer`` and optionally ``lr_scheduler`` (a scheduler or a config dict)."""
    optimizers: list[Any] = []
    schedulers: list[LRSchedulerConfig] = []
    if result is None:
        return [], []
    if isinstance(result, torch.optim.Optimizer):
        optimizers = [result]
    elif isinstance(result, Mapping):
        if "optimizer" not in result:
            raise ValueError("configure_optimizers() returned a dict without an 'optimizer' key.")
        optimizers = [result["optimizer"]]
        if result.get("lr_scheduler") is not None:
            item = result["lr_scheduler"]
            if "monitor" in result and not isinstance(item, Mapping):
                item = {"scheduler": item, "monitor": result["monitor"]}
            schedulers = [_scheduler_config(item)]
    elif (
        isinstance(result, Sequence)
        and len(result) == 2
        and isinstance(result[0], Sequence)
        and not isinstance(result[0], str)
    ):
        optimizers = _as_list(result[0])
        schedulers = [_scheduler_config(s) for s in _as_list(result[1])]
    elif isinstance(result, Sequence) and all(isinstance(r, Mapping) for r in result):
        for entry in result:
            o, s = parse_optimizers(entry)
            optimizers += o
            schedulers += s
    elif isinstance(result, Sequence):
        optimizers = list(result)
    else:
        raise TypeError(
            f"configure_optimizers() returned {type(result).__name__}; expected an optimizer, a list of them, "
            f"(optimizers, schedulers), or a dict with 'optimizer' and 'lr_scheduler'."
        )
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"configure_optimizers() returned {opt!r}, which is not a torch.optim.Optimizer.")
    return optimizers, schedulers
