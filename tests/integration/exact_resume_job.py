"""A training job for the exact-resume tests: run it fresh, or resume it from a checkpoint, in its own process.

    python exact_resume_job.py ROOT OUT [--ckpt PATH | --ckpt-list FILE] [--workers N] [--datamodule]
                               [--precision P] [--early-stopping]

Writes OUT (torch.save): final parameters, optimizer state, and the loss of every training step. With
--ckpt-list, resumes from each listed checkpoint in turn (global RNGs scrambled before each, so only
the checkpoint's own state can make the run exact) and writes OUT as {checkpoint: result}.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import savepoint as sp
from savepoint.callbacks import EarlyStopping, ModelCheckpoint


class NoisyDataset(Dataset):
    """Map-style data; __getitem__ is deterministic (workers change nothing)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class StatefulData(sp.DataModule):
    def __init__(self, workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.epochs_seen = 0

    def setup(self, stage: str) -> None:
        self.train_set = NoisyDataset(62, seed=1)
        self.val_set = NoisyDataset(20, seed=2)

    def train_dataloader(self):
        self.epochs_seen += 1
        return DataLoader(self.train_set, batch_size=4, shuffle=True, num_workers=self.hparams.workers)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=5)

    def state_dict(self):
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state):
        self.epochs_seen = state["epochs_seen"]


class Net(sp.TrainingModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
        self.losses: list[float] = []

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        # numpy and python RNG in the step, so their states matter too
        noise = float(np.random.rand()) * 1e-3 + random.random() * 1e-3
        loss = F.cross_entropy(self(x + noise), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RecordLosses(sp.Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append((trainer.current_epoch, batch_idx, float(loss.detach())))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt-list")
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--ckpt")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--datamodule", action="store_true")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--early-stopping", action="store_true")
    p.add_argument("--max-epochs", type=int, default=3)
    a = p.parse_args()
    if a.ckpt_list:
        results = {}
        with open(a.ckpt_list) as f:
            paths = [line.strip() for line in f if line.strip()]
        for i, path in enumerate(paths):
            a.ckpt = path
            results[path] = run(a, f"{a.root}/resume-{i}", scramble=1000 + i)
        torch.save(results, a.out)
    else:
        torch.save(run(a, a.root), a.out)


def run(a: argparse.Namespace, root: str, scramble: int | None = None) -> dict:
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    model = Net()
    recorder = RecordLosses()
    callbacks: list[sp.Callback] = [
        recorder,
        ModelCheckpoint(
            dirpath=f"{root}/ckpts", every_n_train_steps=1, save_top_k=-1, filename="{epoch}-{step}"
        ),
        # after every validation (mid-epoch ones too): these land mid gradient-accumulation
        ModelCheckpoint(dirpath=f"{root}/ckpts", save_top_k=-1, filename="val-{epoch}-{step}"),
    ]
    if scramble is not None:
        torch.manual_seed(scramble)
        np.random.seed(scramble)
        random.seed(scramble)
    if a.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=1, min_delta=0.5))
    trainer = sp.Trainer(
        max_epochs=a.max_epochs,
        default_root_dir=root,
        accumulate_grad_batches=3,
        val_check_interval=0.5,
        callbacks=callbacks,
        enable_progress_bar=False,
        precision=a.precision,
        logger=False,
    )
    if a.datamodule:
        trainer.fit(model, datamodule=StatefulData(a.workers), ckpt_path=a.ckpt)
    else:
        train = DataLoader(NoisyDataset(62, seed=1), batch_size=4, shuffle=True, num_workers=a.workers)
        val = DataLoader(NoisyDataset(20, seed=2), batch_size=5)
        trainer.fit(model, train, val, ckpt_path=a.ckpt)
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": trainer.optimizers[0].state_dict(),
        "losses": recorder.losses,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "stopped_epoch": getattr(trainer.early_stopping_callback, "stopped_epoch", None),
    }


if __name__ == "__main__":
    main()
