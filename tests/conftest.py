"""Shared fixtures. Every checkpoint any test writes under its tmp_path is loaded with
``torch.load(weights_only=True)`` after the test, and its records are checked to start at the alignment
the archive states: format invariants, checked on every file."""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def _checkpoint_files(root: Path) -> list[Path]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".ckpt") and not name.startswith("."):
                path = Path(dirpath) / name
                if path.is_symlink() and not path.exists():
                    continue
                found.append(path)
    return found


@pytest.fixture(autouse=True)
def every_checkpoint_loads_weights_only(request, tmp_path):
    yield
    if request.node.get_closest_marker("writes_unsafe_files"):
        return
    for path in _checkpoint_files(tmp_path):
        if "corrupt" in path.name or "torn" in path.name:
            continue
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # pragma: no cover - the assertion is the point
            pytest.fail(f"{path} written during the test does not load with weights_only=True: {err}")
        assert isinstance(obj, dict), f"{path} is not a checkpoint dict"
        misaligned = _misaligned_records(path)
        assert not misaligned, (
            f"{path}: records not at the alignment its .storage_alignment states: {misaligned}"
        )


def _misaligned_records(path: Path) -> list[str]:
    """Records whose data does not start at a multiple of the archive's ``.storage_alignment`` (what torch's
    ``load.calculate_storage_offsets`` trusts)."""
    offsets = {}
    with open(path, "rb") as f:
        for info in zipfile.ZipFile(f).infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            offsets[info.filename.split("/", 1)[-1]] = (info.header_offset + 30 + name_len + extra_len, info)
        if ".storage_alignment" not in offsets:
            return []
        start, info = offsets[".storage_alignment"]
        f.seek(start)
        alignment = int(f.read(info.file_size))
    return [name for name, (start, _) in offsets.items() if start % alignment]


@pytest.fixture(autouse=True)
def _isolate_cwd(tmp_path, monkeypatch):
    """Trainers default to the working directory: keep each test's files in its own tmp folder."""
    monkeypatch.chdir(tmp_path)
    warnings.simplefilter("default")
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "writes_unsafe_files: the test writes files that must not load")
