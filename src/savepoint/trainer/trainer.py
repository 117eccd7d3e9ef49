"""`Trainer`: the façade. Arguments are validated here; the loops, checkpoint assembly and storage live
in `fit_loop`, `evaluation`, `prediction`, `checkpointing`, `saving` and the strategy;
``validate``/``test``/``predict`` in `entrypoints`."""

from __future__ import annotations

import contextlib
import os
import sys
import typing
from datetime import timedelta
from typing import Any

import torch

from savepoint.callbacks.callback import Callback
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.checkpoint.resume import capture_rng, restore_rng
from savepoint.datamodule import DataModule
from savepoint.loggers import Logger
from savepoint.module import TrainingModule
from savepoint.strategies.strategy import Strategy
from savepoint.trainer import checkpointing, logger_connector
from savepoint.trainer.config import build_config, select_strategy
from savepoint.trainer.data import TrainData, sequential_loader
from savepoint.trainer.entrypoints import EvaluationEntryPoints
from savepoint.trainer.evaluation import run_validation
from savepoint.trainer.fit_loop import FitLoop
from savepoint.trainer.hooks import HookDispatch, _overrides
from savepoint.trainer.interrupts import FitGuard
from savepoint.trainer.manual import ManualOptimization, check_optimization, takes_batch_idx
from savepoint.trainer.metrics import MetricStore
from savepoint.trainer.optim import LRSchedulerConfig, parse_optimizers
from savepoint.trainer.precision import Precision
from savepoint.trainer.prediction import PredictLoop
from savepoint.trainer.properties import TrainerProperties
from savepoint.trainer.saving import CheckpointSaving
from savepoint.trainer.signals import split_signal_plugins
from savepoint.trainer.states import RunningStage, TrainerFn, TrainerState, TrainerStatus
from savepoint.utilities.rank_zero import rank_zero_only


class Trainer(TrainerProperties, HookDispatch, EvaluationEntryPoints, ManualOptimization, CheckpointSaving):
    """Trains a `TrainingModule`, checkpointing automatically (see ``fit``)."""

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str | Strategy = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        precision: str | int = "32-true",
        logger: Logger | list[Logger] | bool | None = None,
        callbacks: list[Callback] | Callback | None = None,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        default_root_dir: str | os.PathLike | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        deterministic: bool | str | None = None,
        plugins: Any = None,
        log_every_n_steps: int | None = None,
        fast_dev_run: int | bool = False,
        max_time: str | timedelta | dict[str, int] | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        detect_anomaly: bool = False,
        barebones: bool = False,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        **deprecated: Any,
    ) -> None:
        given = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "deprecated", "__class__") and v is not None
        }
        given.update(deprecated)
        for key, default in (
            ("limit_train_batches", 1.0),
            ("limit_val_batches", 1.0),
            ("num_sanity_val_steps", 2),
            ("log_every_n_steps", 50),
        ):
            given.setdefault(key, default)
        self._cfg, rest = build_config(given)
        self._cfg.check_val_every_n_epoch = check_val_every_n_epoch
        rest["plugins"], self._stop_signals, self._signal_plugin = split_signal_plugins(rest.get("plugins"))
        self._strategy = select_strategy(rest)
        self._logger_arg = rest.pop("logger", True)
        self._callbacks = self._assemble_callbacks(self._cfg.callbacks + self._timer_callback())
        self._loggers: list[Logger] = logger_connector.build_loggers(
            self._logger_arg, self._cfg.default_root_dir
        )
        if self._cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self._cfg.deterministic == "warn")
        if self._cfg.benchmark is not None:
            torch.backends.cudnn.benchmark = self._cfg.benchmark
        self.state = TrainerState()

        self._model: TrainingModule | None = None
        self._datamodule: DataModule | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._scheduler_configs: list[LRSchedulerConfig] = []
        self._precision = Precision(self._cfg.precision, "cpu")
        self._metrics = MetricStore(self)
        self._fit_loop = FitLoop(self)
        self._val_loaders: list[Any] = []
        self._eval_loaders: dict[str, list[Any]] = {}
        self.predict_loop = PredictLoop()
        self._validation_has_run = False
        self._restored_step: int | None = None
        self._found_checkpoint: tuple[str, dict[str, Any]] | None = None  # read by ckpt_path="last"
        self._hook_cache: dict[str, tuple[list[Callback], bool]] = {}
        self.should_stop = False
        # Why fit stopped, in a few words ("`max_epochs=10` reached"): whoever stops a fit (EarlyStopping,
        # max_time, a preemption signal) sets it with should_stop; fit fills it in when it runs out.
        self.stop_reason: str | None = None
        self.ckpt_path: str | None = None
        self._in_fit = False
        self._guard = FitGuard(self, self._stop_signals, self._signal_plugin)
        self._exception_save_allowed = True

    # -- construction helpers ----------------------------------------------------------------------------------

    def _timer_callback(self) -> list[Callback]:
        """``max_time`` is a `Timer` callback, as in Lightning (unless the user passed their own Timer)."""
        from savepoint.callbacks.timer import Timer

        if self._cfg.max_time is None or any(isinstance(cb, Timer) for cb in self._cfg.callbacks):
            return []
        return [Timer(duration=self._cfg.max_time, interval="step")]

    def _assemble_callbacks(self, callbacks: list[Callback]) -> list[Callback]:
        from savepoint.callbacks.model_checkpoint import ModelCheckpoint
        from savepoint.callbacks.model_summary import ModelSummary
        from savepoint.callbacks.progress import ProgressBar, RichProgressBar

        has_checkpoint = any(isinstance(cb, Checkpoint) for cb in callbacks)
        if not self._cfg.enable_checkpointing and has_checkpoint:
            names = [type(cb).__name__ for cb in callbacks if isinstance(cb, Checkpoint)]
            raise ValueError(
                f"Trainer(enable_checkpointing=False) but callbacks include {names}: drop "
                f"enable_checkpointing=False to use them, or remove them from callbacks to train without checkpoints."
            )
        out = list(callbacks)
        if self._cfg.enable_checkpointing and not has_checkpoint:
            out.append(ModelCheckpoint())
        if self._cfg.enable_progress_bar and not any(isinstance(cb, ProgressBar) for cb in out):
            out.append(RichProgressBar())
        if self._cfg.enable_model_summary and not any(isinstance(cb, ModelSummary) for cb in out):
            out.append(ModelSummary())
        # Checkpoint callbacks run last, so a save sees every other callback's update for the same event.
        return [cb for cb in out if not isinstance(cb, Checkpoint)] + [
            cb for cb in out if isinstance(cb, Checkpoint)
        ]

    # -- small services for callbacks -----------------------------------------------------------------------

    def _print(self, message: str) -> None:
        if self.is_global_zero:
            print(message)

    def _default_checkpoint_dir(self) -> str:
        if self.logger is not None and self.logger.log_dir is not None:
            return os.path.join(self.log_dir, "checkpoints")  # type: ignore[arg-type]
        return os.path.join(self.default_root_dir, "checkpoints")

    def _validation_will_run(self) -> bool:
        return (
            bool(self._val_loaders)
            and self._cfg.limit_val_batches != 0
            and self._model is not None
            and _overrides(self._model, TrainingModule, "validation_step")
            and getattr(self._model, "validation_step", None) is not None  # `model.validation_step = None`
        )

    def _validation_follows_batch(self) -> bool:
        """In ``on_train_batch_end``: whether a validation runs right after the batch that just ended."""
        loop = self._fit_loop
        return loop.pos.batches_done > 0 and loop.val_due(loop.pos.batches_done - 1)

    def _train_elapsed_s(self) -> float:
        return self._fit_loop.elapsed_s()

    @property
    def enable_validation(self) -> bool:
        """Whether validation runs during ``fit``: validation data, ``validation_step`` and ``limit_val_batches``."""
        return self._validation_will_run()

    @property
    def val_check_interval(self) -> int | float:
        """How often validation runs inside a training epoch: a fraction of it, or a number of batches."""
        return self._cfg.val_check_interval

    @property
    def check_val_every_n_epoch(self) -> int | None:
        """Validation runs every this many epochs (None: counted in batches across epochs)."""
        return self._cfg.check_val_every_n_epoch

    @property
    def train_elapsed_s(self) -> float:
        """Seconds of training in this run, counting the time before a resume (what time-based saves use)."""
        return self._train_elapsed_s()

    def _log_metrics(self, metrics: dict[str, torch.Tensor], step: int, epoch: int) -> None:
        if self._loggers and self.is_global_zero and not self.sanity_checking:
            # Rows carry the step of the batch that logged, counted from 0 (`step` is the optimizer steps taken
            # after it), as the loggers of the framework users know do: epoch-end rows share the last batch's.
            logger_connector.log_metrics(self, metrics, max(step - 1, 0), epoch)

    def _log_flush(self) -> None:
        if self.is_global_zero:
            for logger in self._loggers:
                logger.save()

    # -- fit ----------------------------------------------------------------------------------------------------

    def fit(
        self,
        model: TrainingModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: DataModule | None = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> None:
        """Train `model`. ``ckpt_path`` (a path, ``"last"`` or ``"best"``) resumes a run exactly where it was."""
        if not isinstance(model, TrainingModule):
            raise TypeError(
                f"Trainer.fit(model=...) expects a savepoint TrainingModule, got {type(model).__name__}."
            )
        if isinstance(train_dataloaders, DataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise ValueError(
                "Trainer.fit: pass either datamodule= or train_dataloaders=/val_dataloaders=, not both."
            )
        if ckpt_path is None:
            ckpt_path = self._cfg.resume_from_checkpoint
        self._strategy.setup_environment()
        self._in_fit = True
        self.state.fn, self.state.status = TrainerFn.FITTING, TrainerStatus.RUNNING
        failed = True
        anomaly = torch.autograd.detect_anomaly() if self._cfg.detect_anomaly else contextlib.nullcontext()
        self._guard = FitGuard(self, self._stop_signals, self._signal_plugin)
        self._guard.install()  # SIGTERM/SIGINT only set a flag until fit returns (see `trainer/signals.py`)
        try:
            with anomaly:
                self._setup(model, datamodule, "fit")
                self._fit(train_dataloaders, val_dataloaders, ckpt_path)
            failed = False
            self.state.status = TrainerStatus.FINISHED
        except BaseException as err:
            self.state.status = TrainerStatus.INTERRUPTED
            reported = self._guard.on_exception(err)
            self._call_callbacks("on_exception", reported)
            self._guard.after_exception(reported)
            if reported is not err:
                raise reported from None
            raise
        finally:
            self._guard.close()
            self._teardown("fit", failed)

    @property
    def can_save_on_exception(self) -> bool:
        """In ``on_exception``: whether the training state is consistent enough to save (False when the
        exception interrupted an optimizer step, or under several processes, where a save could hang)."""
        return self._exception_save_allowed

    def _setup(self, model: TrainingModule, datamodule: DataModule | None, stage: str) -> None:
        rank_zero_only.rank = self.global_rank  # type: ignore[attr-defined]
        self._model = model
        self._hook_cache = {}
        model.trainer = self
        self._datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = self
            if self.local_rank == 0:
                datamodule.prepare_data()
            self._strategy.barrier("prepare_data")
            datamodule.setup(stage)
        self._strategy.connect(model)
        model.setup(stage)

    def _fit(self, train_dataloaders: Any, val_dataloaders: Any, ckpt_path: Any) -> None:
        strategy = self._strategy
        model = self.training_module
        self.should_stop = False
        self.stop_reason = None
        self._validation_has_run = False
        self._restored_step = None
        self._precision = Precision(self._cfg.precision, strategy.root_device.type)
        self._precision.convert_module(model)
        if self._cfg.sync_batchnorm and self.world_size > 1:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BatchNorm children in place
        strategy.setup(self)

        self._fit_loop = FitLoop(self)
        self._fit_data_args = (train_dataloaders, val_dataloaders)
        self._load_fit_data()
        self._fit_loop.automatic = model.automatic_optimization
        self._fit_loop.step_takes_batch_idx = takes_batch_idx(model.training_step)
        self._guard.attach(self._fit_loop)

        resolved = checkpointing.resolve_ckpt_path(self, ckpt_path)
        self.ckpt_path = resolved
        checkpoint = None
        if resolved is not None:
            logger_connector.adopt_run_folder(self, resolved)
        logger_connector.resolve_versions(self)
        if resolved is not None:
            checkpoint = checkpointing.load_checkpoint(self, resolved)
            # Before anything new is written: drop what a crashed run logged after this checkpoint.
            logger_connector.restore_states(self, checkpoint)

        self._call_callbacks("setup", "fit")
        if self.is_global_zero:
            logger_connector.log_hparams(self)
        if checkpoint is not None:
            checkpointing.restore_modules_and_callbacks(self, checkpoint, resolved)  # type: ignore[arg-type]

        self._optimizers, self._scheduler_configs = parse_optimizers(
            self._run_module("configure_optimizers", model.configure_optimizers)
        )
        if not self._optimizers:
            raise ValueError(f"{type(model).__name__}.configure_optimizers() returned no optimizer.")
        check_optimization(self, model, self._optimizers)
        self._optimizers = strategy.setup_optimizers(self._optimizers)
        # As Lightning: on_fit_start runs before optimizer and loop states are restored, so a callback can
        # reshape the optimizers first (fine-tuning adds back the parameter groups it had added).
        self._call("on_fit_start")
        if checkpoint is not None:
            checkpointing.restore_training_state(self, checkpoint, resolved)  # type: ignore[arg-type]
            self._restored_step = self.global_step
            del checkpoint
            if self._fit_loop.done():
                self._print(
                    f"Resumed from {resolved!r} at epoch {self.current_epoch}, step {self.global_step}: "
                    f"max_epochs={self._cfg.max_epochs} / max_steps={self._cfg.max_steps} is already reached, "
                    f"so there is nothing to train. Raise max_epochs or max_steps to train further."
                )

        if not self._fit_loop.done():
            self._sanity_check()
        self.training = True
        model.train()
        self._call("on_train_start")
        trained = not self._fit_loop.done()
        try:
            self._fit_loop.run(resuming=resolved is not None)
        finally:
            self.training = False
        self._call("on_train_end")
        if trained:
            self._report_stop()
        self._call("on_fit_end")

    def _report_stop(self) -> None:
        """One line saying why fit ended (after the bar has stopped, so it lands below it)."""
        if self.stop_reason is None:
            self.stop_reason = self._fit_loop.stop_reason()
        if self.is_global_zero:
            print(f"`Trainer.fit` stopped: {self.stop_reason}.", file=sys.stderr, flush=True)

    def _load_fit_data(self) -> None:
        """Ask for the training and validation data (again every ``reload_dataloaders_every_n_epochs``)."""
        train_dataloaders, val_dataloaders = self._fit_data_args
        model = self.training_module
        train_loader = train_dataloaders
        if train_loader is None and self._datamodule is not None:
            train_loader = self._datamodule.train_dataloader()
        if train_loader is None:
            train_loader = model.train_dataloader()
        if train_loader is None:
            raise ValueError(
                "Trainer.fit found no training data: pass train_dataloaders=, a datamodule=, or implement "
                "train_dataloader() in the TrainingModule."
            )
        if self._cfg.overfit_batches:
            train_loader = sequential_loader(train_loader)
        self._fit_loop.data = TrainData(self._process_loader(train_loader), self._cfg.limit_train_batches)
        self._val_loaders = self._resolve_val_loaders(val_dataloaders)

    def _resolve_val_loaders(self, val_dataloaders: Any) -> list[Any]:
        loaders = val_dataloaders
        if loaders is None and self._datamodule is not None:
            loaders = self._datamodule.val_dataloader()
        if loaders is None and self._model is not None:
            loaders = self._model.val_dataloader()
        if loaders is None:
            return []
        loaders = list(loaders) if isinstance(loaders, list | tuple) else [loaders]
        return [self._process_loader(loader) for loader in loaders]

    def _sanity_check(self) -> None:
        steps = self._cfg.num_sanity_val_steps
        if steps == 0 or not self._validation_will_run():
            return
        self.sanity_checking = True
        self._metrics.discard = True
        saved_metrics = dict(self._metrics.callback_metrics)
        # The sanity check must not shift the random streams training draws from (same seed, same run).
        rng = capture_rng()
        try:
            self._call("on_sanity_check_start")
            run_validation(self, self._val_loaders, max_batches=None if steps == -1 else steps)
            self._call("on_sanity_check_end")
        finally:
            restore_rng(rng)
            self.sanity_checking = False
            self._metrics.discard = False
            self._metrics.callback_metrics = saved_metrics

    def _run_validation(self, sanity: bool = False, on_end: Any = None) -> dict[str, torch.Tensor]:
        previous, self.state.stage = self.state.stage, RunningStage.VALIDATING
        try:
            results = run_validation(self, self._val_loaders, max_batches=None, on_end=on_end)
        finally:
            self.state.stage = previous
        self._validation_has_run = True
        return results

    def _teardown(self, stage: str, failed: bool) -> None:
        self._in_fit = False
        try:
            if self.is_global_zero:
                for logger in self._loggers:
                    logger.finalize("failed" if failed else "success")
            self._call_callbacks("teardown", stage)
            if self._model is not None:
                self._model.teardown(stage)
            if self._datamodule is not None:
                self._datamodule.teardown(stage)
        finally:
            self._strategy.teardown()


# Tools that read the constructor's signature (jsonargparse, CLI parsers) get real types, not strings.
Trainer.__init__.__annotations__ = typing.get_type_hints(Trainer.__init__)
