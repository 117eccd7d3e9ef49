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
    """Subclass it; implement ``training_step`` and ``configure_optimizers`` (``validation_step`` optional)."""

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

    def optimizers(self) -> Any:
        opts = self.trainer.optimizers
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers(self) -> Any:
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        return configs[0].scheduler if len(configs) == 1 else [c.scheduler for c in configs]

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
    ) -> None:
        """Record a metric; it feeds ``trainer.callback_metrics`` (what ModelCheckpoint monitors).

        Defaults: from ``training_step`` logged per step; from ``validation_step`` averaged over the epoch.
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

    def configure_model(self) -> None:
        """Create layers lazily (called by sharded strategies before wrapping)."""

    # -- checkpoints ----------------------------------------------------------------------------------------

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool = True,
        checkpoint_io: CheckpointIO | None = None,
        *,
        verify_integrity: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild the module from a checkpoint: stored hyperparameters (``kwargs`` win), then the weights.

        Loads with ``weights_only=True`` (no code from the file runs); works with weights-only files, full
        training checkpoints and sharded checkpoint folders. Every read (the checkpoint, ``hparams_file``)
        goes through `checkpoint_io` (a `TorchCheckpointIO` by default: local paths and fsspec URLs). The
        CRC32 of every record it uses is checked first; pass ``verify_integrity=False`` (or set
        ``SAVEPOINT_VERIFY_INTEGRITY=0``) to skip only that check.
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
