"""`TrainingModule`: an ``nn.Module`` that knows how to train, log and checkpoint itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from savepoint._loading import load_module_from_checkpoint
from savepoint.hparams import HyperparametersMixin
from savepoint.plugins.io.checkpoint_io import CheckpointIO

if TYPE_CHECKING:
    from savepoint.loggers import Logger
    from savepoint.trainer.trainer import Trainer


class TrainingModule(HyperparametersMixin, nn.Module):
    """Subclass it; implement ``training_step`` and ``configure_optimizers`` (``validation_step`` optional).

    Set ``self.automatic_optimization = False`` to step the optimizers yourself in ``training_step``
    (``self.optimizers()``, ``self.manual_backward(loss)``, ``opt.step()``): every ``opt.step()`` counts as
    one ``global_step``, as in Lightning.
    """

    automatic_optimization: bool = True

    _strict_loading: bool | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_hparams()
        self._trainer: Trainer | None = None
        self._current_fx: str | None = None

    # -- the Trainer's state, seen from the module ---------------------------------------------------------

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a Trainer; call `trainer.fit(model)` first."
            )
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def strict_loading(self) -> bool:
        """Whether checkpoint weights must match the module key for key (``load_from_checkpoint(strict=None)``
        and ``fit(ckpt_path=)``). True unless set to False."""
        return self._strict_loading in (None, True)

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        object.__setattr__(self, "_strict_loading", value)

    def __getstate__(self) -> dict[str, Any]:
        # A copy of the module (pickle, deepcopy, torch.save) is detached from the Trainer, as users know it.
        state = dict(self.__dict__)
        state["_trainer"] = None
        return state

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def logger(self) -> Logger | None:
        """The Trainer's first logger (``self.logger.experiment`` is e.g. TensorBoard's ``SummaryWriter``)."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Logger]:
        """Every logger of the Trainer (empty when not attached)."""
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer (or list of them). Wrapped by default, so that ``step()`` is counted, runs the
        optimizer hooks and applies the precision's grad scaler; ``use_pl_optimizer=False`` gives the raw ones."""
        opts = self.trainer._step_optimizers if use_pl_optimizer else self.trainer.optimizers
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        return configs[0].scheduler if len(configs) == 1 else [c.scheduler for c in configs]

    # -- manual optimization ------------------------------------------------------------------------------

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward()`` with the precision's scaling and the backward hooks (manual optimization only)."""
        if self.automatic_optimization:
            raise RuntimeError(
                f"{type(self).__name__}.manual_backward is for manual optimization: set "
                f"`self.automatic_optimization = False` in __init__, or return the loss from training_step."
            )
        self.trainer._manual_backward(loss, *args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Only `optimizer`'s parameters require grad until ``untoggle_optimizer`` (GAN-style alternation)."""
        state: dict[nn.Parameter, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if param not in state:
                        state[param] = param.requires_grad
                        param.requires_grad = False
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.requires_grad = state[param]
        object.__setattr__(self, "_param_requires_grad_state", state)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        state = getattr(self, "_param_requires_grad_state", {})
        raw = getattr(optimizer, "optimizer", optimizer)
        for opt in self.trainer.optimizers:
            if opt is raw:
                continue
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in state:
                        param.requires_grad = state[param]
        object.__setattr__(self, "_param_requires_grad_state", {})

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of `optimizer`'s parameters (defaults: the Trainer's clipping arguments)."""
        self.trainer._clip_gradients(
            getattr(optimizer, "optimizer", optimizer), gradient_clip_val, gradient_clip_algorithm
        )

    def freeze(self) -> TrainingModule:
        """No parameter requires grad, and the module is in eval mode."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> TrainingModule:
        for param in self.parameters():
            param.requires_grad = True
        return self.train()

    # -- logging ------------------------------------------------------------------------------------------

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Any = "mean",
        sync_dist: bool = False,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
        add_dataloader_idx: bool = True,
        metric_attribute: str | None = None,
        enable_graph: bool = False,
        sync_dist_group: Any = None,
    ) -> None:
        """Record a metric; it feeds ``trainer.callback_metrics`` (what ModelCheckpoint monitors).

        Defaults: from ``training_step`` logged per step; from ``validation_step`` averaged over the epoch.
        `value` may be a torchmetrics ``Metric``: it is updated by the step and computed and reset at the
        epoch end. With ``on_step=True, on_epoch=True`` the keys are ``<name>_step`` and ``<name>_epoch``.
        """
        if self._trainer is None:
            return
        self._trainer._metrics.log(
            self._current_fx or "",
            name,
            value,
            prog_bar=prog_bar,
            logger=logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            batch_size=batch_size,
            rank_zero_only=rank_zero_only,
            add_dataloader_idx=add_dataloader_idx,
            enable_graph=enable_graph,
        )

    def log_dict(self, dictionary: Mapping[str, Any], **kwargs: Any) -> None:
        for name, value in dictionary.items():
            self.log(name, value, **kwargs)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    # -- hooks the Trainer calls (all optional but training_step / configure_optimizers) --------------------

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(batch, batch_idx)")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> Any:
        """Default: ``self(batch)``."""
        return self(batch)

    def configure_optimizers(self) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement configure_optimizers() returning an optimizer, a list, "
            f"(optimizers, schedulers), or a dict with 'optimizer' and 'lr_scheduler'."
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add to or change the checkpoint dict before it is written."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read what ``on_save_checkpoint`` added; called before the weights are loaded."""

    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None: ...

    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any:
        return None

    def val_dataloader(self) -> Any:
        return None

    def test_dataloader(self) -> Any:
        return None

    def predict_dataloader(self) -> Any:
        return None

    def configure_model(self) -> None:
        """Create layers lazily (called by sharded strategies before wrapping)."""

    # -- checkpoints ----------------------------------------------------------------------------------------

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        checkpoint_io: CheckpointIO | None = None,
        *,
        verify_integrity: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild the module from a checkpoint: stored hyperparameters (``kwargs`` win), then the weights.

        The file is always loaded with ``torch.load(weights_only=True)`` (no code from it runs), whatever
        ``weights_only`` says: the argument is accepted for compatibility. ``strict=None`` uses the module's
        ``strict_loading``. Keyword arguments ``__init__`` does not take are ignored with a warning. Works with
        weights-only files, full training checkpoints and sharded checkpoint folders. Every read (the
        checkpoint, ``hparams_file``) goes through `checkpoint_io` (a `TorchCheckpointIO` by default: local
        paths and fsspec URLs). The CRC32 of every record it uses is checked first; pass
        ``verify_integrity=False`` (or set ``SAVEPOINT_VERIFY_INTEGRITY=0``) to skip only that check.
        """
        return load_module_from_checkpoint(
            cls,
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            checkpoint_io=checkpoint_io,
            verify_integrity=verify_integrity,
            **kwargs,
        )
