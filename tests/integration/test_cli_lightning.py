"""Lightning files both ways, with the real Lightning 2.x: what `convert --to lightning` writes resumes in
Lightning exactly where savepoint resumes (epoch, step, batch, learning rate, optimizer state), and what
Lightning writes (Namespace hyperparameters included) reads in savepoint without unpickling code."""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import savepoint as sp
from helpers import loaders
from savepoint.cli import main

L = pytest.importorskip("lightning")


def _configure(self):
    opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


class SavepointNet(sp.TrainingModule):
    def __init__(self, lr: float = 0.1, dims: tuple = (8, 2)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(*dims)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    configure_optimizers = _configure


class LightningNet(L.LightningModule):
    def __init__(self, lr: float = 0.1, dims: tuple = (8, 2)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(*dims)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    configure_optimizers = _configure


class _Stop(Exception):
    pass


def _first_batch_state(trainer, batch_idx) -> dict:
    opt = trainer.optimizers[0]
    return {
        "epoch": trainer.current_epoch,
        "step": trainer.global_step,
        "batch_idx": batch_idx,
        "lr": opt.param_groups[0]["lr"],
        "momentum": {i: s["momentum_buffer"].clone() for i, s in opt.state_dict()["state"].items()},
    }


def _resume_in_savepoint(path) -> dict:
    seen = {}

    class Probe(sp.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.update(_first_batch_state(trainer, batch_idx))
            raise _Stop

    trainer = sp.Trainer(
        max_epochs=3, enable_progress_bar=False, enable_checkpointing=False, callbacks=[Probe()]
    )
    with pytest.raises(_Stop):
        trainer.fit(SavepointNet(), *loaders(), ckpt_path=str(path))
    return seen


def _resume_in_lightning(path) -> dict:
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.update(_first_batch_state(trainer, batch_idx))
            raise _Stop

    trainer = L.Trainer(
        max_epochs=3,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    with warnings.catch_warnings(), pytest.raises(_Stop):
        warnings.simplefilter("ignore")
        trainer.fit(LightningNet(), *loaders(), ckpt_path=str(path))
    return seen


@pytest.fixture(scope="module")
def savepoint_run(tmp_path_factory):
    """Checkpoints at each kind of save point: mid-epoch, after the last batch, after the epoch's
    validation (before the epoch-end scheduler step savepoint takes later than Lightning), after fit."""
    root = tmp_path_factory.mktemp("sp")
    callbacks = [
        sp.ModelCheckpoint(dirpath=str(root / "steps"), every_n_train_steps=4, save_top_k=-1),
        sp.ModelCheckpoint(dirpath=str(root / "epochs"), monitor="val_loss", save_top_k=-1),
    ]
    trainer = sp.Trainer(max_epochs=2, enable_progress_bar=False, callbacks=callbacks)
    trainer.fit(SavepointNet(), *loaders())
    trainer.save_checkpoint(root / "after_fit.ckpt")
    return root


@pytest.mark.filterwarnings("ignore:.*holds state for callback")
@pytest.mark.parametrize(
    "name",
    [
        "steps/epoch=0-step=4.ckpt",
        "steps/epoch=0-step=8.ckpt",
        "epochs/epoch=0-step=8.ckpt",
        "after_fit.ckpt",
    ],
)
def test_convert_to_lightning_resumes_like_savepoint(savepoint_run, tmp_path, name):
    source = savepoint_run / name
    assert main(["convert", str(source), str(tmp_path / "for_lightning.ckpt"), "--to", "lightning"]) == 0
    expected = _resume_in_savepoint(source)
    got = _resume_in_lightning(tmp_path / "for_lightning.ckpt")
    assert (got["epoch"], got["step"], got["batch_idx"], got["lr"]) == (
        expected["epoch"],
        expected["step"],
        expected["batch_idx"],
        expected["lr"],
    )
    assert got["momentum"].keys() == expected["momentum"].keys()
    assert all(torch.equal(got["momentum"][k], expected["momentum"][k]) for k in got["momentum"])


def test_converted_file_loads_with_lightning_load_from_checkpoint(savepoint_run, tmp_path):
    assert (
        main(
            ["convert", str(savepoint_run / "after_fit.ckpt"), str(tmp_path / "l.ckpt"), "--to", "lightning"]
        )
        == 0
    )
    model = LightningNet.load_from_checkpoint(tmp_path / "l.ckpt")
    stored = torch.load(savepoint_run / "after_fit.ckpt", weights_only=True)["state_dict"]
    assert model.hparams.dims == (8, 2) and torch.equal(model.net.weight, stored["net.weight"])


class NamespaceNet(L.LightningModule):
    # With a second argument, Lightning keeps the Namespace as one pickled hyperparameter.
    def __init__(self, args: argparse.Namespace, out: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, out)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.args.lr)


class SavepointNamespaceNet(sp.TrainingModule):
    def __init__(self, args: argparse.Namespace, out: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, out)


@pytest.fixture
def lightning_file(tmp_path):
    trainer = L.Trainer(
        max_epochs=1,
        enable_progress_bar=False,
        logger=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(NamespaceNet(argparse.Namespace(lr=0.1, layers=[1, 2])), loaders()[0])
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")
    return tmp_path / "lightning.ckpt"


@pytest.mark.writes_unsafe_files  # Lightning pickles the Namespace: plain weights_only loads refuse it
def test_lightning_file_with_namespace_hparams_reads_without_trust_pickle(lightning_file, capsys):
    model = SavepointNamespaceNet.load_from_checkpoint(lightning_file)
    assert main(["verify", str(lightning_file)]) == 0  # verify accepts what loading accepts
    capsys.readouterr()
    assert model.hparams.args == argparse.Namespace(lr=0.1, layers=[1, 2])
    assert main(["inspect", str(lightning_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written_by"] == f"lightning {L.__version__}"
    assert summary["hyper_parameters"] == {"args": {"lr": 0.1, "layers": [1, 2]}, "out": 2}


@pytest.mark.writes_unsafe_files
def test_convert_to_savepoint_keeps_the_lightning_version_visible(lightning_file, tmp_path, capsys):
    assert main(["convert", str(lightning_file), str(tmp_path / "sp.ckpt"), "--to", "savepoint"]) == 0
    converted = torch.load(tmp_path / "sp.ckpt", weights_only=True)  # the Namespace is encoded now
    assert converted["pytorch-lightning_version"] == L.__version__
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "sp.ckpt")]) == 0
    assert f"lightning {L.__version__} (converted by savepoint {sp.__version__})" in capsys.readouterr().out
