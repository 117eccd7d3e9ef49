"""Parity tests run each scenario on real Lightning and on savepoint, in this process (Lightning's import
is slow: one import per test session)."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_lightning_warnings():
    # Lightning's own deprecation noise and advice about workers are not what these tests observe.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
    yield
