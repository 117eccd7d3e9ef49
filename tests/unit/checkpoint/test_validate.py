"""One validation of a loaded checkpoint, shared by loading and verify: typed errors naming the file."""

import pytest
import torch

from savepoint._loading import read_checkpoint
from savepoint.checkpoint.errors import FormatVersionError, NotACheckpointError
from savepoint.checkpoint.validate import validated
from savepoint.checkpoint.verify import verify_checkpoint

_W = {"w": torch.ones(2)}

BAD = {
    "format-minus-one": ({"state_dict": _W, "format_version": -1}, FormatVersionError, "format_version -1"),
    "format-abc": ({"state_dict": _W, "format_version": "abc"}, FormatVersionError, "format_version 'abc'"),
    "format-bool": ({"state_dict": _W, "format_version": True}, FormatVersionError, "format_version True"),
    "format-99": ({"state_dict": _W, "format_version": 99}, FormatVersionError, "format_version 99"),
    "state-dict-list": (
        {"state_dict": [1, 2], "format_version": 1},
        NotACheckpointError,
        r"\['state_dict'\] holds a list",
    ),
    "epoch-str": ({"state_dict": _W, "epoch": "3"}, NotACheckpointError, r"\['epoch'\] holds a str"),
    "loops-list": ({"state_dict": _W, "loops": [1]}, NotACheckpointError, r"\['loops'\] holds a list"),
    "fit-loop-list": (
        {"state_dict": _W, "format_version": 1, "loops": {"fit_loop": [1]}},
        NotACheckpointError,
        r"\['loops'\]\['fit_loop'\] holds a list",
    ),
    "fit-loop-epoch-str": (
        {"state_dict": _W, "format_version": 1, "loops": {"fit_loop": {"epoch": "1"}}},
        NotACheckpointError,
        r"\['fit_loop'\]\['epoch'\] holds a str \('1'\), expected int",
    ),
    "fit-loop-phase": (
        {"state_dict": _W, "format_version": 1, "loops": {"fit_loop": {"phase": "nowhere"}}},
        NotACheckpointError,
        r"\['phase'\] is 'nowhere', expected one of",
    ),
    "optimizer-states-not-dicts": (
        {"state_dict": _W, "optimizer_states": [3]},
        NotACheckpointError,
        r"\['optimizer_states'\]\[0\] holds a int",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_validate_bad_layout_raises_a_typed_error_naming_path_expected_and_found(name):
    checkpoint, error, message = BAD[name]
    with pytest.raises(error, match=message) as info:
        validated(checkpoint, f"{name}.ckpt")
    assert f"'{name}.ckpt'" in str(info.value) and info.value.path == f"{name}.ckpt"


@pytest.mark.parametrize("name", sorted(BAD))
def test_verify_fails_every_file_loading_refuses_with_the_same_reason(tmp_path, name):
    path = tmp_path / f"corrupt-{name}.ckpt"
    torch.save(BAD[name][0], path)
    with pytest.raises(BAD[name][1]) as info:
        read_checkpoint(path)
    report = verify_checkpoint(path)
    assert not report.ok
    assert report.problems == [str(info.value)]


def test_validate_accepts_the_older_layout_and_upgrades_it():
    legacy = {
        "state_dict": _W,
        "epoch": 2,
        "global_step": 10,
        "optimizer_states": [],
        "loops": {"fit_loop": {}},
    }
    assert validated(legacy, "old.ckpt")["format_version"] == 1
