"""A training job that saves a checkpoint at every step; the crash tests kill it at random moments.

    python crash_job.py ROOT MAX_EPOCHS [async-link]

Resumes from "last" when ROOT already holds a checkpoint (printing RESUMED and the step once training
starts). ``async-link`` saves through AsyncCheckpointIO with ``save_last="link"``. A model of ~4 MB makes each save take long
enough that kills land inside writes.
"""

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp


class Wide(sp.TrainingModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(16, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 2)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def on_train_start(self):
        print("RESUMED" if self.trainer.global_step else "FRESH", self.trainer.global_step, flush=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    root, max_epochs = sys.argv[1], int(sys.argv[2])
    async_link = sys.argv[3:] == ["async-link"]
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 16), torch.randint(0, 2, (256,)))
    callbacks = [
        sp.ModelCheckpoint(
            dirpath=f"{root}/ck",
            every_n_train_steps=1,
            save_top_k=2,
            save_last="link" if async_link else True,
            monitor="step",
            mode="max",
        )
    ]
    trainer = sp.Trainer(
        max_epochs=max_epochs,
        default_root_dir=root,
        callbacks=callbacks,
        enable_progress_bar=False,
        logger=False,
        plugins=[sp.AsyncCheckpointIO()] if async_link else None,
    )
    resume = (
        "last"
        if os.path.isdir(f"{root}/ck") and any(n.endswith(".ckpt") for n in os.listdir(f"{root}/ck"))
        else None
    )
    print("START", resume, flush=True)
    trainer.fit(Wide(), DataLoader(data, batch_size=16, shuffle=True), ckpt_path=resume)
    print("DONE", trainer.global_step, flush=True)


if __name__ == "__main__":
    main()
