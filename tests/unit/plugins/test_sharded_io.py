"""The sharded IO in one process (DCP needs no process group here): per-record CRCs, verification, refusal."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from savepoint.checkpoint.errors import CorruptCheckpointError
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import TorchCheckpointIO
from savepoint.plugins.io.verify_sharded import expand_folders, verify_sharded


def _save_sharded(path) -> None:
    io = TorchCheckpointIO()
    meta = {"state_dict": {}, "epoch": 0, "global_step": 3, "format_version": 1, "optimizer_states": []}
    state = {"state_dict": {"w": torch.arange(4096.0), "b": torch.ones(16)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP: "assuming the intent is to save in a single process"
        io.save_sharded_meta(meta, str(path))
        io.save_sharded(state, str(path))


def _flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_sharded_save_records_a_crc_per_record_and_verifies(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    recorded = json.loads((tmp_path / "s.ckpt" / "crc32.json").read_text())["files"]
    assert sum(len(f["records"]) for f in recorded.values()) == 2
    report = verify_sharded(tmp_path / "s.ckpt")
    assert report.problems == [] and report.crc_checked and report.records == 2


def test_sharded_verify_reports_a_flipped_byte_in_a_shard(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    shard = tmp_path / "s.ckpt" / "__0_0.distcp"
    _flip_byte(shard, shard.stat().st_size // 2)
    problems = verify_sharded(tmp_path / "s.ckpt").problems
    assert len(problems) == 1 and "__0_0.distcp" in problems[0] and "CRC32" in problems[0]
    report = verify_checkpoint(tmp_path / "s.ckpt")
    assert not report.ok and report.kind == "sharded"


def test_sharded_load_refuses_a_flipped_byte(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    shard = tmp_path / "s.ckpt" / "__0_0.distcp"
    _flip_byte(shard, shard.stat().st_size - 8)
    with pytest.raises(CorruptCheckpointError, match=r"damaged sharded checkpoint.*CRC32"):
        TorchCheckpointIO().load_checkpoint(str(tmp_path / "s.ckpt"))


def test_sharded_verify_reports_a_truncated_and_a_missing_shard(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    shard = tmp_path / "s.ckpt" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    assert any("has 100 bytes, expected" in p for p in verify_sharded(tmp_path / "s.ckpt").problems)
    shard.unlink()
    assert any(
        "'__0_0.distcp' named in .metadata is missing" in p
        for p in verify_sharded(tmp_path / "s.ckpt").problems
    )


def test_sharded_load_returns_the_saved_tensors(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    full = TorchCheckpointIO().load_checkpoint(str(tmp_path / "s.ckpt"))
    assert torch.equal(full["state_dict"]["w"], torch.arange(4096.0)) and full["global_step"] == 3


def test_verify_walks_a_folder_of_ordinary_checkpoints_file_by_file(tmp_path):
    io = TorchCheckpointIO()
    for name in ("a.ckpt", "b.ckpt"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, str(tmp_path / "ck" / name))
    assert expand_folders([str(tmp_path / "ck")]) == [
        str(tmp_path / "ck" / "a.ckpt"),
        str(tmp_path / "ck" / "b.ckpt"),
    ]
    with pytest.raises(CorruptCheckpointError, match=r"folder of 2 checkpoint\(s\), not a checkpoint"):
        io.load_checkpoint(str(tmp_path / "ck"))


def test_cli_verify_of_a_folder_of_checkpoints_checks_each_file(tmp_path, capsys):
    from savepoint.cli import main

    io = TorchCheckpointIO()
    for name in ("a.ckpt", "b.ckpt"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, str(tmp_path / "ck" / name))
    assert main(["verify", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert "a.ckpt" in out and "b.ckpt" in out and "interrupted sharded save" not in out


def test_cli_inspect_of_a_folder_of_checkpoints_describes_each_file(tmp_path, capsys):
    import json

    from savepoint.cli import main

    io = TorchCheckpointIO()
    for name in ("a.ckpt", "b.ckpt"):
        io.save_checkpoint(
            {"state_dict": {"w": torch.ones(2)}, "format_version": 1}, str(tmp_path / "ck" / name)
        )
    assert main(["inspect", "--json", str(tmp_path / "ck")]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["path"] for s in summaries] == [
        str(tmp_path / "ck" / "a.ckpt"),
        str(tmp_path / "ck" / "b.ckpt"),
    ]


def test_sharded_meta_is_refused_when_a_shard_is_missing(tmp_path):
    _save_sharded(tmp_path / "s.ckpt")
    (tmp_path / "s.ckpt" / "__0_0.distcp").unlink()
    with pytest.raises(CorruptCheckpointError, match=r"damaged sharded checkpoint.*__0_0\.distcp.*missing"):
        TorchCheckpointIO().load_sharded_meta(str(tmp_path / "s.ckpt"))
