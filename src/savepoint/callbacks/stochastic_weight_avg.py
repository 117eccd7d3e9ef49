"""`StochasticWeightAveraging`: average the weights of the last epochs (Izmailov et al., 2018) with an SWA
learning-rate schedule, and train end with the averaged weights.

Same schedule as Lightning's: from ``swa_epoch_start`` the optimizer's scheduler is swapped for
``torch.optim.swa_utils.SWALR``, and the running average takes the weights at each epoch start up to the
last epoch; at the end of fit the module gets the averaged weights. The average, its count and the SWA
scheduler are in the checkpoint, so a resumed run averages exactly as an uninterrupted one.

Difference from Lightning: with batch-norm layers, Lightning trains one extra epoch (forward only) to
recompute their statistics; savepoint recomputes them at the end of fit with
``torch.optim.swa_utils.update_bn`` over the training dataloader, without changing ``max_epochs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from savepoint.callbacks.callback import Callback
from savepoint.trainer.optim import LRSchedulerConfig

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer

AvgFn = Callable[[Tensor, Tensor, Tensor], Tensor]
_CPU = torch.device("cpu")


class StochasticWeightAveraging(Callback):
    """``swa_lrs`` (one for all parameter groups, or one per group), ``swa_epoch_start`` (an epoch, or a
    fraction of ``max_epochs``), ``annealing_epochs``, ``annealing_strategy`` (``"cos"``/``"linear"``),
    ``avg_fn(averaged, current, n_averaged)`` (default: equal weights), ``device`` (where the average lives;
    ``None``: the module's device)."""

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: str = "cos",
        avg_fn: AvgFn | None = None,
        device: torch.device | str | None = _CPU,
    ) -> None:
        if isinstance(swa_epoch_start, bool) or not (
            (isinstance(swa_epoch_start, int) and swa_epoch_start >= 1)
            or (isinstance(swa_epoch_start, float) and 0 <= swa_epoch_start <= 1)
        ):
            raise ValueError(f"swa_epoch_start={swa_epoch_start!r} must be an int >= 1 or a float in [0, 1].")
        lrs = swa_lrs if isinstance(swa_lrs, list) else [swa_lrs]
        if not lrs or any(not isinstance(lr, float) or lr <= 0 for lr in lrs):
            raise ValueError(f"swa_lrs={swa_lrs!r} must be a positive float or a list of them.")
        if annealing_strategy not in ("cos", "linear"):
            raise ValueError(f"annealing_strategy={annealing_strategy!r} must be 'cos' or 'linear'.")
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self._average: dict[str, Tensor] | None = None
        self.n_averaged: int = 0
        self._latest_update_epoch = -1
        self._scheduler_state: dict[str, Any] | None = None
        self._swa_scheduler: SWALR | None = None
        self._max_epochs = -1

    @property
    def swa_start(self) -> int:
        return max(int(self._swa_epoch_start) - 1, 0)  # 0-based, as Lightning

    @property
    def swa_end(self) -> int | float:
        return float("inf") if self._max_epochs == -1 else self._max_epochs - 1

    @staticmethod
    def avg_fn(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        return averaged + (current - averaged) / (num_averaged + 1)

    # -- state -----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        scheduler = (
            self._swa_scheduler.state_dict() if self._swa_scheduler is not None else self._scheduler_state
        )
        return {
            "n_averaged": self.n_averaged,
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": scheduler,
            "average_model_state": None
            if self._average is None
            else {k: v.clone() for k, v in self._average.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.n_averaged = int(state_dict.get("n_averaged", 0))
        self._latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))
        self._scheduler_state = state_dict.get("scheduler_state")
        average = state_dict.get("average_model_state")
        self._average = None if average is None else {k: v.clone() for k, v in average.items()}

    # -- hooks -----------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError("StochasticWeightAveraging works with exactly one optimizer.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise ValueError("StochasticWeightAveraging works with at most one LR scheduler.")
        if isinstance(self._swa_epoch_start, float):
            if trainer.max_epochs == -1:
                raise ValueError(
                    "swa_epoch_start as a fraction needs max_epochs; give an epoch number instead."
                )
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._max_epochs = trainer.max_epochs
        if self._scheduler_state is not None:
            # Resuming inside the SWA phase: the checkpoint's scheduler is the SWA one; install it so the
            # Trainer restores its state into it.
            self._install_scheduler(trainer)

    def _install_scheduler(self, trainer: Trainer) -> None:
        optimizer = trainer.optimizers[0]
        lrs = (
            self._swa_lrs
            if isinstance(self._swa_lrs, list)
            else [self._swa_lrs] * len(optimizer.param_groups)
        )
        for lr, group in zip(lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer,
            swa_lr=lrs,
            anneal_epochs=self._annealing_epochs,
            anneal_strategy=self._annealing_strategy,  # type: ignore[arg-type]
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        config = LRSchedulerConfig(self._swa_scheduler)
        trainer.lr_scheduler_configs[:] = [config]

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        epoch = trainer.current_epoch
        if self._swa_scheduler is None and self.swa_start <= epoch <= self.swa_end:
            self._install_scheduler(trainer)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            self.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def update_parameters(self, pl_module: nn.Module) -> None:
        device = self._device
        current = {n: p.detach() for n, p in pl_module.named_parameters()}
        if self._average is None or self.n_averaged == 0:
            self._average = {n: p.to(device or p.device, copy=True) for n, p in current.items()}
        else:
            count = torch.tensor(self.n_averaged)
            for name, avg in self._average.items():
                avg.copy_(self._avg_fn(avg, current[name].to(avg.device), count.to(avg.device)))
        self.n_averaged += 1

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._average is None or not (trainer.current_epoch - 1 == self.swa_end or self._max_epochs == -1):
            return
        with torch.no_grad():
            for name, param in pl_module.named_parameters():
                param.copy_(self._average[name].to(param.device))
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()):
            loader = trainer.train_dataloader
            if loader is not None:
                torch.optim.swa_utils.update_bn(loader, pl_module, device=pl_module.device)
