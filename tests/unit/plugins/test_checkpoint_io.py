"""The storage surface of CheckpointIO: its defaults (any plugin) and TorchCheckpointIO, local and memory://."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest
import torch

from savepoint.plugins.io import CheckpointIO, TorchCheckpointIO
from savepoint.plugins.io.checkpoint_io import CheckpointEntry


class DictIO(CheckpointIO):
    """Implements only what a custom plugin must: the path questions come from the defaults."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        TorchCheckpointIO().save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, **kwargs):
        return TorchCheckpointIO().load_checkpoint(path, map_location)

    def remove_checkpoint(self, path):
        os.remove(path)


def _ckpt():
    return {"state_dict": {"w": torch.ones(2)}}


@pytest.fixture
def memory_dir():
    folder = f"memory://io-{uuid.uuid4().hex}"
    yield folder
    fs = fsspec.filesystem("memory")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)


def test_list_checkpoints_returns_files_and_committed_sharded_folders_only(tmp_path):
    io = TorchCheckpointIO()
    io.save_checkpoint(_ckpt(), str(tmp_path / "a.ckpt"))
    (tmp_path / ".a.ckpt.sp-tmp-1-abcd").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "done.ckpt").mkdir()
    (tmp_path / "done.ckpt" / ".metadata").write_bytes(b"")
    (tmp_path / "partial.ckpt").mkdir()  # a sharded save that never committed
    entries = {os.path.basename(e.path): e for e in io.list_checkpoints(str(tmp_path))}
    assert sorted(entries) == ["a.ckpt", "done.ckpt"]
    assert entries["a.ckpt"].size == (tmp_path / "a.ckpt").stat().st_size and not entries["a.ckpt"].is_dir
    assert entries["done.ckpt"].is_dir
    assert isinstance(entries["a.ckpt"], CheckpointEntry)


def test_list_checkpoints_of_a_missing_folder_is_empty(tmp_path, memory_dir):
    assert TorchCheckpointIO().list_checkpoints(str(tmp_path / "none")) == []
    assert TorchCheckpointIO().list_checkpoints(memory_dir + "/none") == []


def test_list_checkpoints_orders_by_modification_time_on_memory_fs(memory_dir):
    io = TorchCheckpointIO()
    io.save_checkpoint(_ckpt(), f"{memory_dir}/old.ckpt")
    io.save_checkpoint(_ckpt(), f"{memory_dir}/new.ckpt")
    entries = sorted(io.list_checkpoints(memory_dir), key=lambda e: e.mtime)
    assert [e.path for e in entries] == [f"{memory_dir}/old.ckpt", f"{memory_dir}/new.ckpt"]
    assert all(e.size > 0 for e in entries)


def test_list_checkpoints_skips_a_dangling_symlink_with_a_warning(tmp_path):
    os.symlink("missing.ckpt", tmp_path / "last.ckpt")
    with pytest.warns(UserWarning, match=r"last\.ckpt.*dangling symlink"):
        assert TorchCheckpointIO().list_checkpoints(str(tmp_path)) == []


def test_exists_counts_a_dangling_symlink_as_taken(tmp_path, memory_dir):
    io = TorchCheckpointIO()
    os.symlink("missing.ckpt", tmp_path / "last.ckpt")
    assert io.exists(str(tmp_path / "last.ckpt")) and not io.exists(str(tmp_path / "other.ckpt"))
    io.save_checkpoint(_ckpt(), f"{memory_dir}/a.ckpt")
    assert io.exists(f"{memory_dir}/a.ckpt") and not io.exists(f"{memory_dir}/b.ckpt")


def test_list_folders_lists_run_folders(tmp_path, memory_dir):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_1").mkdir()
    (tmp_path / "file.txt").write_text("x")
    io = TorchCheckpointIO()
    assert io.list_folders(str(tmp_path)) == [str(tmp_path / "version_0"), str(tmp_path / "version_1")]
    io.save_checkpoint(_ckpt(), f"{memory_dir}/version_3/checkpoints/a.ckpt")
    assert io.list_folders(memory_dir) == [f"{memory_dir}/version_3"]


def test_text_roundtrip_local_and_memory(tmp_path, memory_dir):
    io = TorchCheckpointIO()
    for path in (str(tmp_path / "sub" / "hparams.yaml"), f"{memory_dir}/hparams.yaml"):
        io.save_text("lr: 0.1\nname: é\n", path)
        assert io.load_text(path) == "lr: 0.1\nname: é\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["hparams.yaml"]  # no temporary file left


def test_makedirs_creates_parents_and_accepts_an_existing_folder(tmp_path):
    io = TorchCheckpointIO()
    io.makedirs(str(tmp_path / "a" / "b"))
    io.makedirs(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def test_check_writable_names_the_folder_when_a_file_is_in_the_way(tmp_path):
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"'.*blocker/ck'.*blocker.*is a file"):
        TorchCheckpointIO().check_writable(str(tmp_path / "blocker" / "ck"))


def test_check_writable_probes_an_object_store_and_leaves_nothing(memory_dir):
    TorchCheckpointIO().check_writable(memory_dir + "/run")
    fs = fsspec.filesystem("memory")
    assert not fs.exists(memory_dir + "/run") or fs.ls(memory_dir + "/run") == []


def test_custom_io_gets_working_defaults_for_the_path_questions(tmp_path):
    io = DictIO()
    io.save_checkpoint(_ckpt(), str(tmp_path / "a.ckpt"))
    assert io.exists(str(tmp_path / "a.ckpt"))
    assert [os.path.basename(e.path) for e in io.list_checkpoints(str(tmp_path))] == ["a.ckpt"]
    assert not io.is_sharded_checkpoint(str(tmp_path / "a.ckpt"))
    with pytest.raises(NotImplementedError, match="DictIO cannot write sharded"):
        io.save_sharded({}, str(tmp_path / "s"))
