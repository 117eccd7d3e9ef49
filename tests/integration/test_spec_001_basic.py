"""Every example of spec 001 (checkpointing basic), with TrainingModule for LightningModule."""

import argparse
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import savepoint as sp
from helpers import NoValModel, TinyModel, loaders, quiet_trainer
from savepoint import Trainer


def test_trainer_checkpoints_automatically_into_the_working_directory(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer()  # "simply by using the Trainer you get automatic checkpointing"
    trainer.fit(TinyModel(), train, val)
    files = sorted(os.listdir(tmp_path / "runs" / "version_0" / "checkpoints"))
    assert files == ["epoch=1-step=16.ckpt"]  # keeps the latest, named epoch={epoch}-step={step}
    assert (tmp_path / "runs" / "version_0" / "hparams.yaml").exists()
    # the default logger is TensorBoard when it is installed (CSV otherwise), as in Lightning
    assert list((tmp_path / "runs" / "version_0").glob("events.out.tfevents.*"))


def test_default_root_dir_changes_where_checkpoints_go(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(default_root_dir="some/path/")
    trainer.fit(TinyModel(), train, val)
    assert trainer.log_dir == str(tmp_path / "some/path/runs/version_0")
    assert os.listdir(tmp_path / "some/path/runs/version_0/checkpoints") == ["epoch=1-step=16.ckpt"]


def test_checkpoint_contains_everything_the_spec_lists():
    train, val = loaders()
    trainer = quiet_trainer(precision="16-mixed")
    trainer.fit(TinyModel(), train, val)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    for key in (
        "epoch",
        "global_step",
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "loops",
        "hyper_parameters",
        "grad_scaler",
        "rng_states",
        "savepoint_version",
        "format_version",
    ):
        assert key in ckpt, key
    assert ckpt["grad_scaler"]["scale"] > 0


def test_load_from_checkpoint_then_predict():
    train, val = loaders()
    trainer = quiet_trainer()
    model = TinyModel(hidden=12)
    trainer.fit(model, train, val)
    loaded = TinyModel.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    loaded.eval()
    x = torch.randn(3, 8)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.hparams.hidden == 12


def test_hyper_parameters_key_holds_init_arguments():
    class MyModule(sp.TrainingModule):
        def __init__(self, learning_rate, another_parameter, *args, **kwargs):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(MyModule(0.01, "x"), train, val)
    checkpoint = torch.load(
        trainer.checkpoint_callback.best_model_path, map_location=lambda storage, loc: storage
    )
    assert checkpoint["hyper_parameters"] == {"learning_rate": 0.01, "another_parameter": "x"}
    model = MyModule.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert model.hparams.learning_rate == 0.01


class LitModel(TinyModel):
    def __init__(self, in_dim=32, out_dim=10):
        super().__init__(in_dim=in_dim)
        self.save_hyperparameters()
        self.head = nn.Linear(2, out_dim)


def test_load_from_checkpoint_overrides_hyperparameters(tmp_path):
    model = LitModel(in_dim=32, out_dim=10)
    trainer = quiet_trainer()
    trainer.strategy.connect(model)
    model.trainer = trainer
    trainer._model = model
    trainer.save_checkpoint(tmp_path / "lit.ckpt")
    assert LitModel.load_from_checkpoint(tmp_path / "lit.ckpt").hparams.out_dim == 10
    with pytest.raises(
        sp.StateMismatchError, match=r"net.0.weight: checkpoint \(16, 32\) vs module \(16, 128\)"
    ):
        LitModel.load_from_checkpoint(tmp_path / "lit.ckpt", in_dim=128, out_dim=10)
    m = LitModel.load_from_checkpoint(tmp_path / "lit.ckpt", strict=False, out_dim=10)
    assert m.hparams.in_dim == 32


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x):
        return self.l(x)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 2)

    def forward(self, x):
        return self.l(x)


class LitAutoEncoder(sp.TrainingModule):
    def __init__(self, encoder, decoder, *args, **kwargs):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder"])
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.decoder(self.encoder(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_modules_passed_to_init_are_supplied_at_load_time():
    train, _ = loaders()
    trainer = quiet_trainer(max_epochs=1)
    autoencoder = LitAutoEncoder(Encoder(), Decoder())
    trainer.fit(autoencoder, train)
    path = trainer.checkpoint_callback.best_model_path
    with pytest.raises(TypeError, match=r"needs \['encoder', 'decoder'\].*ignore"):
        LitAutoEncoder.load_from_checkpoint(path)
    model = LitAutoEncoder.load_from_checkpoint(path, encoder=Encoder(), decoder=Decoder())
    assert torch.equal(model.encoder.l.weight, autoencoder.encoder.l.weight)

    # nn.Module from checkpoint: plain torch.load, pull out the weights
    checkpoint = torch.load(path)
    encoder_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    decoder_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
    enc = Encoder()
    enc.load_state_dict({k.removeprefix("encoder."): v for k, v in encoder_weights.items()})
    assert set(decoder_weights) == {"decoder.l.weight", "decoder.l.bias"}
    assert torch.equal(enc.l.weight, autoencoder.encoder.l.weight)


def test_unstorable_hparam_warns_at_save_hyperparameters_time():
    class Holder(TinyModel):
        def __init__(self, backbone, lr=0.1):
            super().__init__(lr=lr)
            self.save_hyperparameters()
            self.backbone = backbone

    train, _ = loaders()
    with pytest.warns(UserWarning, match=r"ignore=\['backbone'\]"):
        trainer = quiet_trainer(max_epochs=1)
        trainer.fit(Holder(nn.Linear(1, 1)), train)


def test_disable_checkpointing(tmp_path):
    train, val = loaders()
    trainer = Trainer(enable_checkpointing=False, max_epochs=1, enable_progress_bar=False)
    trainer.fit(TinyModel(), train, val)
    assert trainer.checkpoint_callback is None
    assert not list(tmp_path.rglob("*.ckpt"))


def test_resume_restores_full_training_state():
    train, val = loaders()
    first = quiet_trainer(max_epochs=2)
    model = TinyModel()
    first.fit(model, train, val)
    path = first.checkpoint_callback.best_model_path

    model2 = TinyModel()
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(
        model2, train, val, ckpt_path=path
    )  # "automatically restores model, epoch, step, LR schedulers"
    assert trainer.current_epoch == 3 and trainer.global_step == 24


def test_resume_from_last_and_best():
    train, val = loaders()
    quiet_trainer(max_epochs=1, callbacks=[sp.ModelCheckpoint(monitor="val_loss", save_last=True)]).fit(
        TinyModel(), train, val
    )
    t = quiet_trainer(max_epochs=2, callbacks=[sp.ModelCheckpoint(monitor="val_loss", save_last=True)])
    t.fit(TinyModel(), train, val, ckpt_path="last")
    assert t.global_step == 16
    t2 = quiet_trainer(max_epochs=3, callbacks=[sp.ModelCheckpoint(monitor="val_loss", save_last=True)])
    t2.fit(TinyModel(), train, val, ckpt_path="best")
    assert t2.global_step == 24


def test_resume_from_checkpoint_argument_is_deprecated_but_works():
    train, val = loaders()
    first = quiet_trainer(max_epochs=1)
    first.fit(TinyModel(), train, val)
    with pytest.warns(DeprecationWarning, match=r"fit\(model, ckpt_path=...\)"):
        trainer = Trainer(
            resume_from_checkpoint=first.checkpoint_callback.best_model_path,
            max_epochs=2,
            enable_progress_bar=False,
        )
    trainer.fit(TinyModel(), train, val)
    assert trainer.global_step == 16


def test_manual_save_and_reload(tmp_path):
    train, val = loaders()
    model = TinyModel(hidden=5)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, train, val)
    trainer.save_checkpoint("example.ckpt")
    new_model = TinyModel.load_from_checkpoint(checkpoint_path="example.ckpt")
    assert new_model.hparams.hidden == 5


def test_namespace_hparams_of_document_004_roundtrip(tmp_path):
    class MyModel(TinyModel):
        def __init__(self, hparams):
            super().__init__(in_dim=hparams.in_dim)
            self.save_hyperparameters(hparams)

    train, _ = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(MyModel(argparse.Namespace(in_dim=8, learning_rate=0.001)), train)
    trainer.save_checkpoint("example.ckpt")
    loaded = MyModel.load_from_checkpoint("example.ckpt")
    assert loaded.hparams.learning_rate == 0.001


def test_no_validation_saves_at_train_epoch_end(tmp_path):
    train, _ = loaders()
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(NoValModel(), train)
    assert os.path.basename(trainer.checkpoint_callback.best_model_path) == "epoch=1-step=16.ckpt"


def test_load_from_checkpoint_misspelt_keyword_is_ignored_with_a_warning(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(TinyModel(), train, val)
    with pytest.warns(UserWarning, match="hiden"):
        model = TinyModel.load_from_checkpoint(trainer.checkpoint_callback.best_model_path, hiden=32)
    assert model.hparams.hidden == 16
