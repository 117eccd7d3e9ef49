"""Direct writes of background saves: page-aligned records from page-aligned buffers go out with O_DIRECT
(`_writeback.PacedWriter(direct=)`, `TorchCheckpointIO(direct_writes=)`, `AsyncCheckpointIO`'s buffers)."""

import errno
import os
import struct
import zipfile

import pytest
import torch

from helpers import off_main_thread
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO, _writeback
from savepoint.plugins.io._fs import TMP_MARKER
from savepoint.plugins.io.async_io import _HostBuffers

pytestmark = pytest.mark.skipif(not _writeback.O_DIRECT, reason="O_DIRECT is Linux's and FreeBSD's")


def _state(value: float = 1.0) -> dict:
    gen = torch.Generator().manual_seed(int(value))
    weights = {f"w{i}": torch.randn(512, 1024, generator=gen) + value for i in range(3)}  # 2 MB each
    weights["odd"] = torch.randn(300_001, generator=gen)  # 1.2 MB: whole pages direct, its tail buffered
    weights["small"] = torch.arange(10.0)
    return {"state_dict": weights, "epoch": 3}


def _snapshot(state: dict) -> dict:
    return _HostBuffers().snapshot(state)  # what an async save writes from


def _offsets(path) -> dict[str, int]:
    out = {}
    with open(path, "rb") as f:
        for info in zipfile.ZipFile(path).infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            out[info.filename.split("/", 1)[1]] = info.header_offset + 30 + name_len + extra_len
    return out


def _in_thread(fn) -> None:
    err = off_main_thread(fn)
    if err is not None:
        raise err


class _Spy:
    """Counts the bytes PacedWriter sent through its O_DIRECT descriptor."""

    def __init__(self, monkeypatch) -> None:
        self.direct = 0
        real = _writeback.PacedWriter._write_direct

        def spy(writer, view):
            ok = real(writer, view)
            self.direct += len(view) if ok else 0
            return ok

        monkeypatch.setattr(_writeback.PacedWriter, "_write_direct", spy)


def test_snapshot_buffers_of_a_megabyte_or_more_start_on_a_page():
    snap = _snapshot(_state())["state_dict"]
    assert all(snap[k].data_ptr() % 4096 == 0 for k in ("w0", "w1", "w2", "odd"))
    assert all(torch.equal(snap[k], v) for k, v in _state()["state_dict"].items())


def test_a_background_save_writes_large_records_directly_and_the_file_is_the_same(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    state = _snapshot(_state())
    direct, plain = tmp_path / "direct.ckpt", tmp_path / "plain.ckpt"
    _in_thread(lambda: TorchCheckpointIO().save_checkpoint(state, str(direct)))
    assert spy.direct == 3 * (2 << 20) + 1_200_004 // 4096 * 4096  # three 2 MB tensors, "odd" but its tail
    offsets = _offsets(direct)
    assert all(offset % 4096 == 0 for offset in offsets.values())  # every record starts on a page
    assert zipfile.ZipFile(direct).testzip() is None and verify_checkpoint(direct).ok
    loaded = torch.load(direct, weights_only=True)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in _state()["state_dict"].items())
    mapped = torch.load(direct, weights_only=True, mmap=True)
    assert torch.equal(mapped["state_dict"]["odd"], _state()["state_dict"]["odd"])
    from torch.utils.serialization import config

    with config.patch({"load.calculate_storage_offsets": True}):  # trusts the .storage_alignment record
        computed = torch.load(direct, weights_only=True, mmap=True)
    assert torch.equal(computed["state_dict"]["w2"], _state()["state_dict"]["w2"])
    # The same bytes as the same aligned save written through the page cache.
    spy.direct = 0
    _in_thread(lambda: TorchCheckpointIO(direct_writes=False).save_checkpoint(state, str(plain)))
    assert spy.direct == 0
    from savepoint.plugins.io._saveopts import torch_save_options

    with torch_save_options(storage_alignment=4096):
        TorchCheckpointIO().save_checkpoint(state, str(plain))  # main thread: never direct
    assert spy.direct == 0 and plain.read_bytes() == direct.read_bytes()


def test_a_save_over_last_rewrites_its_spare_directly(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    io_ = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    for value in (1.0, 2.0, 3.0):  # a new file, then the spare, then the spare rewritten in place
        state = _snapshot(_state(value))
        _in_thread(lambda s=state: io_.save_checkpoint(s, str(path)))
        assert verify_checkpoint(path).ok
        assert torch.equal(
            torch.load(path, weights_only=True)["state_dict"]["w1"], _state(value)["state_dict"]["w1"]
        )
    assert spy.direct >= 3 * 3 * (2 << 20)


def test_unaligned_buffers_and_main_thread_saves_go_through_the_page_cache(tmp_path, monkeypatch):
    import mmap

    spy = _Spy(monkeypatch)
    shifted = {}  # each tensor's storage 64 bytes past a page boundary
    for name, value in _state()["state_dict"].items():
        memory = mmap.mmap(-1, value.nbytes + 64)
        shifted[name] = (
            torch.frombuffer(memory, dtype=torch.uint8, offset=64).view(value.dtype).view(value.shape)
        )
        shifted[name].copy_(value)
        assert shifted[name].untyped_storage().data_ptr() % 4096 == 64
    _in_thread(
        lambda: TorchCheckpointIO().save_checkpoint({"state_dict": shifted}, str(tmp_path / "shifted.ckpt"))
    )
    TorchCheckpointIO().save_checkpoint(_snapshot(_state()), str(tmp_path / "main.ckpt"))
    assert verify_checkpoint(tmp_path / "shifted.ckpt").ok and verify_checkpoint(tmp_path / "main.ckpt").ok
    loaded = torch.load(tmp_path / "shifted.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(loaded[k], v) for k, v in _state()["state_dict"].items())
    assert spy.direct == 0


def test_a_checkpoint_with_a_sparse_tensor_saves_in_the_background(tmp_path):
    state = _snapshot(_state())
    state["sparse"] = torch.eye(64).to_sparse()
    path = tmp_path / "a.ckpt"
    _in_thread(lambda: TorchCheckpointIO().save_checkpoint(state, str(path)))
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["sparse"].to_dense(), torch.eye(64)) and verify_checkpoint(path).ok


def test_the_direct_descriptor_must_be_the_file_being_written(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with open(a, "r+b") as f:
        fd = _writeback.open_direct(a, f.fileno())
        assert fd is not None
        os.close(fd)
        assert _writeback.open_direct(b, f.fileno()) is None  # the name now leads to another file
        assert _writeback.open_direct(tmp_path / "gone", f.fileno()) is None


def test_many_small_tensors_are_not_padded_to_pages(tmp_path):
    state = {"state_dict": {f"b{i}": torch.zeros(64) for i in range(200)} | {"w": torch.zeros(256, 1024)}}
    path = tmp_path / "a.ckpt"
    _in_thread(lambda: TorchCheckpointIO().save_checkpoint(_snapshot(state), str(path)))
    assert not all(offset % 4096 == 0 for offset in _offsets(path).values())  # torch's 64-byte alignment
    assert path.stat().st_size < 1_200_000 and verify_checkpoint(path).ok


def test_a_file_system_without_o_direct_is_written_plainly(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if flags & _writeback.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # tmpfs, some network file systems
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_writeback.os, "open", refuse)
    spy = _Spy(monkeypatch)
    path = tmp_path / "a.ckpt"
    _in_thread(lambda: TorchCheckpointIO().save_checkpoint(_snapshot(_state()), str(path)))
    assert spy.direct == 0 and verify_checkpoint(path).ok


def test_a_direct_write_refused_mid_file_goes_on_through_the_page_cache(tmp_path, monkeypatch):
    real = os.pwrite
    calls: list[int] = []

    def pwrite(fd, data, offset):
        if len(data) >= 4096:  # a direct write (the CRCs filled in afterwards are 4 bytes each)
            calls.append(offset)
            if len(calls) == 2:  # the second record: this file system wants another alignment
                raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(_writeback.os, "pwrite", pwrite)
    path = tmp_path / "a.ckpt"
    _in_thread(lambda: TorchCheckpointIO().save_checkpoint(_snapshot(_state()), str(path)))
    assert len(calls) == 2  # after the refusal no direct write is tried again
    assert verify_checkpoint(path).ok
    loaded = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(loaded[k], v) for k, v in _state()["state_dict"].items())


def test_a_direct_write_error_fails_the_save_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    TorchCheckpointIO().save_checkpoint(_state(1.0), str(path))
    real, failed = os.pwrite, []

    def full(fd, data, offset):
        if len(data) >= 4096:  # a direct write (the CRCs filled in afterwards are 4 bytes each)
            failed.append(offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(_writeback.os, "pwrite", full)
    io_ = AsyncCheckpointIO(TorchCheckpointIO(use_spares=False))
    io_.save_checkpoint(_state(2.0), str(path))
    with pytest.raises(Exception, match="disk is full"):
        io_.teardown()
    assert failed  # the failure came from a direct write
    assert torch.equal(
        torch.load(path, weights_only=True)["state_dict"]["w0"], _state(1.0)["state_dict"]["w0"]
    )
    assert not [p for p in os.listdir(tmp_path) if TMP_MARKER in p]
