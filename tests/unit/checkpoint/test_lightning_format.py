"""Lightning's layout: safe reading of its plain containers, and the loop tree written for it."""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import types

import pytest
import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CheckpointError
from savepoint.checkpoint.lightning_format import foreign_containers_allowed, lightning_loops, to_lightning


def _pickled(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_foreign_containers_allowed_builds_namespace_and_attribute_dicts(monkeypatch):
    # Lightning's AttributeDict, named by the module path Lightning 1.x used: no Lightning import needed.
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    attribute_dict = type("AttributeDict", (dict,), {"__module__": "pytorch_lightning.utilities.parsing"})
    sys.modules["pytorch_lightning.utilities.parsing"].AttributeDict = attribute_dict  # type: ignore[attr-defined]
    data = _pickled({"args": argparse.Namespace(lr=0.1, dims=[1, 2]), "h": attribute_dict(a=1)})
    with foreign_containers_allowed():
        loaded = torch.load(data, weights_only=True)
    assert loaded["args"] == argparse.Namespace(lr=0.1, dims=[1, 2])
    assert loaded["h"] == {"a": 1} and type(loaded["h"]) is dict


class NotAllowed:
    pass


def test_foreign_containers_allowed_refuses_any_other_class():
    data = _pickled({"x": NotAllowed()})
    with foreign_containers_allowed(), pytest.raises(pickle.UnpicklingError, match="NotAllowed"):
        torch.load(data, weights_only=True)
    with pytest.raises(pickle.UnpicklingError):  # and the allowance ends with the block
        torch.load(_pickled({"args": argparse.Namespace(a=1)}), weights_only=True)


def _fit(**kw):
    base = {"epoch": 1, "batches_done": 3, "phase": "after_batch", "global_step": 11, "total_batches": 11}
    return {**base, "exact": True, "data": {"num_batches": 8}, **kw}


def _epochs(loops):
    return loops["fit_loop"]["epoch_progress"]["current"]


def test_lightning_loops_mid_epoch_matches_a_save_in_on_train_batch_end():
    fit_loop = lightning_loops(_fit())["fit_loop"]
    assert _epochs({"fit_loop": fit_loop}) == {"ready": 2, "started": 2, "processed": 1, "completed": 1}
    batch = fit_loop["epoch_loop.batch_progress"]
    assert batch["current"] == {"ready": 3, "started": 3, "processed": 3, "completed": 2}
    assert not batch["is_last_batch"]
    assert (
        fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]["total"][
            "completed"
        ]
        == 11
    )


def test_lightning_loops_between_epochs_is_a_finished_epoch():
    loops = lightning_loops(
        _fit(phase="epoch_start", epoch=2, batches_done=0, global_step=16, total_batches=16)
    )
    assert _epochs(loops) == {"ready": 2, "started": 2, "processed": 2, "completed": 2}


def test_lightning_loops_at_epoch_end_is_processed_not_completed():
    loops = lightning_loops(_fit(phase="batches", batches_done=8, global_step=16, total_batches=16))
    assert _epochs(loops) == {"ready": 2, "started": 2, "processed": 2, "completed": 1}
    assert loops["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"]


def _end_of_epoch_checkpoint(config: dict) -> dict:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    return {
        fmt.EPOCH: 0,
        fmt.GLOBAL_STEP: 8,
        fmt.STATE_DICT: {},
        fmt.OPTIMIZER_STATES: [opt.state_dict()],
        fmt.LR_SCHEDULERS: [sched.state_dict()],
        fmt.LOOPS: {
            fmt.FIT_LOOP: _fit(epoch=0, phase="epoch_end", batches_done=8, lr_scheduler_configs=[config])
        },
    }


def test_to_lightning_applies_the_epoch_scheduler_step_lightning_already_took():
    config = {
        "class": "torch.optim.lr_scheduler.StepLR",
        "interval": "epoch",
        "frequency": 1,
        "monitor": None,
    }
    out = to_lightning(_end_of_epoch_checkpoint(config), "x.ckpt")
    assert out["pytorch-lightning_version"] and out[fmt.OPTIMIZER_STATES][0]["param_groups"][0]["lr"] == 0.05
    assert out[fmt.LR_SCHEDULERS][0]["last_epoch"] == 1


def test_to_lightning_refuses_a_pending_step_of_a_scheduler_it_cannot_build():
    config = {"class": "mypkg.MyScheduler", "interval": "epoch", "frequency": 1, "monitor": None}
    with pytest.raises(CheckpointError, match=r"mypkg\.MyScheduler"):
        to_lightning(_end_of_epoch_checkpoint(config), "x.ckpt")


def test_lightning_loops_for_an_upgraded_position_start_the_next_epoch():
    loops = lightning_loops({"epoch": 1, "global_step": 16, "phase": "epoch_done", "exact": False})
    assert _epochs(loops) == {"ready": 2, "started": 2, "processed": 2, "completed": 2}


def test_foreign_containers_allowed_nests():
    data = _pickled({"args": argparse.Namespace(a=1)})
    with foreign_containers_allowed():
        with foreign_containers_allowed():
            pass
        assert torch.load(data, weights_only=True)["args"].a == 1
