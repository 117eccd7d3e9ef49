"""Every checkpoint file operation goes through the CheckpointIO; "last" and "best" on other storage."""

from __future__ import annotations

import builtins
import glob
import os
import threading
import uuid
from pathlib import Path

import fsspec
import pytest

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.plugins.io import TorchCheckpointIO

_DEPTH = [0]
_SURFACE = (
    "save_checkpoint",
    "load_checkpoint",
    "remove_checkpoint",
    "link_checkpoint",
    "exists",
    "list_checkpoints",
    "list_folders",
    "makedirs",
    "check_writable",
    "save_text",
    "load_text",
    "is_sharded_checkpoint",
    "teardown",
)


class RecordingIO(TorchCheckpointIO):
    """A TorchCheckpointIO that records every call and marks the time spent inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []


def _recorded(name: str):
    base = getattr(TorchCheckpointIO, name)

    def method(self, *args, **kwargs):
        where = args[1] if name == "save_checkpoint" else (args[0] if args else "")
        self.calls.append((name, os.path.basename(str(where))))
        _DEPTH[0] += 1
        try:
            return base(self, *args, **kwargs)
        finally:
            _DEPTH[0] -= 1

    return method


for _name in _SURFACE:
    setattr(RecordingIO, _name, _recorded(_name))


def _guard_file_operations(monkeypatch, guarded: list[Path], violations: list[tuple[str, str]]) -> None:
    """Record any file operation on a guarded path made outside the IO (the IO's own threads are inside)."""

    def is_guarded(arg) -> bool:
        if not isinstance(arg, str | os.PathLike):
            return False
        path = os.path.abspath(os.fspath(arg))
        return any(path == str(g) or path.startswith(str(g) + os.sep) for g in guarded)

    def wrap(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            outside = _DEPTH[0] == 0 and threading.current_thread() is threading.main_thread()
            if outside and args and is_guarded(args[0]):
                violations.append((name, os.fspath(args[0])))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    for name in ("open", "stat", "lstat", "scandir", "listdir", "makedirs", "mkdir", "unlink", "remove"):
        wrap(os, name)
    for name in ("replace", "rename", "symlink", "link", "access"):
        wrap(os, name)
    for name in ("exists", "lexists", "isdir", "isfile", "islink", "getmtime", "getsize"):
        wrap(os.path, name)
    wrap(builtins, "open")
    wrap(glob, "glob")


def test_checkpointing_run_resumes_and_loads_with_every_file_operation_through_the_checkpoint_io(tmp_path):
    train, val = loaders()
    ck = tmp_path / "ck"
    violations: list[tuple[str, str]] = []
    io = RecordingIO()

    # Built before the guard: like Lightning's, the constructor resolves `dirpath` with os.path.realpath.
    callbacks = [
        sp.ModelCheckpoint(dirpath=ck, monitor="val_loss", save_top_k=2, save_last=True) for _ in range(3)
    ]

    def trainer(max_epochs):
        return quiet_trainer(max_epochs=max_epochs, callbacks=[callbacks.pop()], plugins=[io], logger=False)

    with pytest.MonkeyPatch.context() as mp:
        _guard_file_operations(mp, [ck, tmp_path / "checkpoints", tmp_path / "runs"], violations)
        first = trainer(4)
        first.fit(TinyModel(), train, val)
        from_last = trainer(5)
        from_last.fit(TinyModel(), train, val, ckpt_path="last")
        from_best = trainer(6)
        from_best.fit(TinyModel(), train, val, ckpt_path="best")
        model = TinyModel.load_from_checkpoint(
            from_best.checkpoint_callback.best_model_path, checkpoint_io=io
        )
    assert violations == [], violations
    assert from_last.global_step == 40 and from_best.global_step > 0
    names = {name for name, _ in io.calls}
    expected = {"check_writable", "exists", "save_checkpoint", "remove_checkpoint", "list_folders"}
    assert expected | {"list_checkpoints", "load_checkpoint"} <= names
    assert ("load_checkpoint", "last.ckpt") in io.calls
    assert len(list(ck.glob("epoch=*.ckpt"))) == 2  # top-k removals happened (through the IO)
    assert isinstance(model, TinyModel)


@pytest.fixture
def memory_dir():
    folder = f"memory://ck-{uuid.uuid4().hex}"
    yield folder
    fs = fsspec.filesystem("memory")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)


def test_memory_fs_resumes_from_last_in_process(memory_dir):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath=memory_dir, save_top_k=2, monitor="val_loss", save_last=True)
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), train, val)
    again = sp.ModelCheckpoint(dirpath=memory_dir, save_top_k=2, monitor="val_loss", save_last=True)
    trainer = quiet_trainer(max_epochs=3, callbacks=[again])
    trainer.fit(TinyModel(), train, val, ckpt_path="last")
    assert trainer.ckpt_path == f"{memory_dir}/last.ckpt"
    assert trainer.global_step == 24


def test_memory_fs_resolves_best_from_the_last_checkpoint(memory_dir):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath=memory_dir, save_top_k=1, monitor="val_loss", save_last=True)
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), train, val)
    trainer = quiet_trainer(
        max_epochs=3, callbacks=[sp.ModelCheckpoint(dirpath=memory_dir, monitor="val_loss")]
    )
    trainer.fit(TinyModel(), train, val, ckpt_path="best")
    assert trainer.ckpt_path == cb.best_model_path


def test_load_from_checkpoint_reads_checkpoint_and_hparams_file_through_its_checkpoint_io(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, callbacks=[sp.ModelCheckpoint(dirpath="ck")])
    trainer.fit(TinyModel(hidden=4), train, val)
    (tmp_path / "hparams.yaml").write_text("hidden: 4\nlr: 0.5\n")
    io = RecordingIO()
    model = TinyModel.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, hparams_file="hparams.yaml", checkpoint_io=io
    )
    assert model.hparams.lr == 0.5
    assert [name for name, _ in io.calls if name in ("load_checkpoint", "load_text")] == [
        "load_checkpoint",
        "load_text",
    ]


def test_load_from_checkpoint_refuses_a_checkpoint_io_that_is_not_one(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint_io=.*must be a CheckpointIO"):
        TinyModel.load_from_checkpoint("x.ckpt", checkpoint_io=object())


def test_resume_from_last_reads_the_chosen_checkpoint_once(tmp_path):
    train, val = loaders()
    quiet_trainer(max_epochs=1, callbacks=[sp.ModelCheckpoint(dirpath="ck", save_last=True)]).fit(
        TinyModel(), train, val
    )
    io = RecordingIO()
    trainer = quiet_trainer(
        max_epochs=2, callbacks=[sp.ModelCheckpoint(dirpath="ck", save_last=True)], plugins=[io]
    )
    trainer.fit(TinyModel(), train, val, ckpt_path="last")
    assert trainer.global_step == 16
    assert io.calls.count(("load_checkpoint", "last.ckpt")) == 1
