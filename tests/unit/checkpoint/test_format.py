import pytest
import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import FormatVersionError, NotACheckpointError


def _legacy():
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {"w": torch.ones(2)},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "lr_schedulers": [],
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {},
        "hyper_parameters": {"lr": 0.1},
    }


def test_format_upgrade_from_the_layout_users_know():
    up = fmt.upgrade_checkpoint(_legacy())
    assert up["format_version"] == fmt.FORMAT_VERSION
    assert "pytorch-lightning_version" not in up
    loop = up["loops"]["fit_loop"]
    assert loop == {"exact": False, "epoch": 3, "global_step": 120, "phase": "epoch_done"}


def test_format_newer_version_is_refused_with_upgrade_advice():
    with pytest.raises(FormatVersionError, match="Upgrade savepoint"):
        fmt.upgrade_checkpoint({"state_dict": {}, "format_version": fmt.FORMAT_VERSION + 1}, "x.ckpt")


def test_format_check_is_checkpoint_explains_a_bare_state_dict():
    with pytest.raises(NotACheckpointError, match=r"bare state dict|no 'state_dict' key"):
        fmt.check_is_checkpoint({"weight": torch.ones(1)}, "w.pt")
    with pytest.raises(NotACheckpointError, match="holds a list"):
        fmt.check_is_checkpoint([1, 2], "l.pt")


def test_format_weights_only_detection():
    assert fmt.is_weights_only({"state_dict": {}})
    assert not fmt.is_weights_only({"state_dict": {}, "optimizer_states": []})
