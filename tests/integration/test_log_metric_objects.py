"""self.log beyond plain values: torchmetrics Metric objects, <name>_step/<name>_epoch, dataloader suffixes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import savepoint as sp
from helpers import TinyModel, loaders, make_data, quiet_trainer

torchmetrics = pytest.importorskip("torchmetrics")


class WithAccuracy(TinyModel):
    def __init__(self) -> None:
        super().__init__()
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.train_acc(logits, y)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return F.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self(x), y)
        self.log("val_acc", self.val_acc)


class EpochValues(sp.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.values.append(float(trainer.callback_metrics["train_acc_epoch"]))


def test_log_metric_object_is_computed_and_reset_at_the_epoch_end(tmp_path):
    model = WithAccuracy()
    _, val = loaders()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_epochs=1)
    trainer.validate(model, dataloaders=val, verbose=False)
    x, y = make_data(16, seed=1).tensors
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).float().mean()
    assert trainer.callback_metrics["val_acc"].item() == pytest.approx(expected.item())
    assert model.val_acc.update_count == 0  # reset after compute


def test_log_metric_object_on_step_and_epoch_gives_step_and_epoch_keys(tmp_path):
    model = WithAccuracy()
    train, val = loaders()
    epochs = EpochValues()
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_epochs=2, callbacks=[epochs]
    )
    trainer.fit(model, train, val)
    metrics = trainer.callback_metrics
    assert {"train_acc_step", "train_acc_epoch", "train_acc", "val_acc"} <= set(metrics)
    assert len(epochs.values) == 2 and model.train_acc.update_count == 0
    assert 0.0 <= epochs.values[-1] <= 1.0


def test_log_on_step_and_on_epoch_in_validation_gives_both_keys(tmp_path):
    class Both(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx), on_step=True, on_epoch=True)

    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    (result,) = trainer.validate(Both(), dataloaders=DataLoader(make_data(24), batch_size=8), verbose=False)
    assert result == {"v_epoch": pytest.approx(1.0)}
    assert float(trainer.callback_metrics["v_step"]) == 2.0
    assert float(trainer.callback_metrics["v_epoch"]) == pytest.approx(1.0)


def test_log_add_dataloader_idx_false_keeps_the_name(tmp_path):
    class Shared(TinyModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("shared", 1.0, add_dataloader_idx=False)
            self.log("own", float(dataloader_idx))

    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    _, val = loaders()
    results = trainer.validate(Shared(), dataloaders=[val, val], verbose=False)
    assert results == [
        {"shared": 1.0, "own/dataloader_idx_0": 0.0},
        {"shared": 1.0, "own/dataloader_idx_1": 1.0},
    ]


def test_log_enable_graph_keeps_the_graph():
    seen = {}

    class Graph(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.log("with_graph", loss, enable_graph=True)
            self.log("detached", loss)
            seen["graph"] = self.trainer.callback_metrics["with_graph"].requires_grad
            seen["detached"] = self.trainer.callback_metrics["detached"].requires_grad
            return loss

    quiet_trainer(logger=False, enable_checkpointing=False, max_steps=1).fit(Graph(), loaders()[0])
    assert seen == {"graph": True, "detached": False}


def test_log_rank_zero_only_is_accepted(tmp_path):
    class RankZero(TinyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("r0", loss, rank_zero_only=True, sync_dist=True)
            return loss

    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_steps=2)
    trainer.fit(RankZero(), loaders()[0])
    assert "r0" in trainer.callback_metrics
