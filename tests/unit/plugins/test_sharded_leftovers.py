"""Uncommitted sharded folders: removed once certainly abandoned, never a reason to shift names to -v1."""

from __future__ import annotations

import os
import time

import torch

import savepoint as sp
from savepoint.plugins.io.sharded import is_abandoned_candidate, remove_abandoned


def _folder(path, *files, age_s: float = 0.0):
    path.mkdir()
    for name in files:
        if name.endswith(".ckpt"):
            torch.save({"epoch": 0}, path / name)  # every .ckpt a test leaves must load weights-only
        else:
            (path / name).write_bytes(b"x")
    old = time.time() - age_s
    for p in [path, *path.iterdir()]:
        os.utime(p, (old, old))
    return path


def test_remove_abandoned_removes_only_old_uncommitted_sharded_folders(tmp_path):
    crashed = _folder(tmp_path / "epoch=0-step=4.ckpt", "meta.ckpt", "__0_0.distcp", age_s=60)
    committed = _folder(tmp_path / "epoch=0-step=2.ckpt", "meta.ckpt", "__0_0.distcp", ".metadata", age_s=60)
    in_flight = _folder(tmp_path / "epoch=0-step=6.ckpt", "meta.ckpt")  # written during this run
    user = _folder(tmp_path / "notes.ckpt", "readme.txt", age_s=60)  # not what a sharded save writes
    removed = remove_abandoned(str(tmp_path), older_than=time.time() - 10)
    assert removed == [str(crashed)] and not crashed.exists()
    assert committed.exists() and in_flight.exists() and user.exists()


def test_remove_abandoned_keeps_the_folder_being_saved(tmp_path):
    target = _folder(tmp_path / "last.ckpt", "meta.ckpt", age_s=60)
    assert remove_abandoned(str(tmp_path), older_than=time.time(), keep=str(target)) == []


def test_is_abandoned_candidate_needs_a_ckpt_folder_without_commit_marker(tmp_path):
    assert is_abandoned_candidate(_folder(tmp_path / "a.ckpt"))
    assert not is_abandoned_candidate(_folder(tmp_path / "b.ckpt", ".metadata"))
    assert not is_abandoned_candidate(_folder(tmp_path / "c", "meta.ckpt"))


def test_model_checkpoint_reuses_the_name_of_an_uncommitted_sharded_folder(tmp_path):
    _folder(tmp_path / "epoch=0-step=4.ckpt", "meta.ckpt", "__1_0.distcp")
    cb = sp.ModelCheckpoint(dirpath=tmp_path)
    trainer = sp.Trainer(logger=False, enable_progress_bar=False, callbacks=[cb])
    assert not cb.file_exists(str(tmp_path / "epoch=0-step=4.ckpt"), trainer)
