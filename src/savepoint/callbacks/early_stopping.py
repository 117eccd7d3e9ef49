"""`EarlyStopping`: stop when a monitored metric stops improving. Its state is checkpointed."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class EarlyStopping(Callback):
    """Stops training after ``patience`` checks without an improvement of more than ``min_delta``."""

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping(mode={mode!r}) must be 'min' or 'max'.")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping(patience={patience!r}) must be an int >= 0.")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.stopping_reason: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = int(state_dict["wait_count"])
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        self.best_score = state_dict["best_score"]
        self.patience = int(state_dict.get("patience", self.patience))

    def setup(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            self._check_on_train_epoch_end = not trainer.enable_validation

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._check_on_train_epoch_end:
            self._check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not self._check_on_train_epoch_end and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check(trainer)

    def _improved(self, current: torch.Tensor) -> bool:
        if self.mode == "min":
            return bool(current < self.best_score - self.min_delta)
        return bool(current > self.best_score + self.min_delta)

    def _check(self, trainer: Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if self.strict:
                raise KeyError(
                    f"EarlyStopping(monitor={self.monitor!r}) found no such metric; logged: "
                    f"{sorted(trainer.callback_metrics)}. Log it with self.log, or pass strict=False."
                )
            warnings.warn(
                f"EarlyStopping: {self.monitor!r} is not logged; skipping this check.", stacklevel=2
            )
            return
        current = value.detach().float().cpu().reshape(())
        stop, reason = False, None
        if self.check_finite and not torch.isfinite(current):
            stop, reason = True, f"{self.monitor} = {float(current)} is not finite"
        elif self.stopping_threshold is not None and (
            current < self.stopping_threshold if self.mode == "min" else current > self.stopping_threshold
        ):
            stop, reason = True, f"{self.monitor} reached the stopping threshold {self.stopping_threshold}"
        elif self.divergence_threshold is not None and (
            current > self.divergence_threshold if self.mode == "min" else current < self.divergence_threshold
        ):
            stop, reason = (
                True,
                f"{self.monitor} crossed the divergence threshold {self.divergence_threshold}",
            )
        elif self._improved(current):
            self.best_score = current
            self.wait_count = 0
        else:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                stop = True
                reason = f"{self.monitor} did not improve in {self.wait_count} checks (best {float(self.best_score):.6g})"
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = reason
            trainer.stop_reason = f"early stopping: {reason or self.monitor}"
            trainer.should_stop = True
            if self.verbose and trainer.is_global_zero:
                print(f"EarlyStopping: {reason}; stopping.")
