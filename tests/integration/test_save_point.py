"""One write per save point across several ModelCheckpoint callbacks: every file of a save point holds the
same bytes (written once, the other names linked), records every callback's new state, and a resume from
any of them continues every callback's top-k."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from helpers import TinyModel, loaders, quiet_trainer
from savepoint.callbacks import ModelCheckpoint
from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from savepoint.plugins.io import async_io as async_io_module


class RecordingIO(TorchCheckpointIO):
    """Counts what reaches storage: full writes, and second names made by linking."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.calls.append(("save", os.path.basename(path)))
        super().save_checkpoint(checkpoint, path, storage_options)

    def link_checkpoint(self, src, dst):
        self.calls.append(("link", os.path.basename(dst)))
        super().link_checkpoint(src, dst)

    def remove_checkpoint(self, path):
        self.calls.append(("remove", os.path.basename(path)))
        super().remove_checkpoint(path)


class ValByEpoch(TinyModel):
    """Logs a scripted ``score`` per validation (1, 3, 2, 0, ...): top-k changes in a known way."""

    SCORES = (1.0, 3.0, 2.0, 0.0, 4.0)

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if not self.trainer.sanity_checking:
            self.log("score", self.SCORES[self.current_epoch % len(self.SCORES)])


def _callbacks(root: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    best = ModelCheckpoint(dirpath=root / "best", monitor="score", mode="max", save_top_k=2, save_last=True)
    every = ModelCheckpoint(dirpath=root / "every", filename="{epoch}", save_top_k=-1)
    return best, every


def _fit(root: Path, max_epochs: int, io: CheckpointIO | None = None, ckpt_path: str | None = None):
    best, every = _callbacks(root)
    torch.manual_seed(0)
    trainer = quiet_trainer(
        default_root_dir=root,
        callbacks=[best, every],
        max_epochs=max_epochs,
        logger=False,
        plugins=[io] if io is not None else None,
    )
    trainer.fit(ValByEpoch(), *loaders(shuffle=False), ckpt_path=ckpt_path)
    return trainer, best, every


def test_two_callbacks_write_each_save_point_once_and_link_every_other_name(tmp_path):
    io = RecordingIO()
    _, best, every = _fit(tmp_path, max_epochs=3, io=io)

    saves = [name for kind, name in io.calls if kind == "save"]
    assert saves == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "epoch=2-step=24.ckpt"]  # one per epoch
    links = [name for kind, name in io.calls if kind == "link"]
    assert links == ["last.ckpt", "epoch=0.ckpt", "last.ckpt", "epoch=1.ckpt", "last.ckpt", "epoch=2.ckpt"]
    # Every name of a save point is one file on disk.
    for epoch, step in ((1, 16), (2, 24)):
        inode = os.stat(tmp_path / "every" / f"epoch={epoch}.ckpt").st_ino
        assert os.stat(tmp_path / "best" / f"epoch={epoch}-step={step}.ckpt").st_ino == inode
    assert (
        os.stat(tmp_path / "best" / "last.ckpt").st_ino == os.stat(tmp_path / "every" / "epoch=2.ckpt").st_ino
    )
    # Scores 1, 3, 2 keep epochs 1 and 2; epoch 0 was removed after the file that evicted it.
    assert sorted(os.listdir(tmp_path / "best")) == [
        "epoch=1-step=16.ckpt",
        "epoch=2-step=24.ckpt",
        "last.ckpt",
    ]
    assert (
        io.calls.index(("remove", "epoch=0-step=8.ckpt"))
        == io.calls.index(("save", "epoch=2-step=24.ckpt")) + 1
    )
    assert sorted(os.listdir(tmp_path / "every")) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    assert os.path.basename(best.best_model_path) == "epoch=1-step=16.ckpt"
    assert os.path.basename(every.best_model_path) == "epoch=2.ckpt"


def test_each_file_of_a_save_point_records_every_callbacks_new_state(tmp_path):
    _, best, every = _fit(tmp_path, max_epochs=2)
    for path in (tmp_path / "every" / "epoch=1.ckpt", tmp_path / "best" / "last.ckpt"):
        stored = torch.load(path, weights_only=True)["callbacks"]
        best_state, every_state = stored[best.state_key], stored[every.state_key]
        assert set(best_state["best_k_models"]) == {
            str(tmp_path / "best" / f"epoch={e}-step={s}.ckpt") for e, s in ((0, 8), (1, 16))
        }
        assert best_state["best_model_path"] == str(tmp_path / "best" / "epoch=1-step=16.ckpt")
        assert best_state["last_model_path"] == str(tmp_path / "best" / "last.ckpt")
        assert set(every_state["kept_models"]) == {
            str(tmp_path / "every" / f"epoch={e}.ckpt") for e in (0, 1)
        }


def test_resuming_from_another_callbacks_file_continues_both_top_ks(tmp_path):
    straight = tmp_path / "straight"
    _, best_a, _every_a = _fit(straight, max_epochs=5)

    resumed = tmp_path / "resumed"
    _fit(resumed, max_epochs=2)
    trainer, best_b, _every_b = _fit(resumed, max_epochs=5, ckpt_path=str(resumed / "every" / "epoch=1.ckpt"))
    assert trainer.global_step == 40

    def rel(folder: Path, paths) -> list[str]:
        return sorted(os.path.relpath(p, folder) for p in paths)

    assert rel(resumed, best_b.best_k_models) == rel(straight, best_a.best_k_models)
    assert os.path.relpath(best_b.best_model_path, resumed) == os.path.relpath(
        best_a.best_model_path, straight
    )
    for sub in ("best", "every"):
        assert sorted(os.listdir(resumed / sub)) == sorted(os.listdir(straight / sub))


def test_a_weights_only_callback_gets_its_own_file_and_the_full_one_is_linked(tmp_path):
    io = RecordingIO()
    full = ModelCheckpoint(dirpath=tmp_path / "full", save_top_k=-1, save_last=True)
    light = ModelCheckpoint(dirpath=tmp_path / "weights", save_top_k=-1, save_weights_only=True)
    trainer = quiet_trainer(
        default_root_dir=tmp_path, callbacks=[full, light], max_epochs=2, logger=False, plugins=[io]
    )
    trainer.fit(TinyModel(), *loaders())
    assert [name for kind, name in io.calls if kind == "save"] == ["epoch=0-step=8.ckpt"] * 2 + [
        "epoch=1-step=16.ckpt"
    ] * 2
    weights = torch.load(tmp_path / "weights" / "epoch=1-step=16.ckpt", weights_only=True)
    assert "optimizer_states" not in weights
    assert "optimizer_states" in torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)
    assert (
        os.stat(tmp_path / "full" / "last.ckpt").st_ino
        == os.stat(tmp_path / "full" / "epoch=1-step=16.ckpt").st_ino
    )


def test_removing_one_name_of_a_save_point_leaves_the_others_whole(tmp_path):
    _fit(tmp_path, max_epochs=2)
    kept = tmp_path / "best" / "epoch=1-step=16.ckpt"
    before = kept.read_bytes()
    os.remove(tmp_path / "every" / "epoch=1.ckpt")
    os.remove(tmp_path / "best" / "last.ckpt")
    assert kept.read_bytes() == before
    assert torch.load(kept, weights_only=True)["global_step"] == 16


class FailingOnSecondSavePoint(TorchCheckpointIO):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.saves += 1
        if self.saves == 2:
            raise CheckpointWriteError(f"disk gone while writing {path!r}", path)
        super().save_checkpoint(checkpoint, path, storage_options)


def test_a_failed_save_point_leaves_every_callback_reporting_the_files_that_exist(tmp_path):
    best, every = _callbacks(tmp_path)
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        callbacks=[best, every],
        max_epochs=3,
        logger=False,
        plugins=[FailingOnSecondSavePoint()],
    )
    with pytest.raises(CheckpointWriteError, match="disk gone"):
        trainer.fit(ValByEpoch(), *loaders(shuffle=False))
    assert os.path.basename(best.best_model_path) == "epoch=0-step=8.ckpt"
    assert os.path.basename(best.last_model_path) == "last.ckpt"
    assert [os.path.basename(p) for p in every.best_k_models or every._ranked] == ["epoch=0.ckpt"]
    for path in (best.best_model_path, best.last_model_path, every.best_model_path):
        assert torch.load(path, weights_only=True)["global_step"] == 8
    assert best.state_dict()["best_k_models"] == best.best_k_models  # nothing planned is left over


class PlainFileIO(CheckpointIO):
    """A custom IO with no link: files through torch.save, nothing else."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.gate.wait()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(checkpoint, path)
        self.saved.append(os.path.basename(path))

    def load_checkpoint(self, path, map_location=None, **kwargs):
        return torch.load(path, map_location=map_location, weights_only=True)

    def remove_checkpoint(self, path):
        os.remove(path)


def test_async_over_an_io_without_links_takes_one_snapshot_per_save_point(tmp_path, monkeypatch):
    snapshots = []
    original = async_io_module._HostBuffers.snapshot

    def counting(self, obj):
        snapshots.append(obj["global_step"])
        return original(self, obj)

    monkeypatch.setattr(async_io_module._HostBuffers, "snapshot", counting)
    base = PlainFileIO()
    _, _best, _every = _fit(tmp_path, max_epochs=3, io=AsyncCheckpointIO(base))
    assert snapshots == [8, 16, 24]  # one per save point, for its 2-3 files
    assert base.saved.count("last.ckpt") == 3 and len(base.saved) == 3 + 3 + 3
    last = torch.load(tmp_path / "best" / "last.ckpt", weights_only=True)
    newest = torch.load(tmp_path / "every" / "epoch=2.ckpt", weights_only=True)
    assert last["global_step"] == newest["global_step"] == 24
    for key, value in newest["state_dict"].items():
        assert torch.equal(last["state_dict"][key], value)


def test_async_exists_sees_a_queued_save_before_it_lands(tmp_path):
    base = PlainFileIO()
    io = AsyncCheckpointIO(base)
    base.gate.clear()  # the writer blocks until released
    path = str(tmp_path / "queued.ckpt")
    io.save_checkpoint({"w": torch.ones(3)}, path)
    assert not os.path.exists(path)
    assert io.exists(path)  # the name is taken: a versioned name must not collide with it
    base.gate.set()
    io.teardown()
    assert os.path.exists(path) and io.exists(path)
    assert not io.exists(str(tmp_path / "other.ckpt"))


def test_async_link_of_an_older_file_over_an_io_without_links_copies_it(tmp_path):
    base = PlainFileIO()
    io = AsyncCheckpointIO(base)
    first, second = str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")
    io.save_checkpoint({"w": torch.ones(3)}, first)
    io.save_checkpoint({"w": torch.zeros(3)}, second)
    io.link_checkpoint(first, str(tmp_path / "copy-of-a.ckpt"))  # not the save just made: read back
    io.link_checkpoint(second, str(tmp_path / "copy-of-b.ckpt"))  # the save just made: its snapshot
    io.teardown()
    assert torch.equal(torch.load(tmp_path / "copy-of-a.ckpt", weights_only=True)["w"], torch.ones(3))
    assert torch.equal(torch.load(tmp_path / "copy-of-b.ckpt", weights_only=True)["w"], torch.zeros(3))
    assert base.saved == ["a.ckpt", "b.ckpt", "copy-of-a.ckpt", "copy-of-b.ckpt"]


class FailingSecondLink(TorchCheckpointIO):
    def __init__(self) -> None:
        super().__init__()
        self.links = 0

    def link_checkpoint(self, src, dst):
        self.links += 1
        if self.links == 2:
            raise CheckpointWriteError(f"link to {dst!r} failed", dst)
        super().link_checkpoint(src, dst)


def test_a_save_point_failing_after_its_first_file_keeps_that_files_bookkeeping(tmp_path):
    """The top-k file was written and the file it evicted removed before last.ckpt's link failed: the
    callback reports the new file (which exists), not the removed one."""
    cb = ModelCheckpoint(dirpath=tmp_path / "c", monitor="score", mode="max", save_top_k=1, save_last=True)
    trainer = quiet_trainer(
        default_root_dir=tmp_path, callbacks=[cb], max_epochs=3, logger=False, plugins=[FailingSecondLink()]
    )
    with pytest.raises(CheckpointWriteError, match=r"last\.ckpt"):
        trainer.fit(ValByEpoch(), *loaders(shuffle=False))
    assert sorted(os.listdir(tmp_path / "c")) == ["epoch=1-step=16.ckpt", "last.ckpt"]
    assert os.path.basename(cb.best_model_path) == "epoch=1-step=16.ckpt"
    assert [os.path.basename(p) for p in cb.best_k_models] == ["epoch=1-step=16.ckpt"]
    assert os.path.exists(cb.last_model_path)


def test_callbacks_on_different_storages_each_get_their_own_file(tmp_path):
    import fsspec

    local = ModelCheckpoint(dirpath=tmp_path / "local", save_top_k=-1)
    remote = ModelCheckpoint(dirpath="memory://savepoint-test-bucket/ckpts", save_top_k=-1)
    trainer = quiet_trainer(default_root_dir=tmp_path, callbacks=[local, remote], max_epochs=1, logger=False)
    trainer.fit(TinyModel(), *loaders())
    memory = fsspec.filesystem("memory")
    try:
        assert memory.ls("/savepoint-test-bucket/ckpts", detail=False) == [
            "/savepoint-test-bucket/ckpts/epoch=0-step=8.ckpt"
        ]
        assert os.listdir(tmp_path / "local") == ["epoch=0-step=8.ckpt"]
        assert not os.path.exists("/savepoint-test-bucket")  # no local file under the bucket's path
    finally:
        memory.rm("/savepoint-test-bucket", recursive=True)


def test_an_exception_save_retries_a_save_point_that_failed(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_top_k=-1, save_on_exception=True)
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        callbacks=[cb],
        max_epochs=3,
        logger=False,
        plugins=[FailingOnSecondSavePoint()],
    )
    with pytest.raises(CheckpointWriteError, match="disk gone"):
        trainer.fit(TinyModel(), *loaders())
    assert sorted(os.listdir(tmp_path / "c")) == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt"]
