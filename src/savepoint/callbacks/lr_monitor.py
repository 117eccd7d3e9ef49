"""`LearningRateMonitor`: the learning rate of every optimizer (and parameter group) in the loggers.

Names, as in Lightning: ``lr-<Optimizer>`` (``lr-Adam``, ``lr-Adam-1`` for a second Adam), the scheduler's
``name`` when its config has one, ``/pg1``, ``/pg2``... (or the group's ``name``) when an optimizer has
several parameter groups; ``-momentum`` and ``-weight_decay`` suffixes for the optional extras.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class LearningRateMonitor(Callback):
    """``logging_interval``: ``"step"`` (every ``log_every_n_steps`` optimizer steps), ``"epoch"`` (at each
    epoch start) or ``None`` (each scheduler's own interval; optimizers without a scheduler per step)."""

    def __init__(
        self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(
                f"LearningRateMonitor(logging_interval={logging_interval!r}) must be 'step', 'epoch' or None."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not trainer.loggers:
            raise ValueError(
                "LearningRateMonitor needs a logger, but the Trainer has none (logger=False): "
                "remove logger=False or drop the callback."
            )
        self.lrs = {name: [] for _opt, _interval, names in self._named(trainer) for name in names}

    def _named(self, trainer: Trainer) -> list[tuple[torch.optim.Optimizer, str, list[str]]]:
        """(optimizer, interval, one name per param group), schedulers' optimizers first."""
        out: list[tuple[torch.optim.Optimizer, str, list[str]]] = []
        seen_types: defaultdict[type, int] = defaultdict(int)
        seen: list[torch.optim.Optimizer] = []
        items = [(c.scheduler.optimizer, c.interval, c.name) for c in trainer.lr_scheduler_configs]
        items += [(opt, "step", None) for opt in trainer.optimizers]
        for opt, interval, config_name in items:
            if any(opt is s for s in seen):
                continue
            seen.append(opt)
            if config_name is None:
                seen_types[type(opt)] += 1
                count = seen_types[type(opt)]
                base = f"lr-{type(opt).__name__}" + (f"-{count - 1}" if count > 1 else "")
            else:
                base = config_name
            groups = opt.param_groups
            if len(groups) == 1:
                names = [f"{base}/{groups[0]['name']}" if groups[0].get("name") else base]
            else:
                names = [f"{base}/{g.get('name', f'pg{i + 1}')}" for i, g in enumerate(groups)]
            out.append((opt, interval, names))
        return out

    def _stats(self, trainer: Trainer, interval: str) -> dict[str, float]:
        stats: dict[str, float] = {}
        for opt, opt_interval, names in self._named(trainer):
            if interval != "any" and opt_interval != interval:
                continue
            use_betas = "betas" in opt.defaults
            for group, name in zip(opt.param_groups, names):
                stats[name] = float(group["lr"])
                self.lrs.setdefault(name, []).append(stats[name])
                if self.log_momentum:
                    momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                    stats[f"{name}-momentum"] = float(momentum)
                if self.log_weight_decay:
                    stats[f"{name}-weight_decay"] = float(group.get("weight_decay", 0))
        for name, value in stats.items():
            trainer.callback_metrics[name] = torch.tensor(value)
        return stats

    def _log(self, trainer: Trainer, stats: dict[str, float], step: int) -> None:
        if stats and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=step)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: TrainingModule, batch: Any, batch_idx: int
    ) -> None:
        # Logged at the step of this batch (counted from 0), as the other step metrics of the batch are.
        step = trainer.global_step
        if self.logging_interval == "epoch" or (step + 1) % trainer.log_every_n_steps != 0:
            return
        self._log(trainer, self._stats(trainer, "step" if self.logging_interval is None else "any"), step)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self.logging_interval == "step":
            return
        self._log(
            trainer,
            self._stats(trainer, "epoch" if self.logging_interval is None else "any"),
            trainer.global_step,
        )
