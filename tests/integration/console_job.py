"""A small fit whose console output the console tests look at: ``console_job.py BAR [SLEEP_S]``."""

import sys
import time

import torch
import torch.nn.functional as F

import savepoint as sp
from helpers import TinyModel, loaders


class Shown(TinyModel):
    sleep_s = 0.0  # slows batches down, so a person (and the test) can see the bar move

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, prog_bar=True)
        time.sleep(self.sleep_s)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y), prog_bar=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    bar = sp.callbacks.TQDMProgressBar() if sys.argv[1] == "tqdm" else sp.callbacks.RichProgressBar()
    trainer = sp.Trainer(max_epochs=3, callbacks=[bar])
    Shown.sleep_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    trainer.fit(Shown(), *loaders())
