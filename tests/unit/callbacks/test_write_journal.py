import torch

from savepoint.callbacks._write_journal import WriteJournal
from savepoint.plugins.io import AsyncCheckpointIO, CheckpointIO


class FailingIO(CheckpointIO):
    supports_link = True

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if path == self.fail_on:
            raise OSError("injected")

    def load_checkpoint(self, path, map_location=None, **kwargs):
        return {}

    def remove_checkpoint(self, path):
        pass

    def link_checkpoint(self, src, dst):
        pass


def test_write_journal_restores_the_state_before_the_first_failed_write():
    io = AsyncCheckpointIO(FailingIO(fail_on="b.ckpt"))
    journal = WriteJournal()
    for name, last in (("a.ckpt", ""), ("b.ckpt", "last.ckpt")):
        journal.remember(io, name, {"best": name + "-before"})
        io.save_checkpoint({"w": torch.ones(1)}, name)
        journal.remember(io, "last.ckpt", {"last": last})
        io.link_checkpoint(name, "last.ckpt")
    # last.ckpt was linked once (after a.ckpt) and skipped once (after b.ckpt): only the second is undone
    assert journal.state_before_failure(io) == {"best": "b.ckpt-before"}


def test_write_journal_has_nothing_to_undo_for_a_synchronous_io():
    journal = WriteJournal()
    io = FailingIO(fail_on="a.ckpt")
    journal.remember(io, "a.ckpt", {"best": ""})
    assert journal.state_before_failure(io) is None
