"""Two ModelCheckpoints under DDP; the CheckpointIO fails on rank 0 only, inside the second callback's hook.

    torchrun --nproc_per_node=2 hook_error_job.py ROOT

Each rank prints ``RANK <r> ERROR <exception>``; a hang dumps the stacks and exits after 90 s.
"""

import faulthandler
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp
from savepoint.plugins.io import TorchCheckpointIO


class Net(sp.TrainingModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FlakyExists(TorchCheckpointIO):
    """Only rank 0 asks `exists` (ModelCheckpoint broadcasts the answer): the failure is rank 0's alone."""

    def exists(self, path):
        if "/second/" in str(path):
            raise OSError("storage hiccup on exists")
        return super().exists(path)


def main() -> None:
    faulthandler.dump_traceback_later(90, exit=True)
    root = sys.argv[1]
    first = sp.ModelCheckpoint(dirpath=f"{root}/first", save_top_k=-1)
    second = sp.ModelCheckpoint(dirpath=f"{root}/second", save_top_k=-1)
    trainer = sp.Trainer(
        strategy=sp.DDPStrategy(checkpoint_io=FlakyExists()),
        max_epochs=1,
        callbacks=[first, second],
        enable_progress_bar=False,
        accelerator="cpu",
        logger=False,
        default_root_dir=root,
        enable_model_summary=False,
    )
    data = TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
    error = None
    try:
        trainer.fit(Net(), DataLoader(data, batch_size=8))
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
    print("RANK", os.environ.get("RANK"), "ERROR", error, flush=True)


if __name__ == "__main__":
    main()
