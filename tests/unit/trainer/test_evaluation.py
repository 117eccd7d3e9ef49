from __future__ import annotations

import torch

from savepoint.trainer.evaluation import batch_limit, split_by_dataloader


def test_split_by_dataloader_routes_suffixed_keys_and_shares_the_rest():
    one, two, shared = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    out = split_by_dataloader({"a/dataloader_idx_0": one, "a/dataloader_idx_1": two, "s": shared}, 2)
    assert out == [{"a/dataloader_idx_0": one, "s": shared}, {"a/dataloader_idx_1": two, "s": shared}]


def test_batch_limit_takes_counts_and_fractions():
    loader = list(range(10))
    assert batch_limit(loader, 1.0) == 10 and batch_limit(loader, 0.25) == 2
    assert batch_limit(loader, 3) == 3 and batch_limit(loader, 30) == 10
