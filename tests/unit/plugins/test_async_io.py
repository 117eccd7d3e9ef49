import threading
import time

import pytest
import torch

from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO


class Recording(CheckpointIO):
    """Records calls; a save can be held back with `gate` and made to fail with `fail_on`."""

    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.saved: dict[str, dict] = {}
        self.fail_on = fail_on
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.gate.wait()
        time.sleep(self.delay)
        if path == self.fail_on:
            raise OSError(f"disk on fire writing {path}")
        self.saved[path] = checkpoint
        self.calls.append(("save", path))

    def load_checkpoint(self, path, map_location=None, **kwargs):
        self.calls.append(("load", path))
        return self.saved[path]

    def remove_checkpoint(self, path):
        self.calls.append(("remove", path))
        self.saved.pop(path, None)


def test_async_io_file_is_a_point_in_time_snapshot():
    base = Recording()
    base.gate.clear()
    io = AsyncCheckpointIO(base)
    weights = torch.zeros(4)
    meta = {"epoch": 1}
    io.save_checkpoint({"w": weights, "meta": meta}, "a")
    weights.add_(5)  # training goes on mutating the live tensors...
    meta["epoch"] = 99
    base.gate.set()
    io.teardown()
    assert torch.equal(base.saved["a"]["w"], torch.zeros(4))
    assert base.saved["a"]["meta"] == {"epoch": 1}


def test_async_io_reuses_host_buffers_across_saves():
    base = Recording()
    io = AsyncCheckpointIO(base)
    w = torch.randn(8)
    io.save_checkpoint({"w": w}, "a")
    io.wait()
    first = base.saved["a"]["w"]
    io.save_checkpoint({"w": w + 1}, "b")
    io.teardown()
    assert base.saved["b"]["w"].data_ptr() == first.data_ptr()  # same buffer, reused


def test_async_io_removal_never_overtakes_the_save_before_it():
    base = Recording(delay=0.05)
    io = AsyncCheckpointIO(base)
    io.save_checkpoint({"w": torch.ones(1)}, "new")
    io.remove_checkpoint("old")
    io.teardown()
    assert base.calls == [("save", "new"), ("remove", "old")]


def test_async_io_error_is_raised_once_at_next_save_with_the_path():
    base = Recording(fail_on="bad")
    io = AsyncCheckpointIO(base)
    io.save_checkpoint({"w": torch.ones(1)}, "bad")
    io.remove_checkpoint("previous")  # must not run: its replacement failed
    io.wait()
    with pytest.raises(CheckpointWriteError, match="bad"):
        io.save_checkpoint({"w": torch.ones(1)}, "next")
    io.teardown()  # already raised once: not again
    assert ("remove", "previous") not in base.calls


def test_async_io_error_is_raised_at_teardown_if_no_save_followed():
    io = AsyncCheckpointIO(Recording(fail_on="bad"))
    io.save_checkpoint({"w": torch.ones(1)}, "bad")
    with pytest.raises(CheckpointWriteError, match="bad"):
        io.teardown()


def test_async_io_at_most_one_save_in_flight():
    base = Recording()
    base.gate.clear()
    io = AsyncCheckpointIO(base)
    io.save_checkpoint({"w": torch.ones(1)}, "a")
    done = threading.Event()

    def second():
        io.save_checkpoint({"w": torch.ones(1)}, "b")
        done.set()

    t = threading.Thread(target=second)
    t.start()
    assert not done.wait(0.2)  # the second save waits for the first
    base.gate.set()
    t.join(5)
    assert done.is_set()
    io.teardown()


def test_async_io_load_waits_for_pending_writes(tmp_path):
    io = AsyncCheckpointIO(TorchCheckpointIO())
    path = str(tmp_path / "x.ckpt")
    io.save_checkpoint({"state_dict": {"w": torch.full((3,), 7.0)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.full((3,), 7.0))
    io.teardown()


def test_async_io_rejects_a_non_checkpoint_io_base():
    with pytest.raises(TypeError, match="CheckpointIO instance"):
        AsyncCheckpointIO(checkpoint_io=object())  # type: ignore[arg-type]


class Linking(Recording):
    supports_link = True

    def link_checkpoint(self, src, dst):
        self.calls.append(("link", dst))
        self.saved[dst] = self.saved[src]


def test_async_io_link_runs_after_the_save_it_names():
    base = Linking(delay=0.05)
    io = AsyncCheckpointIO(base)
    io.save_checkpoint({"w": torch.ones(1)}, "epoch=0.ckpt")
    io.link_checkpoint("epoch=0.ckpt", "last.ckpt")
    io.teardown()
    assert base.calls == [("save", "epoch=0.ckpt"), ("link", "last.ckpt")]


def test_async_io_link_to_a_failed_save_is_skipped_and_reported():
    base = Linking(fail_on="epoch=0.ckpt")
    io = AsyncCheckpointIO(base)
    io.save_checkpoint({"w": torch.ones(1)}, "epoch=0.ckpt")
    io.link_checkpoint("epoch=0.ckpt", "last.ckpt")
    io.wait()
    assert ("link", "last.ckpt") not in base.calls
    assert io.failed_paths == ("epoch=0.ckpt", "last.ckpt")
    with pytest.raises(CheckpointWriteError, match=r"epoch=0\.ckpt"):
        io.teardown()


def test_async_io_warns_once_when_saves_outrun_the_disk():
    base = Recording(delay=0.2)
    io = AsyncCheckpointIO(base)
    with pytest.warns(UserWarning, match="still being written") as record:
        for name in ("a", "b", "c"):
            io.save_checkpoint({"w": torch.ones(1024)}, name)
    io.teardown()
    assert len([w for w in record if "still being written" in str(w.message)]) == 1
    assert "MB/s" in str(record[0].message)
