from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import savepoint as sp
from savepoint.utilities import seed_everything


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_seeds_python_numpy_and_torch():
    sp.seed_everything(123, verbose=False)
    first = _draws()
    seed_everything(123, verbose=False)
    assert _draws() == first


def test_seed_everything_matches_lightning():
    from lightning.pytorch import seed_everything as lightning_seed

    lightning_seed(7, verbose=False)
    theirs = _draws()
    seed_everything(7, verbose=False)
    assert _draws() == theirs


def test_seed_everything_sets_the_environment_for_workers(monkeypatch):
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    assert seed_everything(5, workers=True, verbose=False) == 5
    assert os.environ["PL_GLOBAL_SEED"] == "5" and os.environ["PL_SEED_WORKERS"] == "1"
    seed_everything(5, verbose=False)
    assert os.environ["PL_SEED_WORKERS"] == "0"


def test_seed_everything_rejects_an_out_of_bounds_seed():
    with pytest.raises(ValueError, match="out of bounds"):
        seed_everything(-1)
