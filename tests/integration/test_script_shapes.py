"""End to end, the shapes of Lightning's example scripts, ported with the README's renames only:
a DataModule classifier (fit -> test(ckpt_path="best") -> predict), a transformer language model
(seed_everything, gradient clipping, savepoint.demos), and a fine-tuning run whose backbone a callback
unfreezes, interrupted and resumed. (The GAN in manual optimization: test_manual_optimization.py.)"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import savepoint as sp
from savepoint.callbacks import ModelCheckpoint
from savepoint.demos import Transformer, WikiText2

# -- backbone_image_classifier.py -------------------------------------------------------------------------------


class Backbone(nn.Module):
    def __init__(self, hidden_dim: int = 32) -> None:
        super().__init__()
        self.l1 = nn.Linear(16, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x.view(x.size(0), -1))))


class LitClassifier(sp.LightningModule):
    def __init__(self, backbone: nn.Module | None = None, learning_rate: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone if backbone is not None else Backbone()

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_loss", F.cross_entropy(self(x), y), on_step=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=None):
        x, _ = batch
        return self(x)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


class MyDataModule(sp.LightningDataModule):
    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(160, 4, 4, generator=g)
        y = x.view(160, -1)[:, :4].argmax(-1)
        full = TensorDataset(x, y)
        self.train_set, self.val_set, self.test_set = random_split(full, [96, 32, 32], generator=g)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)

    def predict_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)


def test_script_datamodule_classifier_fit_test_best_predict(tmp_path, capsys):
    sp.seed_everything(1234, verbose=False)
    model, dm = LitClassifier(Backbone()), MyDataModule()
    checkpoint = ModelCheckpoint(monitor="valid_loss", save_top_k=1)
    trainer = sp.Trainer(
        default_root_dir=tmp_path, max_epochs=3, callbacks=[checkpoint], enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    (results,) = trainer.test(ckpt_path="best", datamodule=dm)
    assert "test_loss" in capsys.readouterr().out  # the results table
    for name, value in model.state_dict().items():
        assert torch.equal(value, best[name]), name
    x, y = zip(*[dm.test_set[i] for i in range(len(dm.test_set))])
    with torch.no_grad():
        expected = F.cross_entropy(model(torch.stack(x)), torch.stack(y)).item()
    assert results["test_loss"] == pytest.approx(expected, rel=1e-5)
    predictions = trainer.predict(datamodule=dm, ckpt_path="best")
    assert torch.cat(predictions).shape == (32, 4)


# -- transformer.py ---------------------------------------------------------------------------------------------


class LanguageModel(sp.LightningModule):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size, ninp=16, nhead=2, nhid=32, nlayers=1, dropout=0.1)

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        output = self.model(inputs, target)
        loss = F.nll_loss(output, target.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.1)


def _corpus(tmp_path) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(60)]
    (tmp_path / "wikitext-2.txt").write_text("\n".join(lines) + "\n")


def _train_lm(tmp_path, seed: int) -> tuple[dict, list[float]]:
    sp.seed_everything(seed, verbose=False)
    dataset = WikiText2(data_dir=tmp_path, block_size=12, download=False)
    train, _val = random_split(dataset, [len(dataset) - 8, 8])
    model = LanguageModel(vocab_size=dataset.vocab_size)
    losses: list[float] = []

    class Losses(sp.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs.detach()))

    trainer = sp.Trainer(
        gradient_clip_val=0.25, max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
        enable_checkpointing=False, callbacks=[Losses()],
    )  # fmt: skip
    trainer.fit(model, DataLoader(train, batch_size=4, shuffle=True))
    return {k: v.clone() for k, v in model.state_dict().items()}, losses


def test_script_transformer_lm_is_reproducible_and_learns(tmp_path):
    _corpus(tmp_path)
    weights, losses = _train_lm(tmp_path, 42)
    again, losses_again = _train_lm(tmp_path, 42)
    assert losses == losses_again and all(torch.equal(weights[k], again[k]) for k in weights)
    assert sum(losses[-3:]) < sum(losses[:3])
    _, other = _train_lm(tmp_path, 43)
    assert other != losses


# -- computer_vision_fine_tuning.py -----------------------------------------------------------------------------


class FineTuned(sp.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.backbone(x.view(x.size(0), -1)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.01)
        return [opt], [torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)]


class UnfreezeAt(sp.Callback):
    """Frozen backbone until `milestone`, then trained: decided from current_epoch, so a resume agrees."""

    def __init__(self, milestone: int = 2) -> None:
        self.milestone = milestone

    def _apply(self, trainer, pl_module) -> None:
        pl_module.backbone.requires_grad_(trainer.current_epoch >= self.milestone)

    def on_train_start(self, trainer, pl_module):
        self._apply(trainer, pl_module)  # after a resume restored the loop (on_fit_start comes before)

    def on_train_epoch_start(self, trainer, pl_module):
        self._apply(trainer, pl_module)


class Crashed(Exception):
    pass


class Interrupt(sp.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 2:
            raise Crashed  # after the backbone was unfrozen, mid-epoch


def _finetune(root, ckpt_path=None, interrupt: bool = False) -> tuple[FineTuned, sp.Trainer]:
    torch.manual_seed(0)
    model, dm = FineTuned(), MyDataModule()
    if ckpt_path is not None:
        torch.manual_seed(99)  # the resume must take its RNG state from the checkpoint
    callbacks = [UnfreezeAt(), ModelCheckpoint(dirpath=root / "ck", every_n_train_steps=1, save_last=True)]
    if interrupt:
        callbacks.append(Interrupt())
    trainer = sp.Trainer(
        default_root_dir=root, max_epochs=4, callbacks=callbacks, enable_progress_bar=False, logger=False
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


def test_script_finetuning_interrupted_after_unfreezing_resumes_exactly(tmp_path):
    reference, _ = _finetune(tmp_path / "full")
    torch.manual_seed(0)
    initial_backbone = FineTuned().backbone[0].weight.detach().clone()
    with pytest.raises(Crashed):
        _finetune(tmp_path / "run", interrupt=True)
    resumed, trainer = _finetune(tmp_path / "run", ckpt_path="last")
    assert trainer.global_step == 4 * 6
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert not torch.equal(
        resumed.backbone[0].weight, initial_backbone
    )  # the backbone did train after epoch 2
    resumed.freeze()
    assert not any(p.requires_grad for p in resumed.parameters())
