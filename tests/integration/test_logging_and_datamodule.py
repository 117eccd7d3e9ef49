"""self.log defaults and naming, metrics.csv / hparams.yaml, and a DataModule's hyperparameters and state."""

import csv

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import savepoint as sp
from helpers import TinyModel, loaders, make_data, quiet_trainer


class Logs(TinyModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("both", float(batch_idx), on_step=True, on_epoch=True, prog_bar=True)
        self.log("summed", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
        return loss


def test_log_defaults_and_step_epoch_names(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, log_every_n_steps=1, logger=sp.loggers.CSVLogger(tmp_path))
    trainer.fit(Logs(), train, val)
    m = trainer.callback_metrics
    assert float(m["both_epoch"]) == pytest.approx(3.5)  # mean of batch_idx 0..7
    assert float(m["both_step"]) == 7.0
    assert float(m["summed"]) == 8.0
    assert "val_loss" in m and "train_loss" in m
    assert "both_step" in trainer.progress_bar_metrics
    with open(trainer.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows if r["train_loss"]][:3] == ["0", "1", "2"]  # the logging batch, from 0
    assert any(r["val_loss"] for r in rows) and any(r["both_epoch"] for r in rows)


def test_validation_metrics_are_batch_size_weighted_means():
    class Weighted(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("size", float(len(batch[0])))

    val = DataLoader(make_data(20), batch_size=8)  # batches of 8, 8, 4
    trainer = quiet_trainer(max_epochs=1)
    out = trainer.validate(Weighted(), val, verbose=False)
    assert out[0]["size"] == pytest.approx((8 * 8 + 8 * 8 + 4 * 4) / 20)


class Data(sp.DataModule):
    def __init__(self, batch_size: int = 8, name: str = "x") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.setups = 0

    def setup(self, stage):
        self.setups += 1

    def train_dataloader(self):
        return DataLoader(make_data(64), batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(make_data(16, seed=1), batch_size=8)

    def state_dict(self):
        return {"setups": self.setups}

    def load_state_dict(self, state):
        self.setups = state["setups"] + 100


def test_datamodule_hparams_and_state_roundtrip(tmp_path):
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(TinyModel(), datamodule=Data(batch_size=4, name="digits"))
    path = trainer.checkpoint_callback.best_model_path
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["datamodule_hyper_parameters"] == {"batch_size": 4, "name": "digits"}
    assert ckpt["datamodule_state"] == {"setups": 1}
    dm = Data.load_from_checkpoint(path)
    assert dm.hparams.batch_size == 4 and dm.setups == 101
    with open(trainer.log_dir + "/hparams.yaml") as f:
        hparams = yaml.safe_load(f)
    assert hparams["batch_size"] == 4 and hparams["hidden"] == 16
    trainer2 = quiet_trainer(max_epochs=2)
    dm2 = Data(batch_size=4, name="digits")
    trainer2.fit(TinyModel(), datamodule=dm2, ckpt_path=path)
    assert dm2.setups == 101  # restored on resume


def test_hparams_file_overrides_the_checkpoint(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(TinyModel(hidden=16), train, val)
    (tmp_path / "h.yaml").write_text("in_dim: 8\nhidden: 16\nlr: 0.5\n")
    model = TinyModel.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, hparams_file=tmp_path / "h.yaml"
    )
    assert model.hparams.lr == 0.5


def test_on_save_and_on_load_checkpoint_hooks(tmp_path):
    class Hooks(TinyModel):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["extra"] = {"note": "hello"}

        def on_load_checkpoint(self, checkpoint):
            self.note = checkpoint["extra"]["note"]

    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(Hooks(), train, val)
    assert Hooks.load_from_checkpoint(trainer.checkpoint_callback.best_model_path).note == "hello"


def test_an_unsafe_value_added_in_a_hook_is_refused_naming_its_key(tmp_path):
    class Bad(TinyModel):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["extra"] = {"obj": object()}

    train, val = loaders()
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['obj'\] is a builtins.object"):
        quiet_trainer(max_epochs=1).fit(Bad(), train, val)


def test_a_logged_scalar_that_views_a_large_storage_is_saved_alone(tmp_path):
    # F.mse_loss returns a 0-d tensor over its whole temporary; a checkpoint holding the monitored score
    # must not save that storage (Lightning copies logged values too).
    class Viewed(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            buffer = torch.zeros(1 << 18)  # 1 MB
            buffer[3] = loss.detach()
            self.log("viewed", buffer[3])
            return loss

    cb = sp.ModelCheckpoint(dirpath=tmp_path, monitor="viewed", save_top_k=2, every_n_train_steps=2)
    trainer = quiet_trainer(max_steps=6, callbacks=[cb], default_root_dir=tmp_path)
    trainer.fit(Viewed(), loaders()[0])
    path = cb.best_model_path
    ckpt = torch.load(path, weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    scores = [state["best_model_score"], state["current_score"], *state["best_k_models"].values()]
    scores.append(ckpt["loops"]["fit_loop"]["metrics"]["callback_metrics"]["viewed"])
    assert all(s.untyped_storage().nbytes() == 4 for s in scores)
    assert trainer.callback_metrics["viewed"].untyped_storage().nbytes() == 4  # nor kept alive in memory
    assert (tmp_path / path.split("/")[-1]).stat().st_size < 200_000
