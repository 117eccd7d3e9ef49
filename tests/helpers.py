"""Tiny models and data for tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp


def make_data(n: int = 64, dim: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def loaders(n_train: int = 64, n_val: int = 16, batch_size: int = 8, shuffle: bool = True):
    return (
        DataLoader(make_data(n_train, seed=0), batch_size=batch_size, shuffle=shuffle),
        DataLoader(make_data(n_val, seed=1), batch_size=batch_size),
    )


class TinyModel(sp.TrainingModule):
    def __init__(self, in_dim: int = 8, hidden: int = 16, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class NoValModel(TinyModel):
    validation_step = sp.TrainingModule.validation_step


def quiet_trainer(**kwargs) -> sp.Trainer:
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("max_epochs", 2)
    return sp.Trainer(**kwargs)


def off_main_thread(fn: Callable[[], object]) -> BaseException | None:
    """Run `fn` on a thread of its own, as the async writer runs saves; the exception it raised, if any."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as err:
            caught.append(err)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return caught[0] if caught else None
