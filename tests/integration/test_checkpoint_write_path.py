"""ModelCheckpoint's write path: one write per save point, links after commit, bookkeeping that only
names files that were written."""

import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from helpers import NoValModel, loaders, quiet_trainer
from savepoint.callbacks import ModelCheckpoint
from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

JOB = Path(__file__).with_name("crash_job.py")


class CountingIO(TorchCheckpointIO):
    def __init__(self, fail_on_save: int | None = None) -> None:
        super().__init__()
        self.saves: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.fail_on_save = fail_on_save

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.saves.append(os.path.basename(path))
        if self.fail_on_save is not None and len(self.saves) == self.fail_on_save:
            raise OSError(f"injected write failure for {path}")
        super().save_checkpoint(checkpoint, path, storage_options)

    def link_checkpoint(self, src, dst):
        self.links.append((os.path.basename(src), os.path.basename(dst)))
        super().link_checkpoint(src, dst)


def _fit(tmp_path, io, **ck):
    train, _ = loaders()
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="train_loss", **ck)
    trainer = quiet_trainer(callbacks=[cb], plugins=[io], max_epochs=1, logger=False)
    trainer.fit(NoValModel(), train)
    return cb


def test_model_checkpoint_writes_the_bytes_once_per_save_point(tmp_path):
    io = CountingIO()
    cb = _fit(tmp_path, io, every_n_train_steps=2, save_top_k=-1, save_last=True)
    assert io.saves == [f"epoch=0-step={s}.ckpt" for s in (2, 4, 6, 8)]
    assert io.links == [(f"epoch=0-step={s}.ckpt", "last.ckpt") for s in (2, 4, 6, 8)]
    last = tmp_path / "ck" / "last.ckpt"
    assert last.stat().st_ino == (tmp_path / "ck" / "epoch=0-step=8.ckpt").stat().st_ino
    stored = torch.load(last, weights_only=True)["callbacks"]
    assert next(iter(stored.values()))["last_model_path"] == str(last) == cb.last_model_path


def test_model_checkpoint_evicting_the_linked_file_keeps_last(tmp_path):
    io = CountingIO()
    cb = _fit(tmp_path, io, every_n_train_steps=2, save_top_k=1, save_last=True, mode="max")
    names = sorted(os.listdir(tmp_path / "ck"))
    assert len(names) == 2 and "last.ckpt" in names
    assert cb.best_model_path and os.path.exists(cb.best_model_path)
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_model_checkpoint_save_last_link_on_a_remote_folder_is_refused_at_setup(tmp_path):
    train, _ = loaders()
    cb = ModelCheckpoint(dirpath="memory://refused/ck", save_last="link")
    trainer = quiet_trainer(callbacks=[cb], max_epochs=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="save_last=True"):
        trainer.fit(NoValModel(), train)
    assert trainer.global_step == 0


def test_model_checkpoint_train_time_interval_zero_saves_at_every_step(tmp_path):
    io = CountingIO()
    _fit(tmp_path, io, train_time_interval=timedelta(0), save_top_k=-1)
    assert io.saves == [f"epoch=0-step={s}.ckpt" for s in range(1, 9)]


def test_model_checkpoint_after_a_failed_async_save_names_only_written_files(tmp_path):
    base = CountingIO(fail_on_save=3)  # the third save point's file never lands
    train, _ = loaders()
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        monitor="step",
        mode="max",
        every_n_train_steps=2,
        save_top_k=2,
        save_last=True,
    )
    trainer = quiet_trainer(callbacks=[cb], plugins=[AsyncCheckpointIO(base)], max_epochs=1, logger=False)
    with pytest.raises(CheckpointWriteError, match="step=6"):
        trainer.fit(NoValModel(), train)
    named = [cb.best_model_path, cb.kth_best_model_path, cb.last_model_path, *cb.best_k_models]
    assert all(os.path.exists(p) for p in named), named
    assert cb.best_model_path.endswith("step=4.ckpt")
    assert torch.load(cb.last_model_path, weights_only=True)["global_step"] == 4


def _readline_until(proc, prefix: str) -> str:
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    pytest.fail(f"the job ended before printing {prefix!r}: {proc.stderr.read()[-3000:]}")


def test_model_checkpoint_async_link_survives_sigkill_and_resumes_last(tmp_path):
    """SIGKILL at random moments of async saves with save_last="link": last.ckpt never dangles and every
    following run resumes from "last"."""
    rng = random.Random(99)
    root = tmp_path / "run"
    folder = root / "ck"
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(JOB), str(root), "50", "async-link"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert _readline_until(proc, "START").split()[1] == ("last" if attempt else "None")
        started = _readline_until(proc, "RESUMED" if attempt else "FRESH")
        assert not attempt or int(started.split()[1]) > 0
        deadline = time.monotonic() + 60
        while not (folder / "last.ckpt").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.communicate()
        last = folder / "last.ckpt"
        assert os.path.lexists(last) and not last.is_symlink()
        assert verify_checkpoint(last).ok
    finish = subprocess.run(
        [sys.executable, str(JOB), str(root), "1", "async-link"], capture_output=True, text=True, timeout=120
    )
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "START last" in finish.stdout


def test_model_checkpoint_leaves_no_hidden_temporary_between_saves(tmp_path):
    from savepoint import Callback
    from savepoint.plugins.io._spare import SPARE_DIR

    seen: list[list[str]] = []

    class Lister(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if (tmp_path / "ck").is_dir():
                seen.append(sorted(os.listdir(tmp_path / "ck")))

    train, _ = loaders()
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=0, save_last=True)
    quiet_trainer(callbacks=[cb, Lister()], max_epochs=1, logger=False).fit(NoValModel(), train)
    assert seen and all(n == "last.ckpt" or n == SPARE_DIR for names in seen for n in names)
    assert [SPARE_DIR, "last.ckpt"] in seen  # last.ckpt was saved over in place
    assert os.listdir(tmp_path / "ck") == ["last.ckpt"]  # and nothing is left once fit returns
