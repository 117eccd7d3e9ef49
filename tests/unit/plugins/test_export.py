"""Safetensors export folders: written from a checkpoint dict, read back as a weights-only checkpoint."""

from __future__ import annotations

import pytest
import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CorruptCheckpointError
from savepoint.hparams import encode_hparams
from savepoint.plugins.io.export import is_export_dir, read_export, write_export

safetensors_torch = pytest.importorskip("safetensors.torch")


def _checkpoint() -> dict:
    weight = torch.randn(3, 4)
    return {
        fmt.EPOCH: 2,
        fmt.GLOBAL_STEP: 10,
        fmt.STATE_DICT: {"a.weight": weight, "tied.weight": weight, "count": torch.tensor(3)},
        fmt.HYPER_PARAMETERS: encode_hparams({"lr": 0.1, "dims": (3, 4)}, "M"),
        fmt.OPTIMIZER_STATES: [{"state": {}, "param_groups": []}],
    }


def test_export_roundtrip_keeps_weights_and_decoded_hparams(tmp_path):
    ckpt = _checkpoint()
    write_export(ckpt, str(tmp_path / "out"))
    assert is_export_dir(str(tmp_path / "out"))
    weights = safetensors_torch.load_file(str(tmp_path / "out/model.safetensors"))
    assert torch.equal(weights["tied.weight"], ckpt[fmt.STATE_DICT]["a.weight"])  # tied weights: two copies
    back = read_export(str(tmp_path / "out"))
    assert back[fmt.WEIGHTS_ONLY] and fmt.OPTIMIZER_STATES not in back
    assert back[fmt.GLOBAL_STEP] == 10 and back[fmt.HYPER_PARAMETERS] == ckpt[fmt.HYPER_PARAMETERS]
    assert "dims:\n- 3\n- 4" in (tmp_path / "out/hparams.yaml").read_text()


def test_export_casts_floating_weights_only(tmp_path):
    write_export(_checkpoint(), str(tmp_path / "half"), dtype=torch.bfloat16)
    weights = read_export(str(tmp_path / "half"))[fmt.STATE_DICT]
    assert weights["a.weight"].dtype == torch.bfloat16 and weights["count"].dtype == torch.int64


def test_export_works_on_fsspec_urls():
    write_export(_checkpoint(), "memory://exports/m1")
    assert torch.equal(read_export("memory://exports/m1")[fmt.STATE_DICT]["count"], torch.tensor(3))


def test_export_torn_weights_file_is_a_typed_error(tmp_path):
    write_export(_checkpoint(), str(tmp_path / "out"))
    (tmp_path / "out/model.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors"):
        read_export(str(tmp_path / "out"))
