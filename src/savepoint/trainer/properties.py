"""The Trainer's read-only properties (the state users and callbacks query), as a mixin of `Trainer`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.trainer.evaluation import batch_limit
from savepoint.trainer.states import RunningStage, TrainerState

if TYPE_CHECKING:
    from savepoint.datamodule import DataModule
    from savepoint.loggers import Logger
    from savepoint.module import TrainingModule
    from savepoint.strategies.strategy import Strategy
    from savepoint.trainer.optim import LRSchedulerConfig


class TrainerProperties:
    """Mixed into `Trainer`; reads the attributes `Trainer.__init__` and `fit` set."""

    _callbacks: list[Callback]
    _strategy: Strategy
    _model: TrainingModule | None
    _datamodule: DataModule | None
    _loggers: list[Logger]
    _optimizers: list[torch.optim.Optimizer]
    _scheduler_configs: list[LRSchedulerConfig]
    _cfg: Any
    _metrics: Any
    _fit_loop: Any
    _precision: Any
    _val_loaders: list[Any]
    _eval_loaders: dict[str, list[Any]]
    state: TrainerState

    # -- what the Trainer is doing (Lightning's flags, derived from state.stage) ---------------------------------

    def _stage_flag(self, stage: RunningStage) -> bool:
        return self.state.stage == stage

    def _set_stage_flag(self, stage: RunningStage, value: bool) -> None:
        if value:
            self.state.stage = stage
        elif self.state.stage == stage:
            self.state.stage = None

    training = property(
        lambda self: self._stage_flag(RunningStage.TRAINING),
        lambda self, v: self._set_stage_flag(RunningStage.TRAINING, v),
    )
    sanity_checking = property(
        lambda self: self._stage_flag(RunningStage.SANITY_CHECKING),
        lambda self, v: self._set_stage_flag(RunningStage.SANITY_CHECKING, v),
    )
    validating = property(
        lambda self: self._stage_flag(RunningStage.VALIDATING),
        lambda self, v: self._set_stage_flag(RunningStage.VALIDATING, v),
    )
    testing = property(
        lambda self: self._stage_flag(RunningStage.TESTING),
        lambda self, v: self._set_stage_flag(RunningStage.TESTING, v),
    )
    predicting = property(
        lambda self: self._stage_flag(RunningStage.PREDICTING),
        lambda self, v: self._set_stage_flag(RunningStage.PREDICTING, v),
    )

    @property
    def fast_dev_run(self) -> int | bool:
        return self._cfg.fast_dev_run

    @property
    def max_time(self) -> Any:
        return self._cfg.max_time

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the whole fit will take, as Lightning estimates them (for OneCycleLR and the like)."""
        cfg = self._cfg
        if cfg.max_epochs == -1:
            return math.inf if cfg.max_steps == -1 else cfg.max_steps
        total = self.num_training_batches
        if total == math.inf:
            return cfg.max_steps if cfg.max_steps != -1 else math.inf
        steps = math.ceil(total / cfg.accumulate_grad_batches) * max(cfg.max_epochs, 1)
        return min(steps, cfg.max_steps) if cfg.max_steps != -1 else steps

    @property
    def val_dataloaders(self) -> Any:
        return _one_or_list(self._val_loaders)

    @property
    def test_dataloaders(self) -> Any:
        return _one_or_list(self._eval_loaders.get("test", []))

    @property
    def predict_dataloaders(self) -> Any:
        return _one_or_list(self._eval_loaders.get("predict", []))

    @property
    def gradient_clip_val(self) -> float | None:
        return self._cfg.gradient_clip_val

    @property
    def gradient_clip_algorithm(self) -> str:
        return self._cfg.gradient_clip_algorithm

    # -- properties --------------------------------------------------------------------------------------------

    @property
    def callbacks(self) -> list[Callback]:
        return self._callbacks

    @property
    def checkpoint_callbacks(self) -> list[Checkpoint]:
        return [cb for cb in self._callbacks if isinstance(cb, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Checkpoint | None:
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callback(self) -> Callback | None:
        from savepoint.callbacks.early_stopping import EarlyStopping

        return next((cb for cb in self._callbacks if isinstance(cb, EarlyStopping)), None)

    @property
    def progress_bar_callback(self) -> Callback | None:
        from savepoint.callbacks.progress import ProgressBar

        return next((cb for cb in self._callbacks if isinstance(cb, ProgressBar)), None)

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def training_module(self) -> TrainingModule:
        if self._model is None:
            raise RuntimeError(
                "no TrainingModule is attached to this Trainer; call trainer.fit(model) first."
            )
        return self._model

    lightning_module = training_module

    @property
    def model(self) -> TrainingModule | None:
        return self._model

    @property
    def datamodule(self) -> DataModule | None:
        return self._datamodule

    @property
    def current_epoch(self) -> int:
        return self._fit_loop.pos.epoch

    @property
    def global_step(self) -> int:
        return self._fit_loop.pos.global_step

    @property
    def max_epochs(self) -> int:
        return self._cfg.max_epochs

    @property
    def max_steps(self) -> int:
        return self._cfg.max_steps

    @property
    def default_root_dir(self) -> str:
        return self._cfg.default_root_dir

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self._metrics.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        return self._metrics.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._metrics.progress_bar_metrics.items()}

    @property
    def logger(self) -> Logger | None:
        """The first logger (``None`` without loggers)."""
        return self._loggers[0] if self._loggers else None

    @logger.setter
    def logger(self, logger: Logger | None) -> None:
        self._loggers = [] if logger is None else [logger]

    @property
    def loggers(self) -> list[Logger]:
        """Every logger of the run, in the order given to ``Trainer(logger=[...])``."""
        return self._loggers

    @loggers.setter
    def loggers(self, loggers: list[Logger] | None) -> None:
        self._loggers = list(loggers or [])

    @property
    def log_dir(self) -> str | None:
        """The first logger's folder (``default_root_dir`` without loggers)."""
        if not self._loggers:
            return self.default_root_dir
        return self._loggers[0].log_dir

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self._optimizers

    @property
    def lr_scheduler_configs(self) -> list[LRSchedulerConfig]:
        return self._scheduler_configs

    @property
    def global_rank(self) -> int:
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        return self._strategy.world_size

    @property
    def num_devices(self) -> int:
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self._strategy.is_global_zero

    @property
    def num_training_batches(self) -> int | float:
        return self._fit_loop.data.num_batches if self._fit_loop.data is not None else 0

    @property
    def num_val_batches(self) -> list[int | float]:
        """Validation batches per dataloader (after ``limit_val_batches``)."""
        return [batch_limit(loader, self._cfg.limit_val_batches) for loader in self._val_loaders]

    @property
    def num_sanity_val_batches(self) -> list[int | float]:
        """Batches per dataloader the sanity check runs (``num_sanity_val_steps`` at most)."""
        steps = self._cfg.num_sanity_val_steps
        return [n if steps == -1 else min(n, steps) for n in self.num_val_batches]

    @property
    def log_every_n_steps(self) -> int:
        return self._cfg.log_every_n_steps

    @property
    def accumulate_grad_batches(self) -> int:
        return self._cfg.accumulate_grad_batches

    @accumulate_grad_batches.setter
    def accumulate_grad_batches(self, value: int) -> None:
        # Set by GradientAccumulationScheduler at epoch starts; read by the loop at every batch.
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"accumulate_grad_batches={value!r} must be an int >= 1.")
        self._cfg.accumulate_grad_batches = value

    @property
    def train_dataloader(self) -> Any:
        """The training dataloader of the current fit (``None`` before fit)."""
        data = self._fit_loop.data
        return data.loader if data is not None else None

    @property
    def precision(self) -> str:
        return self._cfg.precision

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self._precision.scaler


def _one_or_list(loaders: list[Any]) -> Any:
    if not loaders:
        return None
    return loaders[0] if len(loaders) == 1 else loaders
