"""Paced writeback of background saves (`_writeback.PacedWriter`, `TorchCheckpointIO(writeback_chunk=)`)."""

import ctypes
import errno
import io
import itertools
import os
import struct
import sys
import threading
import zipfile

import pytest
import torch

from helpers import off_main_thread
from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import TorchCheckpointIO, _writeback
from savepoint.plugins.io._fs import TMP_MARKER

_WRITE, _WAIT = 2, 1 | 2 | 4


def _ckpt(value: float, n: int = 256):
    return {"state_dict": {f"w{i}": torch.full((n, n), value + i) for i in range(4)}, "epoch": 0}


class _Recorder:
    """Stands in for sync_file_range: records the calls, optionally fails the n-th with `errno_`."""

    def __init__(self, fail_at: int | None = None, errno_: int = errno.EIO) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail_at, self.errno_ = fail_at, errno_

    def __call__(self, fd: int, offset: int, nbytes: int, flags: int) -> int:
        self.calls.append((offset, nbytes, flags))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            ctypes.set_errno(self.errno_)
            return -1
        return 0


def test_a_background_save_hands_every_piece_over_and_waits_for_the_previous(tmp_path, monkeypatch):
    calls = _Recorder()
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", calls)
    io_ = TorchCheckpointIO(writeback_chunk=64 << 10)
    path = tmp_path / "a.ckpt"
    assert off_main_thread(lambda: io_.save_checkpoint(_ckpt(1.0), str(path))) is None
    assert verify_checkpoint(path).ok
    started = [(o, n) for o, n, f in calls.calls if f == _WRITE]
    waited = [(o, n) for o, n, f in calls.calls if f == _WAIT]
    assert len(started) >= 4 and all(n >= 64 << 10 for _, n in started)
    assert started[0][0] == 0 and all(
        a[0] + a[1] == b[0] for a, b in itertools.pairwise(started)
    )  # contiguous
    assert waited == started[:-1]  # each piece is waited for once the next one is handed over
    assert started[-1][0] + started[-1][1] <= path.stat().st_size


def test_a_save_over_an_existing_name_is_paced_too(tmp_path, monkeypatch):
    calls = _Recorder()
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", calls)
    io_ = TorchCheckpointIO(writeback_chunk=64 << 10)
    path = tmp_path / "last.ckpt"
    for value in (1.0, 2.0, 3.0):  # a new file, then the spare, then the spare rewritten in place
        assert off_main_thread(lambda v=value: io_.save_checkpoint(_ckpt(v), str(path))) is None
        assert verify_checkpoint(path).ok
        assert torch.load(path, weights_only=True)["state_dict"]["w0"][0, 0] == value
    assert sum(f == _WRITE for _, _, f in calls.calls) >= 12


def test_main_thread_saves_and_writeback_chunk_0_are_not_paced(tmp_path, monkeypatch):
    calls = _Recorder()
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", calls)
    TorchCheckpointIO(writeback_chunk=64 << 10).save_checkpoint(_ckpt(1.0), str(tmp_path / "a.ckpt"))
    off = TorchCheckpointIO(writeback_chunk=0)
    assert off_main_thread(lambda: off.save_checkpoint(_ckpt(1.0), str(tmp_path / "b.ckpt"))) is None
    assert calls.calls == []
    assert verify_checkpoint(tmp_path / "a.ckpt").ok and verify_checkpoint(tmp_path / "b.ckpt").ok


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.ESPIPE])
def test_a_file_that_refuses_sync_file_range_is_written_plainly(tmp_path, monkeypatch, code):
    calls = _Recorder(fail_at=1, errno_=code)
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", calls)
    io_ = TorchCheckpointIO(writeback_chunk=64 << 10)
    path = tmp_path / "a.ckpt"
    assert off_main_thread(lambda: io_.save_checkpoint(_ckpt(1.0), str(path))) is None
    assert len(calls.calls) == 1 and verify_checkpoint(path).ok


def test_a_writeback_error_fails_the_save_and_keeps_the_previous_file(tmp_path, monkeypatch):
    # The kernel reports a writeback error once per descriptor: swallowed here, the fsync could succeed.
    path = tmp_path / "a.ckpt"
    TorchCheckpointIO().save_checkpoint(_ckpt(1.0), str(path))
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", _Recorder(fail_at=2, errno_=errno.EIO))
    io_ = TorchCheckpointIO(writeback_chunk=64 << 10, use_spares=False)
    err = off_main_thread(lambda: io_.save_checkpoint(_ckpt(2.0), str(path)))
    assert isinstance(err, CheckpointWriteError) and "Input/output error" in str(err)
    assert torch.load(path, weights_only=True)["state_dict"]["w0"][0, 0] == 1.0
    assert not [p for p in os.listdir(tmp_path) if TMP_MARKER in p]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_real_sync_file_range_is_found_and_used(tmp_path):
    assert _writeback._SYNC_FILE_RANGE is not None
    io_ = TorchCheckpointIO(writeback_chunk=64 << 10)
    path = tmp_path / "a.ckpt"
    assert off_main_thread(lambda: io_.save_checkpoint(_ckpt(1.0), str(path))) is None
    assert verify_checkpoint(path).ok


def test_short_writes_are_continued(tmp_path, monkeypatch):
    monkeypatch.setattr(_writeback, "_SYNC_FILE_RANGE", _Recorder())

    class Short(io.FileIO):
        def write(self, b):  # a raw file may write less than asked
            return super().write(memoryview(b)[:1000])

    with Short(tmp_path / "raw", "w") as f:
        w = _writeback.PacedWriter(f, 4096)
        data = os.urandom(50_000)
        assert w.write(data) == len(data) and w.tell() == len(data)
    assert (tmp_path / "raw").read_bytes() == data


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8M"])
def test_writeback_chunk_is_a_number_of_bytes(bad):
    with pytest.raises(ValueError, match="writeback_chunk"):
        TorchCheckpointIO(writeback_chunk=bad)


def test_short_writes_keep_the_crc_of_what_went_out(tmp_path):
    import zlib

    class Short(io.FileIO):
        def write(self, b):
            return super().write(memoryview(b)[:777])

    data = os.urandom(50_000)
    with Short(tmp_path / "raw", "w") as f:
        w = _writeback.PacedWriter(f, 0)
        w.write(b"head")
        w.write(data)
    assert w.crcs == {0: (4, zlib.crc32(b"head")), 4: (len(data), zlib.crc32(data))}


@pytest.mark.parametrize("where", ["writer thread", "main thread"])
def test_a_save_takes_its_crcs_as_it_writes_and_never_reads_the_data_back(tmp_path, monkeypatch, where):
    import zipfile

    from savepoint.plugins.io import _zipcrc

    reads: list[int] = []
    real = _zipcrc._crc_of
    monkeypatch.setattr(
        _zipcrc, "_crc_of", lambda f, start, length, buf: reads.append(length) or real(f, start, length, buf)
    )
    path, reference = tmp_path / "a.ckpt", tmp_path / "ref.ckpt"
    ckpt = _ckpt(1.0)
    if where == "main thread":
        TorchCheckpointIO().save_checkpoint(ckpt, str(path))
    else:
        assert off_main_thread(lambda: TorchCheckpointIO().save_checkpoint(ckpt, str(path))) is None
    torch.save(ckpt, reference)  # torch's own in-line CRCs
    assert reads == []  # every record's CRC came from its write
    ours = {i.filename.split("/", 1)[1]: i.CRC for i in zipfile.ZipFile(path).infolist()}
    theirs = {i.filename.split("/", 1)[1]: i.CRC for i in zipfile.ZipFile(reference).infolist()}
    assert ours["data/0"] == theirs["data/0"] and ours["data/3"] == theirs["data/3"]
    assert all(v != 0 for v in ours.values()) and verify_checkpoint(path).ok
    assert zipfile.ZipFile(path).testzip() is None


def test_fill_crc32_reads_back_records_whose_bytes_it_did_not_see(tmp_path):
    import zipfile

    from savepoint.plugins.io._saveopts import torch_save_options
    from savepoint.plugins.io._zipcrc import fill_crc32

    path = tmp_path / "a.ckpt"
    with torch_save_options(crc32=False):
        torch.save(_ckpt(1.0), path)
    assert {i.CRC for i in zipfile.ZipFile(path).infolist()} == {0}  # torch skipped them
    fill_crc32(path, {})
    assert zipfile.ZipFile(path).testzip() is None and verify_checkpoint(path).ok


def _records(path) -> dict[str, tuple[int, int]]:
    """Each record's name -> (offset of its data in the file, CRC32 in the directory)."""
    out = {}
    with open(path, "rb") as f:
        for info in zipfile.ZipFile(path).infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            out[info.filename.split("/", 1)[1]] = (info.header_offset + 30 + name_len + extra_len, info.CRC)
    return out


def _stored(path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def test_torch_save_options_apply_to_the_calling_thread_only(tmp_path):
    # A background save switches torch's CRCs off and aligns to pages: another thread's torch.save meanwhile
    # (the user's, or savepoint's own save to an object store) must keep torch's defaults.
    from savepoint.plugins.io._saveopts import supported, torch_save_options

    assert supported() == {"crc32", "storage_alignment"}  # this torch: both apply
    inside, go_on = threading.Event(), threading.Event()

    def background() -> None:
        with torch_save_options(crc32=False, storage_alignment=4096):
            torch.save(_ckpt(1.0), tmp_path / "background.ckpt")
            inside.set()
            go_on.wait(5)
            torch.save(_ckpt(1.0), tmp_path / "background2.ckpt")
        torch.save(_ckpt(1.0), tmp_path / "after.ckpt")

    t = threading.Thread(target=background)
    t.start()
    assert inside.wait(5)
    torch.save(_ckpt(1.0), tmp_path / "main.ckpt")  # while the other thread is inside its options
    go_on.set()
    t.join()
    for name in ("background.ckpt", "background2.ckpt"):
        records = _records(tmp_path / name)
        assert {crc for _, crc in records.values()} == {0}
        assert all(offset % 4096 == 0 for offset, _ in records.values())
        assert _stored(tmp_path / name, records[".storage_alignment"][0], 4) == b"4096"
    for name in ("main.ckpt", "after.ckpt"):
        records = _records(tmp_path / name)
        assert all(crc != 0 for _, crc in records.values())
        assert not all(offset % 4096 == 0 for offset, _ in records.values())
        assert _stored(tmp_path / name, records[".storage_alignment"][0], 2) == b"64"


def test_a_remote_save_keeps_torchs_crcs_while_a_background_save_has_them_off(tmp_path, monkeypatch):
    # A save to an object store cannot patch CRCs in afterwards: it must never write without them.
    import zipfile

    import fsspec

    real = _writeback.PacedWriter.write
    gate, remote_done = threading.Event(), threading.Event()

    def slow_write(self, data):  # the background save stops in the middle of its write
        gate.set()
        remote_done.wait(0.5)
        return real(self, data)

    monkeypatch.setattr(_writeback.PacedWriter, "write", slow_write)
    io_ = TorchCheckpointIO()
    worker = threading.Thread(target=io_.save_checkpoint, args=(_ckpt(1.0), str(tmp_path / "local.ckpt")))
    worker.start()
    assert gate.wait(5)
    io_.save_checkpoint(_ckpt(2.0), "memory://bucket/remote.ckpt")
    remote_done.set()
    worker.join()
    with fsspec.open("memory://bucket/remote.ckpt", "rb") as f:
        data = f.read()
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert (
        all(i.CRC != 0 for i in infos if i.file_size) and zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    )
    assert verify_checkpoint(tmp_path / "local.ckpt").ok
