"""A crash between committing a new top-k file and removing the one it evicted leaves an extra file; resuming
reconciles the top-k with the folder (issue 10, item 11). The rule: never delete what this callback did not
write or cannot rank."""

from __future__ import annotations

import os

import torch

from helpers import TinyModel, loaders, quiet_trainer
from savepoint.callbacks import ModelCheckpoint
from savepoint.plugins.io import TorchCheckpointIO


class LosesRemovals(TorchCheckpointIO):
    """Commits saves but never gets to remove: a run killed right after each commit."""

    def remove_checkpoint(self, path: str) -> None:
        pass


class Rising(TinyModel):
    """val_loss 0.9, 0.8, 0.7... : every epoch's file evicts the previous one from a top-1."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", 0.9 - 0.1 * self.current_epoch)


def _crashed_run(folder: str) -> None:
    train, val = loaders()
    cb = ModelCheckpoint(dirpath=folder, monitor="val_loss", save_top_k=1)
    quiet_trainer(callbacks=[cb], max_epochs=3, plugins=[LosesRemovals()]).fit(Rising(), train, val)


def test_resume_removes_files_evicted_before_a_crash(tmp_path):
    _crashed_run("ck")
    assert sorted(os.listdir("ck")) == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "epoch=2-step=24.ckpt"]
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=1)
    trainer = quiet_trainer(callbacks=[cb], max_epochs=3)
    trainer.fit(Rising(), train, val, ckpt_path="ck/epoch=2-step=24.ckpt")
    # Both older files were written and ranked by this callback and rank below the restored top-1: removed.
    assert sorted(os.listdir("ck")) == ["epoch=2-step=24.ckpt"]


def test_resume_keeps_files_this_callback_did_not_write_or_cannot_rank(tmp_path):
    _crashed_run("ck")
    torch.save({"state_dict": {}}, "ck/notes.ckpt")  # a foreign file: no callback state at all
    (tmp_path / "ck" / "corrupt.ckpt").write_bytes(b"not a checkpoint")  # unreadable: cannot rank it
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=1)
    manual = quiet_trainer(callbacks=[cb], max_epochs=3)
    manual.fit(Rising(), train, val, ckpt_path="ck/epoch=2-step=24.ckpt")
    manual.save_checkpoint("ck/manual.ckpt")  # this callback's state, but the file is not in its top-k
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=1)
    quiet_trainer(callbacks=[cb], max_epochs=3).fit(Rising(), train, val, ckpt_path="ck/epoch=2-step=24.ckpt")
    assert sorted(os.listdir("ck")) == ["corrupt.ckpt", "epoch=2-step=24.ckpt", "manual.ckpt", "notes.ckpt"]
