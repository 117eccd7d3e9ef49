"""``Trainer.validate``, ``Trainer.test`` and ``Trainer.predict``: one evaluation pass each, as a mixin of
`Trainer`. Each sets up the module (and datamodule), optionally loads weights from ``ckpt_path``
(``"best"``, ``"last"`` or a path), runs its loop and tears down."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from savepoint.datamodule import DataModule
from savepoint.module import TrainingModule
from savepoint.trainer import checkpointing
from savepoint.trainer.evaluation import run_evaluation
from savepoint.trainer.hooks import _overrides
from savepoint.trainer.precision import Precision
from savepoint.trainer.prediction import PredictLoop
from savepoint.trainer.states import RunningStage, TrainerFn, TrainerStatus
from savepoint.utilities.seed import seeds_workers, worker_init_function


def _as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


class EvaluationEntryPoints:
    """Mixed into `Trainer`."""

    def validate(
        self,
        model: TrainingModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation epoch; returns one metrics dict per dataloader."""
        return self._evaluate(TrainerFn.VALIDATING, model, dataloaders, ckpt_path, verbose, datamodule)

    def test(
        self,
        model: TrainingModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run ``test_step`` over the test data once; returns one metrics dict per dataloader and prints them.

        Without `model` after a fit, the best checkpoint's weights are used (as Lightning does)."""
        return self._evaluate(TrainerFn.TESTING, model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(
        self,
        model: TrainingModule | None = None,
        dataloaders: Any = None,
        datamodule: DataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | os.PathLike | None = None,
    ) -> Any:
        """Run ``predict_step`` over the predict data; returns the predictions (a list per dataloader when
        there are several), or None with ``return_predictions=False``."""
        self.predict_loop.return_predictions = (
            True if return_predictions is None else bool(return_predictions)
        )

        def body() -> Any:
            loaders = self._eval_loaders["predict"]
            self.predicting = True
            try:
                return self.predict_loop.run(self, loaders)  # type: ignore[arg-type]
            finally:
                self.predicting = False

        return self._run_entry(TrainerFn.PREDICTING, model, dataloaders, ckpt_path, datamodule, body)

    # -- shared -------------------------------------------------------------------------------------------------

    def _evaluate(
        self,
        fn: TrainerFn,
        model: TrainingModule | None,
        dataloaders: Any,
        ckpt_path: Any,
        verbose: bool,
        datamodule: DataModule | None,
    ) -> list[dict[str, float]]:
        stage = "validate" if fn == TrainerFn.VALIDATING else "test"

        def body() -> list[dict[str, float]]:
            self._metrics.callback_metrics = {}
            running = RunningStage.VALIDATING if stage == "validate" else RunningStage.TESTING
            self.state.stage = running
            try:
                results = run_evaluation(self, stage, self._eval_loaders[stage])  # type: ignore[arg-type]
            finally:
                self.state.stage = None
            if stage == "validate":
                self._validation_has_run = True
            return [{k: float(v) for k, v in part.items()} for part in results]

        out = self._run_entry(fn, model, dataloaders, ckpt_path, datamodule, body)
        if verbose and self.is_global_zero:
            from savepoint.callbacks.progress import print_metrics

            title = "Validate" if stage == "validate" else "Test"
            for i, part in enumerate(out):
                print_metrics(title if len(out) == 1 else f"{title} (dataloader {i})", part)
        return out

    def _run_entry(
        self,
        fn: TrainerFn,
        model: TrainingModule | None,
        dataloaders: Any,
        ckpt_path: Any,
        datamodule: DataModule | None,
        body: Callable[[], Any],
    ) -> Any:
        name = fn.value
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        if datamodule is not None and dataloaders is not None:
            raise ValueError(f"Trainer.{name}: pass either datamodule= or dataloaders=, not both.")
        if model is not None and not isinstance(model, TrainingModule):
            raise TypeError(
                f"Trainer.{name}(model=...) expects a savepoint TrainingModule, got {type(model).__name__}."
            )
        ckpt_path = self._default_eval_ckpt(name, model, ckpt_path)
        model = model if model is not None else self._model
        if model is None:
            raise TypeError(f"Trainer.{name} needs a model: pass model=, or call fit first.")
        self._strategy.setup_environment()
        self._in_fit = True
        self.state.fn, self.state.status = fn, TrainerStatus.RUNNING
        failed = True
        try:
            self._setup(model, datamodule if datamodule is not None else self._datamodule, name)
            self._precision = Precision(self._cfg.precision, self._strategy.root_device.type)
            self._precision.convert_module(model)
            self._strategy.setup(self)
            resolved = checkpointing.resolve_ckpt_path(self, ckpt_path)
            self.ckpt_path = resolved
            self._call_callbacks("setup", name)
            if resolved is not None:
                checkpointing.load_weights(self, checkpointing.load_checkpoint(self, resolved), resolved)
            self._eval_loaders[name] = self._resolve_eval_loaders(name, dataloaders)
            result = body()
            failed = False
            self.state.status = TrainerStatus.FINISHED
            return result
        except BaseException as err:
            self.state.status = TrainerStatus.INTERRUPTED
            self._call_callbacks("on_exception", err)
            raise
        finally:
            self._teardown(name, failed)

    def _default_eval_ckpt(self, name: str, model: TrainingModule | None, ckpt_path: Any) -> Any:
        """Lightning: without a model after fit, the best checkpoint's weights are evaluated."""
        if ckpt_path is not None or model is not None or self._model is None:
            if ckpt_path == "best" and self.fast_dev_run:
                raise ValueError(
                    f"Trainer.{name}(ckpt_path='best') with fast_dev_run: no checkpoint was written; pass a path."
                )
            return ckpt_path
        if any(getattr(cb, "best_model_path", "") for cb in self.checkpoint_callbacks):
            warnings.warn(
                f"Trainer.{name}(ckpt_path=None) was called without a model: the best model of the previous fit is "
                f"used. Pass ckpt_path='best' or 'last' (or a path) to choose, which also silences this warning.",
                UserWarning,
                stacklevel=4,
            )
            return "best"
        return None

    def _resolve_eval_loaders(self, name: str, dataloaders: Any) -> list[Any]:
        method = {"validate": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}[
            name
        ]
        step = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}[name]
        loaders = dataloaders
        if loaders is None and self._datamodule is not None:
            loaders = getattr(self._datamodule, method)()
        if loaders is None and self._model is not None:
            loaders = getattr(self._model, method)()
        loaders = _as_list(loaders)
        if not loaders:
            raise ValueError(
                f"Trainer.{name} found no data: pass dataloaders=, a datamodule= with {method}(), or implement "
                f"{method}() in the TrainingModule."
            )
        if name != "predict" and not _overrides(self._model, TrainingModule, step):
            raise ValueError(f"Trainer.{name}: {type(self._model).__name__} does not implement {step}().")
        if name == "validate":
            self._val_loaders = [self._process_loader(loader) for loader in loaders]
            return self._val_loaders
        return [self._process_loader(loader, evaluation=True) for loader in loaders]

    def _process_loader(self, loader: Any, evaluation: bool = False) -> Any:
        """A loader as the Trainer runs it: seeded workers (``seed_everything(workers=True)``), and the
        strategy's distributed sampler unless ``use_distributed_sampler=False``."""
        if seeds_workers() and isinstance(loader, DataLoader) and loader.worker_init_fn is None:
            loader.worker_init_fn = functools.partial(worker_init_function, rank=self.global_rank)
        if not self._cfg.use_distributed_sampler:
            return loader
        return self._strategy.process_dataloader(loader, evaluation=evaluation)


__all__ = ["EvaluationEntryPoints", "PredictLoop"]
