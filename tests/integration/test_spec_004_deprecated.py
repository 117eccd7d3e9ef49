"""Document 004, the older API: accepted, each with a DeprecationWarning naming the new argument."""

import argparse
import os

import pytest
import torch

from helpers import TinyModel, loaders
from savepoint import Trainer
from savepoint.callbacks import ModelCheckpoint


def test_default_save_path_means_default_root_dir(tmp_path):
    with pytest.warns(DeprecationWarning, match="default_root_dir"):
        trainer = Trainer(
            default_save_path="/your/path/to/save/checkpoints".replace("/your", str(tmp_path)),
            max_epochs=1,
            enable_progress_bar=False,
        )
    assert trainer.default_root_dir == str(tmp_path / "path/to/save/checkpoints")


def test_checkpoint_callback_argument_with_the_old_defaults(tmp_path):
    with pytest.warns(DeprecationWarning) as record:
        checkpoint_callback = ModelCheckpoint(
            filepath=os.getcwd(), save_top_k=True, verbose=True, monitor="val_loss", mode="min", prefix=""
        )
        trainer = Trainer(checkpoint_callback=checkpoint_callback, max_epochs=2, enable_progress_bar=False)
    messages = " ".join(str(w.message) for w in record)
    assert "dirpath" in messages and "enable_checkpointing" in messages and "int" in messages
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert trainer.checkpoint_callback is checkpoint_callback
    assert os.path.dirname(checkpoint_callback.best_model_path) == str(tmp_path)


def test_checkpoint_callback_false_disables_checkpointing(tmp_path):
    with pytest.warns(DeprecationWarning, match="enable_checkpointing"):
        trainer = Trainer(checkpoint_callback=False, max_epochs=1, enable_progress_bar=False)
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert trainer.checkpoint_callback is None and not list(tmp_path.rglob("*.ckpt"))


def test_filepath_with_a_file_name_and_prefix(tmp_path):
    with pytest.warns(DeprecationWarning):
        cb = ModelCheckpoint(filepath=str(tmp_path / "out" / "{epoch}"), prefix="exp")
    assert cb.dirpath == str(tmp_path / "out")
    train, val = loaders()
    Trainer(callbacks=[cb], max_epochs=1, enable_progress_bar=False).fit(TinyModel(), train, val)
    assert os.listdir(tmp_path / "out") == ["exp-epoch=0.ckpt"]


def test_hparams_namespace_assigned_in_init_roundtrips(tmp_path):
    class MyModel(TinyModel):
        def __init__(self, hparams):
            super().__init__(in_dim=hparams.in_dim)
            self.hparams = hparams

    args = argparse.Namespace(learning_rate=0.001, in_dim=8, lr=0.1)
    with pytest.warns(DeprecationWarning, match="save_hyperparameters"):
        model = MyModel(args)
    trainer = Trainer(max_epochs=1, enable_progress_bar=False)
    train, val = loaders()
    trainer.fit(model, train, val)
    trainer.save_checkpoint("example.ckpt")
    with pytest.warns(DeprecationWarning):
        new_model = MyModel.load_from_checkpoint(checkpoint_path="example.ckpt")
    assert new_model.hparams.learning_rate == 0.001
    assert isinstance(torch.load("example.ckpt", weights_only=True)["hyper_parameters"], dict)


def test_individual_parameters_restored_by_keyword(tmp_path):
    class MyModel(TinyModel):
        def __init__(self, in_dim, out_dim):
            super().__init__(in_dim=in_dim)

    trainer = Trainer(max_epochs=1, enable_progress_bar=False, enable_checkpointing=False)
    train, val = loaders()
    trainer.fit(MyModel(8, 2), train, val)
    trainer.save_checkpoint("p.ckpt")
    model = MyModel.load_from_checkpoint("p.ckpt", in_dim=8, out_dim=10)
    assert model.hparams.in_dim == 8


def test_resume_from_checkpoint_restores_training(tmp_path):
    train, val = loaders()
    first = Trainer(max_epochs=1, enable_progress_bar=False)
    first.fit(TinyModel(), train, val)
    with pytest.warns(DeprecationWarning, match="ckpt_path"):
        trainer = Trainer(
            resume_from_checkpoint=first.checkpoint_callback.best_model_path,
            max_epochs=3,
            enable_progress_bar=False,
        )
    trainer.fit(TinyModel(), train, val)
    assert trainer.global_step == 24


def test_period_means_every_n_epochs():
    with pytest.warns(DeprecationWarning, match="every_n_epochs"):
        cb = ModelCheckpoint(period=3)
    assert cb.every_n_epochs == 3
