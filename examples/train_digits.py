"""Train a small classifier on scikit-learn's bundled digits (no download), with checkpointing.

    python examples/train_digits.py ROOT [--max-epochs 30] [--resume]

Checkpoints go to ROOT/runs/version_N/checkpoints: the two best by validation accuracy, plus last.ckpt
at every save point. With --resume, training continues from the newest checkpoint ("last").
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import savepoint as sp
from savepoint.callbacks import ModelCheckpoint


class Digits(sp.DataModule):
    def __init__(self, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        x, y = load_digits(return_X_y=True)
        data = TensorDataset(torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y))
        generator = torch.Generator().manual_seed(self.hparams.seed)
        self.train_set, self.val_set = random_split(data, [0.8, 0.2], generator=generator)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)


class Classifier(sp.TrainingModule):
    def __init__(self, hidden: int = 128, lr: float = 1e-3, dropout: float = 0.2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
        return {"optimizer": opt, "lr_scheduler": sched}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(
        monitor="val_acc",
        mode="max",
        save_top_k=2,
        save_last=True,
        filename="digits-{epoch:02d}-{val_acc:.3f}",
    )
    trainer = sp.Trainer(
        max_epochs=a.max_epochs,
        default_root_dir=a.root,
        callbacks=[checkpoint],
    )
    trainer.fit(Classifier(), datamodule=Digits(), ckpt_path="last" if a.resume else None)
    print(f"best checkpoint: {checkpoint.best_model_path} (val_acc {float(checkpoint.best_model_score):.3f})")


if __name__ == "__main__":
    main()
