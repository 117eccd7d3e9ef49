"""TorchCheckpointIO's write paths: the spare rewritten in place, links, and which temporaries a sweep removes."""

import os
import time
from pathlib import Path

import pytest
import torch

from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import TorchCheckpointIO, _fs
from savepoint.plugins.io._fs import TMP_MARKER, exchange, sweep_stale_temps, temp_name_for
from savepoint.plugins.io._spare import SPARE_DIR, spare_path


def _ckpt(value: float, n: int = 64):
    return {"state_dict": {"w": torch.full((n, n), value)}, "epoch": 0}


def _w(path) -> float:
    return float(torch.load(path, weights_only=True)["state_dict"]["w"][0, 0])


def _can_exchange(folder: Path) -> bool:
    a, b = folder / "probe-a", folder / "probe-b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    try:
        return exchange(a, b)
    finally:
        a.unlink()
        b.unlink()


def test_torch_io_overwrite_rewrites_the_spare_in_place(tmp_path):
    if not _can_exchange(tmp_path):
        pytest.skip("this file system cannot exchange names (the fallback is tested below)")
    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(path))
    io.save_checkpoint(_ckpt(2.0), str(path))  # the previous file becomes the spare
    spare = spare_path(path)
    spare_inode = spare.stat().st_ino
    io.save_checkpoint(_ckpt(3.0), str(path))  # written into the spare, then swapped in
    assert path.stat().st_ino == spare_inode
    assert _w(path) == 3.0 and _w(spare) == 2.0
    assert verify_checkpoint(path).ok


def test_torch_io_spare_shrinks_to_the_new_size(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    for n in (256, 256, 16):  # the third save rewrites a spare that held a bigger file
        io.save_checkpoint(_ckpt(float(n), n), str(path))
    assert _w(path) == 16.0 and verify_checkpoint(path).ok
    assert path.stat().st_size < 16 * 1024


def test_torch_io_spare_is_never_a_visible_checkpoint(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    for value in (1.0, 2.0, 3.0):
        io.save_checkpoint(_ckpt(value), str(path))
        # between saves: no hidden temporary beside the checkpoints, nothing else named *.ckpt
        names = sorted(os.listdir(tmp_path))
        assert names in (["last.ckpt"], [SPARE_DIR, "last.ckpt"])
        assert (
            not [n for n in os.listdir(tmp_path / SPARE_DIR) if n.endswith(".ckpt")]
            if len(names) > 1
            else True
        )
    io.teardown()
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


def test_torch_io_never_rewrites_a_spare_that_is_another_checkpoint(tmp_path):
    io = TorchCheckpointIO()
    top = tmp_path / "epoch=0.ckpt"
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(top))
    io.link_checkpoint(str(top), str(last))
    for value in (2.0, 3.0, 4.0):  # overwrite last.ckpt: its old bytes are epoch=0.ckpt's too
        io.save_checkpoint(_ckpt(value), str(last))
    assert _w(top) == 1.0 and verify_checkpoint(top).ok
    assert _w(last) == 4.0


def test_torch_io_remove_checkpoint_removes_its_spare(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "a.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(path))
    io.save_checkpoint(_ckpt(2.0), str(path))
    io.remove_checkpoint(str(path))
    io.teardown()
    assert os.listdir(tmp_path) == []


def test_torch_io_link_makes_an_independent_second_name(tmp_path):
    io = TorchCheckpointIO()
    top, last = tmp_path / "epoch=0.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(top))
    io.save_checkpoint(_ckpt(0.0), str(last))
    io.link_checkpoint(str(top), str(last))
    assert top.stat().st_ino == last.stat().st_ino and _w(last) == 1.0
    io.remove_checkpoint(str(top))
    assert _w(last) == 1.0 and verify_checkpoint(last).ok
    io.teardown()
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


def test_torch_io_link_copies_where_hard_links_are_refused(tmp_path, monkeypatch):
    io = TorchCheckpointIO()
    top, last = tmp_path / "a.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(top))

    def refuse(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    io.link_checkpoint(str(top), str(last))
    assert top.stat().st_ino != last.stat().st_ino and _w(last) == 1.0


def test_torch_io_link_on_an_object_store_copies():
    io = TorchCheckpointIO()
    io.save_checkpoint(_ckpt(7.0), "memory://linkbucket/a.ckpt")
    io.link_checkpoint("memory://linkbucket/a.ckpt", "memory://linkbucket/last.ckpt")
    io.remove_checkpoint("memory://linkbucket/a.ckpt")
    loaded = io.load_checkpoint("memory://linkbucket/last.ckpt")
    assert float(loaded["state_dict"]["w"][0, 0]) == 7.0


def test_torch_io_without_exchange_keeps_the_folder_clean(tmp_path, monkeypatch):
    monkeypatch.setattr(_fs, "_exchange_ok", False)
    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    for value in (1.0, 2.0, 3.0):
        io.save_checkpoint(_ckpt(value), str(path))
        assert not [n for n in os.listdir(tmp_path) if TMP_MARKER in n]
    io.teardown()
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"] and _w(path) == 3.0


def test_sweep_keeps_a_temporary_of_another_host(tmp_path):
    other = tmp_path / f".a.ckpt{TMP_MARKER}otherhost.4026531836-{os.getpid()}-deadbeef"
    other.write_bytes(b"in progress on another machine")
    assert sweep_stale_temps(tmp_path) == []
    assert other.exists()


def test_sweep_removes_a_temporary_of_another_host_once_old(tmp_path):
    other = tmp_path / f".a.ckpt{TMP_MARKER}otherhost.4026531836-1-deadbeef"
    other.write_bytes(b"abandoned long ago")
    old = time.time() - _fs.STALE_TEMP_AGE_S - 60
    os.utime(other, (old, old))
    assert sweep_stale_temps(tmp_path) == [other]


def test_sweep_keeps_this_process_active_temporary(tmp_path):
    mine = temp_name_for(tmp_path / "a.ckpt")
    mine.write_bytes(b"being written")
    assert sweep_stale_temps(tmp_path, {mine}) == []
    assert sweep_stale_temps(tmp_path, set()) == [mine]
