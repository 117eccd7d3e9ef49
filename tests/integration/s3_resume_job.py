"""A training job checkpointing to S3 (the test's moto server) with AsyncCheckpointIO.

    python s3_resume_job.py ENDPOINT DIRPATH ROOT OUT [--kill-at-step N] [--resume]

Saves every 3 steps (top-2 by train_loss, plus last.ckpt). ``--kill-at-step N`` sends itself SIGKILL at
step N, with an async save possibly still in flight; ``--resume`` continues from ckpt_path="last". The
final weights are written to OUT with plain torch.save for the test to compare.
"""

import os
import signal
import sys

import fsspec
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import savepoint as sp
from helpers import TinyModel, loaders


class KillAt(sp.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def train(dirpath: str, root: str, kill_at: int | None = None, resume: bool = False) -> dict:
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    callbacks: list[sp.Callback] = [
        sp.ModelCheckpoint(
            dirpath=dirpath, monitor="train_loss", save_top_k=2, save_last=True, every_n_train_steps=3
        )
    ]
    if kill_at is not None:
        callbacks.insert(0, KillAt(kill_at))
    trainer = sp.Trainer(
        max_epochs=2,
        callbacks=callbacks,
        plugins=[sp.AsyncCheckpointIO()],
        default_root_dir=root,
        enable_progress_bar=False,
        logger=False,
    )
    model = TinyModel()
    trainer.fit(model, train_loader, val_loader, ckpt_path="last" if resume else None)
    return model.state_dict()


def main() -> None:
    endpoint, dirpath, root, out = sys.argv[1:5]
    fsspec.config.conf["s3"] = {"client_kwargs": {"endpoint_url": endpoint}}
    kill_at = int(sys.argv[sys.argv.index("--kill-at-step") + 1]) if "--kill-at-step" in sys.argv else None
    torch.save(train(dirpath, root, kill_at, "--resume" in sys.argv), out)


if __name__ == "__main__":
    main()
