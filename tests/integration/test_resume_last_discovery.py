"""ckpt_path="last" is the newest checkpoint training can resume from, whatever else the folder holds:
dangling symlinks, symlink loops, weights-only exports, files of an unknown format version."""

from __future__ import annotations

import os

import pytest
import torch

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.plugins.io import TorchCheckpointIO


def _two_epochs(folder: str = "ck") -> None:
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath=folder, save_top_k=-1)
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), train, val)


def _resume_last(folder: str = "ck") -> sp.Trainer:
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=3, callbacks=[sp.ModelCheckpoint(dirpath=folder, save_top_k=-1)])
    trainer.fit(TinyModel(), train, val, ckpt_path="last")
    return trainer


def test_last_skips_a_dangling_symlink_with_a_warning(tmp_path):
    _two_epochs()
    os.symlink("gone.ckpt", "ck/dangling.ckpt")
    with pytest.warns(UserWarning, match=r"skipping .*dangling\.ckpt.*dangling symlink"):
        trainer = _resume_last()
    assert trainer.ckpt_path.endswith("epoch=1-step=16.ckpt")


def test_last_skips_a_symlink_loop_with_a_warning(tmp_path):
    _two_epochs()
    os.symlink("loop-b.ckpt", "ck/loop-a.ckpt")
    os.symlink("loop-a.ckpt", "ck/loop-b.ckpt")
    with pytest.warns(UserWarning, match=r"skipping .*loop-a\.ckpt.*symlink loop"):
        trainer = _resume_last()
    assert trainer.global_step == 24


def test_last_skips_a_newer_weights_only_export(tmp_path):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="ck", save_last=True)
    trainer = quiet_trainer(max_epochs=2, callbacks=[cb])
    trainer.fit(TinyModel(), train, val)
    trainer.save_checkpoint("ck/export.ckpt", weights_only=True)  # the newest file in the folder
    with pytest.warns(UserWarning, match=r"skipping .*export\.ckpt.*weights-only"):
        resumed = _resume_last()
    assert resumed.ckpt_path.endswith("last.ckpt") and resumed.global_step == 24


def test_last_skips_a_newer_file_of_an_unknown_format_version(tmp_path):
    _two_epochs()
    future = torch.load("ck/epoch=1-step=16.ckpt", weights_only=True)
    future["format_version"] = 99
    TorchCheckpointIO().save_checkpoint(future, "ck/epoch=1-step=17.ckpt")
    with pytest.warns(UserWarning, match=r"skipping .*step=17\.ckpt.*format_version 99"):
        resumed = _resume_last()
    assert resumed.ckpt_path.endswith("epoch=1-step=16.ckpt")
