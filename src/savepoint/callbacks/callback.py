"""`Callback`: code that runs at fixed points of the training loop.

Where each hook fires (``fit``), module hook first, then callbacks in list order, with `Checkpoint`
callbacks moved to the end so a save sees every other callback's update for the same event::

    fit(model, ckpt_path=...)
    ├── setup(stage="fit")                         datamodule and module set up, checkpoint folders checked
    ├── [restore from ckpt_path]                   on_load_checkpoint(checkpoint) / load_state_dict(state)
    ├── configure_optimizers
    ├── on_fit_start                               before optimizer/loop states are restored (as Lightning)
    ├── [restore optimizers, schedulers, loop position, RNG]
    ├── sanity check: on_sanity_check_start, validation batches, on_sanity_check_end
    ├── on_train_start
    ├── for each epoch:
    │   ├── on_train_epoch_start
    │   ├── for each batch:
    │   │   ├── on_train_batch_start(batch, batch_idx)
    │   │   ├── training_step -> on_before_backward -> backward -> on_after_backward
    │   │   ├── when the accumulation window closes:
    │   │   │     on_before_optimizer_step -> optimizer.step() -> on_before_zero_grad -> zero_grad
    │   │   │     step-interval LR schedulers; global_step += 1
    │   │   ├── on_train_batch_end(outputs, batch, batch_idx)        <- step / time triggered saves
    │   │   └── if validation is due (val_check_interval, check_val_every_n_epoch):
    │   │         on_validation_start, on_validation_epoch_start,
    │   │         [on_validation_batch_start, validation_step, on_validation_batch_end]...,
    │   │         on_validation_epoch_end, on_validation_end        <- saves after validation (default)
    │   ├── on_train_epoch_end                                      <- save_on_train_epoch_end saves
    │   └── epoch-interval LR schedulers
    ├── on_train_end
    ├── on_fit_end
    └── teardown(stage="fit")                      pending async writes committed, errors raised

    validate / test(model, dataloaders, ckpt_path=...)      (test: the same with on_test_* and test_step)
    ├── setup(stage="validate" | "test")
    ├── [weights from ckpt_path: a path, "best" or "last"]
    ├── on_{validation|test}_start, on_{validation|test}_epoch_start
    ├── for each dataloader, for each batch:
    │     on_test_batch_start(batch, batch_idx[, dataloader_idx]) -> test_step
    │     -> on_test_batch_end(outputs, batch, batch_idx[, dataloader_idx])
    ├── on_test_epoch_end                           logged values aggregated: the returned results
    ├── on_test_end
    └── teardown(stage="test")

    predict(model, dataloaders, ckpt_path=..., return_predictions=...)
    ├── setup(stage="predict"), [weights from ckpt_path]
    ├── on_predict_start, on_predict_epoch_start
    ├── for each dataloader, for each batch:
    │     on_predict_batch_start -> predict_step -> on_predict_batch_end  <- BasePredictionWriter("batch")
    ├── on_predict_epoch_end                                               <- BasePredictionWriter("epoch")
    ├── on_predict_end
    └── teardown(stage="predict")

    Manual optimization (automatic_optimization = False): training_step itself calls
    manual_backward (on_before_backward -> backward -> on_after_backward) and opt.step()
    (on_before_optimizer_step -> step; global_step += 1 per optimizer step); no automatic zero_grad.

    Trainer.save_checkpoint (any time): on_save_checkpoint(trainer, module, checkpoint) on every callback,
    then the module's on_save_checkpoint(checkpoint), then Strategy -> CheckpointIO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class Callback:
    """Base class: override the hooks you need. Stateful callbacks override ``state_dict``/``load_state_dict``."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in ``checkpoint["callbacks"]``; unique per distinct configuration."""
        return type(self).__qualname__

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{type(self).__qualname__}{kwargs!r}"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: TrainingModule, checkpoint: dict[str, Any]
    ) -> None: ...
    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: TrainingModule, checkpoint: dict[str, Any]
    ) -> None: ...

    def setup(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None: ...
    def teardown(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None: ...
    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_fit_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_sanity_check_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_sanity_check_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: TrainingModule, batch: Any, batch_idx: int
    ) -> None: ...
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None: ...
    def on_validation_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: TrainingModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: TrainingModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...
    def on_test_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_test_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_test_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_test_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_test_batch_start(
        self, trainer: Trainer, pl_module: TrainingModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: TrainingModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...
    def on_predict_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_predict_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: TrainingModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: TrainingModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...
    def on_before_backward(self, trainer: Trainer, pl_module: TrainingModule, loss: Any) -> None: ...
    def on_after_backward(self, trainer: Trainer, pl_module: TrainingModule) -> None: ...
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: TrainingModule, optimizer: Any
    ) -> None: ...
    def on_before_zero_grad(self, trainer: Trainer, pl_module: TrainingModule, optimizer: Any) -> None: ...
    def on_exception(self, trainer: Trainer, pl_module: TrainingModule, exception: BaseException) -> None: ...
