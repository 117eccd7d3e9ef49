"""`DataModule`: the data of a run in one object, with hyperparameters and checkpointed state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from savepoint._loading import load_datamodule_from_checkpoint
from savepoint.hparams import HyperparametersMixin
from savepoint.plugins.io.checkpoint_io import CheckpointIO

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


class DataModule(HyperparametersMixin):
    """Subclass it: ``prepare_data`` (once per machine), ``setup(stage)`` (every process), dataloaders.

    ``state_dict``/``load_state_dict`` carry any state the data needs across a resume (it is saved in
    every checkpoint under ``datamodule_state``).
    """

    def __init__(self) -> None:
        self._init_hparams()
        self.trainer: Trainer | None = None

    def prepare_data(self) -> None:
        """Download or write data; runs on one process per machine."""

    def setup(self, stage: str) -> None:
        """Build datasets; ``stage`` is "fit" or "validate"."""

    def teardown(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement train_dataloader() to be used by fit()"
        )

    def val_dataloader(self) -> Any:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        hparams_file: str | Path | None = None,
        checkpoint_io: CheckpointIO | None = None,
        *,
        verify_integrity: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild the datamodule from the hyperparameters and state stored in a checkpoint, read through
        `checkpoint_io` (a `TorchCheckpointIO` by default). The CRC32s of the records it reads are checked;
        ``verify_integrity=False`` skips that check."""
        return load_datamodule_from_checkpoint(
            cls,
            checkpoint_path,
            hparams_file=hparams_file,
            checkpoint_io=checkpoint_io,
            verify_integrity=verify_integrity,
            **kwargs,
        )
