"""Spec 002: the Checkpoint base class, custom CheckpointIO through the Trainer or a Strategy, AsyncCheckpointIO."""

import os

import pytest
import torch

from helpers import TinyModel, loaders, quiet_trainer
from savepoint import Trainer
from savepoint.callbacks import Checkpoint, ModelCheckpoint
from savepoint.plugins import CheckpointIO
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from savepoint.strategies import SingleDeviceStrategy


class CustomCheckpointIO(CheckpointIO):
    """Stores checkpoints in a dict: proves every save, load and removal goes through the plugin."""

    def __init__(self):
        self.store: dict[str, dict] = {}
        self.calls: list[str] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.calls.append(f"save {os.path.basename(path)}")
        self.store[path] = checkpoint

    def load_checkpoint(self, path, storage_options=None, **kwargs):
        self.calls.append(f"load {os.path.basename(path)}")
        return self.store[path]

    def remove_checkpoint(self, path):
        self.calls.append(f"remove {os.path.basename(path)}")
        del self.store[path]


def test_custom_io_passed_to_the_trainer_sees_every_save(tmp_path):
    custom_checkpoint_io = CustomCheckpointIO()
    model = TinyModel()
    trainer = Trainer(
        plugins=[custom_checkpoint_io],
        callbacks=ModelCheckpoint(save_last=True),
        max_epochs=2,
        enable_progress_bar=False,
    )
    train, val = loaders()
    trainer.fit(model, train, val)
    assert custom_checkpoint_io.calls == [
        "save epoch=0-step=8.ckpt",
        "save last.ckpt",
        "save epoch=1-step=16.ckpt",
        "remove epoch=0-step=8.ckpt",
        "save last.ckpt",
    ]
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing bypassed the plugin


def test_custom_io_passed_to_the_strategy_sees_saves_and_loads(tmp_path):
    custom_checkpoint_io = CustomCheckpointIO()
    device = torch.device("cpu")
    trainer = Trainer(
        strategy=SingleDeviceStrategy(device, checkpoint_io=custom_checkpoint_io),
        callbacks=ModelCheckpoint(save_last=True),
        max_epochs=1,
        enable_progress_bar=False,
    )
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    last = trainer.checkpoint_callback.last_model_path
    trainer2 = Trainer(
        strategy=SingleDeviceStrategy(device, checkpoint_io=custom_checkpoint_io),
        callbacks=ModelCheckpoint(save_last=True),
        max_epochs=2,
        enable_progress_bar=False,
    )
    trainer2.fit(TinyModel(), train, val, ckpt_path=last)
    assert "load last.ckpt" in custom_checkpoint_io.calls
    assert trainer2.global_step == 16


def test_checkpoint_io_given_twice_is_a_value_error():
    with pytest.raises(ValueError, match="given twice"):
        Trainer(
            plugins=[TorchCheckpointIO()],
            strategy=SingleDeviceStrategy("cpu", checkpoint_io=CustomCheckpointIO()),
        )


def test_async_io_in_the_trainer_commits_every_file_before_fit_returns(tmp_path):
    async_ckpt_io = AsyncCheckpointIO()
    trainer = quiet_trainer(
        plugins=[async_ckpt_io], callbacks=[ModelCheckpoint(dirpath="ck", save_top_k=-1)], max_epochs=3
    )
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert sorted(os.listdir("ck")) == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "epoch=2-step=24.ckpt"]
    for name in os.listdir("ck"):
        assert torch.load(f"ck/{name}", weights_only=True)["state_dict"]


def test_async_io_with_a_custom_base():
    base_ckpt_io = CustomCheckpointIO()
    async_ckpt_io = AsyncCheckpointIO(checkpoint_io=base_ckpt_io)
    trainer = quiet_trainer(plugins=[async_ckpt_io], max_epochs=2)
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert base_ckpt_io.calls == [
        "save epoch=0-step=8.ckpt",
        "save epoch=1-step=16.ckpt",
        "remove epoch=0-step=8.ckpt",
    ]


def test_async_io_failure_surfaces_at_the_end_of_fit_with_the_path(tmp_path):
    class Failing(CustomCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            raise OSError("quota exceeded")

    trainer = quiet_trainer(plugins=[AsyncCheckpointIO(Failing())], max_epochs=1)
    train, val = loaders()
    with pytest.raises(Exception, match=r"epoch=0-step=8.ckpt|quota exceeded"):
        trainer.fit(TinyModel(), train, val)


class EveryEpoch(Checkpoint):
    """A user-written checkpointing callback."""

    def __init__(self, folder):
        self.folder = folder
        self.saved = []

    def on_train_epoch_end(self, trainer, pl_module):
        path = os.path.join(self.folder, f"mine-{trainer.current_epoch}.ckpt")
        trainer.save_checkpoint(path)
        self.saved.append(path)


def test_checkpoint_subclass_is_recognised_and_replaces_the_default(tmp_path):
    mine = EveryEpoch(str(tmp_path / "mine"))
    trainer = quiet_trainer(callbacks=[mine], max_epochs=2)
    assert trainer.checkpoint_callback is mine and trainer.checkpoint_callbacks == [mine]
    assert not any(isinstance(cb, ModelCheckpoint) for cb in trainer.callbacks)
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert sorted(os.listdir(tmp_path / "mine")) == ["mine-0.ckpt", "mine-1.ckpt"]


def test_checkpoint_callbacks_lists_every_instance_and_they_run_last():
    a, b = ModelCheckpoint(dirpath="a"), ModelCheckpoint(dirpath="b", monitor="val_loss")

    class Other(Checkpoint.__base__):  # a plain Callback
        pass

    other = Other()
    trainer = quiet_trainer(callbacks=[a, other, b])
    assert trainer.checkpoint_callbacks == [a, b] and trainer.checkpoint_callback is a
    assert trainer.callbacks.index(other) < trainer.callbacks.index(a)


def test_enable_checkpointing_false_with_a_checkpoint_callback_is_an_error():
    with pytest.raises(ValueError, match=r"enable_checkpointing=False.*ModelCheckpoint"):
        Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint()])
