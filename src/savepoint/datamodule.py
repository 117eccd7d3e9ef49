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
        """Build datasets; ``stage`` is "fit", "validate", "test" or "predict"."""

    def teardown(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement train_dataloader() to be used by fit()"
        )

    def val_dataloader(self) -> Any:
        return None

    def test_dataloader(self) -> Any:
        return None

    def predict_dataloader(self) -> Any:
        return None

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> DataModule:
        """A DataModule serving plain DataLoaders over the given datasets (a dataset, or a list of them);
        the training loader shuffles."""
        from torch.utils.data import DataLoader

        def loaders(ds: Any, shuffle: bool) -> Any:
            if isinstance(ds, list | tuple):
                return [loaders(d, shuffle) for d in ds]
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)

        datamodule = cls(**datamodule_kwargs)
        for name, ds, shuffle in (
            ("train_dataloader", train_dataset, True),
            ("val_dataloader", val_dataset, False),
            ("test_dataloader", test_dataset, False),
            ("predict_dataloader", predict_dataset, False),
        ):
            if ds is not None:
                setattr(datamodule, name, lambda ds=ds, shuffle=shuffle: loaders(ds, shuffle))
        return datamodule

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        checkpoint_io: CheckpointIO | None = None,
        *,
        verify_integrity: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild the datamodule from the hyperparameters and state stored in a checkpoint (from its defaults
        and `kwargs` when the file stores no datamodule hyperparameters), read through `checkpoint_io` (a
        `TorchCheckpointIO` by default). The CRC32s of the records it reads are checked;
        ``verify_integrity=False`` skips that check."""
        return load_datamodule_from_checkpoint(
            cls,
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            checkpoint_io=checkpoint_io,
            verify_integrity=verify_integrity,
            **kwargs,
        )
