from __future__ import annotations

import pytest

from savepoint.utilities import AttributeDict, rank_zero_only, rank_zero_warn


def test_rank_zero_only_runs_on_rank_zero_only(monkeypatch):
    calls = []

    @rank_zero_only
    def record(x):
        calls.append(x)
        return x

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert record(1) is None
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert record(2) == 2
    assert calls == [2]


def test_rank_zero_warn_warns_on_rank_zero(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    with pytest.warns(UserWarning, match="careful"):
        rank_zero_warn("careful")


def test_attribute_dict_reads_keys_as_attributes():
    d = AttributeDict(lr=0.1)
    d.batch_size = 8
    assert d.lr == 0.1 and d["batch_size"] == 8
