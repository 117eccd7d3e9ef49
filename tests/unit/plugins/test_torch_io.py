import os
import subprocess
import sys

import pytest
import torch

from savepoint.checkpoint.errors import (
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
)
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import TorchCheckpointIO
from savepoint.plugins.io._fs import TMP_MARKER, writer_id


def _ckpt(value: float = 1.0):
    return {"state_dict": {"w": torch.full((64, 64), value)}, "epoch": 0}


class _Boom:
    """Pickling it fails: an error injected in the middle of torch.save."""

    def __reduce__(self):
        raise RuntimeError("injected failure")


def test_torch_io_save_then_load_roundtrip(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "a.ckpt"
    io.save_checkpoint(_ckpt(2.0), str(path))
    assert torch.equal(io.load_checkpoint(str(path))["state_dict"]["w"], torch.full((64, 64), 2.0))


def test_torch_io_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "a.ckpt"
    io.save_checkpoint(_ckpt(1.0), str(path))
    bad = _ckpt(9.0)
    bad["boom"] = _Boom()
    with pytest.raises(CheckpointWriteError, match=str(path)):
        io.save_checkpoint(bad, str(path))
    assert torch.equal(io.load_checkpoint(str(path))["state_dict"]["w"], torch.full((64, 64), 1.0))
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]


def test_torch_io_sweeps_temporaries_left_by_a_killed_writer(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".a.ckpt{TMP_MARKER}{writer_id()}-{int(dead.stdout)}-deadbeef"
    stale.write_bytes(b"partial")
    TorchCheckpointIO().save_checkpoint(_ckpt(), str(tmp_path / "b.ckpt"))
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["b.ckpt"]


def test_torch_io_temporary_names_never_look_like_checkpoints(tmp_path):
    from pathlib import Path

    from savepoint.plugins.io._fs import temp_name_for

    tmp = temp_name_for(Path(tmp_path / "epoch=1.ckpt"))
    assert tmp.name.startswith(".") and not tmp.name.endswith(".ckpt")


def test_torch_io_missing_file_is_a_typed_error_naming_the_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"nope.ckpt"):
        TorchCheckpointIO().load_checkpoint(str(tmp_path / "nope.ckpt"))


def test_torch_io_torn_file_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "torn.ckpt"
    TorchCheckpointIO().save_checkpoint(_ckpt(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"torn.ckpt"):
        TorchCheckpointIO().load_checkpoint(str(path))


def test_torch_io_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes_corrupt.ckpt"
    path.write_text("hello, not a checkpoint\n" * 10)
    with pytest.raises((CorruptCheckpointError, UnsafeCheckpointError), match=r"notes_corrupt.ckpt"):
        TorchCheckpointIO().load_checkpoint(str(path))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.writes_unsafe_files
def test_torch_io_refuses_pickled_code_and_never_runs_it(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt"):
        TorchCheckpointIO().load_checkpoint(str(path))
    assert not (tmp_path / "pwned.txt").exists()


def test_torch_io_loads_memory_mapped_on_cpu(tmp_path):
    path = tmp_path / "m.ckpt"
    TorchCheckpointIO().save_checkpoint(_ckpt(3.0), str(path))
    loaded = TorchCheckpointIO().load_checkpoint(str(path), map_location="cpu")
    ptr = loaded["state_dict"]["w"].data_ptr()
    # backed by a mapping of the file itself, not by a private copy on the heap
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps if str(path) in line]
    assert any(int(r[0].split("-")[0], 16) <= ptr < int(r[0].split("-")[1], 16) for r in regions)


def test_torch_io_memory_filesystem_roundtrip():
    io = TorchCheckpointIO()
    io.save_checkpoint(_ckpt(4.0), "memory://bucket/run/a.ckpt")
    assert torch.equal(
        io.load_checkpoint("memory://bucket/run/a.ckpt")["state_dict"]["w"], torch.full((64, 64), 4.0)
    )
    io.remove_checkpoint("memory://bucket/run/a.ckpt")
    with pytest.raises(CheckpointNotFoundError):
        io.load_checkpoint("memory://bucket/run/a.ckpt")


def test_torch_io_remove_missing_is_not_an_error(tmp_path):
    TorchCheckpointIO().remove_checkpoint(str(tmp_path / "gone.ckpt"))


def test_verify_reports_a_flipped_byte(tmp_path):
    path = tmp_path / "flip_corrupt.ckpt"
    TorchCheckpointIO().save_checkpoint(_ckpt(5.0), str(path))
    assert verify_checkpoint(path).ok
    data = bytearray(path.read_bytes())
    # flip a byte inside the tensor payload (the biggest record), not in the zip directory
    offset = data.find(b"\x00\x00\xa0@")  # 5.0 as float32, little endian
    assert offset > 0
    data[offset + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # torch.load does not notice...
    loaded = torch.load(path, weights_only=True)
    assert not torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), 5.0))
    # ...verify does
    report = verify_checkpoint(path)
    assert not report.ok and "CRC" in " ".join(report.problems).upper()


def test_verify_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "bare.ckpt"
    torch.save({"w": torch.ones(1)}, path)
    report = verify_checkpoint(path)
    assert not report.ok and "not a checkpoint" in report.problems[0]


def test_torch_io_overwrite_frees_the_old_copy_by_teardown(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    for value in (1.0, 2.0, 3.0):
        io.save_checkpoint(_ckpt(value), str(path))
    io.teardown()
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]
    assert torch.equal(io.load_checkpoint(str(path))["state_dict"]["w"], torch.full((64, 64), 3.0))


def test_torch_io_interrupt_during_a_write_surfaces_as_the_interrupt(tmp_path, monkeypatch):
    import builtins

    from savepoint.plugins.io import torch_io

    path = tmp_path / "model.ckpt"
    io = TorchCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(4)}, str(path))

    class InterruptedFile:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt  # Ctrl-C while torch's C++ writer is in a write
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def interrupted_open(*args, **kwargs):
        return InterruptedFile(builtins.open(*args, **kwargs))

    monkeypatch.setattr(torch_io, "open", interrupted_open, raising=False)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"w": torch.ones(1000)}, str(path))
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(4))  # the previous file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]  # no temporary file left


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine without CUDA is the case")
def test_torch_io_loads_a_gpu_saved_file_on_a_machine_without_cuda(tmp_path, monkeypatch):
    """A sync save of a CUDA run records its tensors as on ``cuda:0``; without a GPU they load to the CPU
    (as Lightning's load_from_checkpoint does) instead of being reported as a torn file."""
    import torch.serialization

    path = tmp_path / "gpu.ckpt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(_ckpt(3.0), str(path))
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(str(path), weights_only=True)
    loaded = TorchCheckpointIO().load_checkpoint(str(path))
    assert loaded["state_dict"]["w"].device.type == "cpu"
    assert torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), 3.0))
