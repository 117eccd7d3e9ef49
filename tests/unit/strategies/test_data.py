from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from savepoint.strategies.data import UnrepeatedDistributedSampler, add_distributed_sampler


@pytest.mark.parametrize("n, world", [(21, 2), (5, 4), (8, 3)])
def test_unrepeated_sampler_gives_every_index_to_exactly_one_rank(n, world):
    data = list(range(n))
    seen = [list(UnrepeatedDistributedSampler(data, world, r)) for r in range(world)]
    assert sorted(i for part in seen for i in part) == data
    assert [len(UnrepeatedDistributedSampler(data, world, r)) for r in range(world)] == [len(p) for p in seen]


def test_add_distributed_sampler_unrepeated_for_evaluation_keeps_the_batch_size():
    loader = DataLoader(TensorDataset(torch.arange(21)), batch_size=4)
    rank1 = add_distributed_sampler(loader, 2, 1, unrepeated=True)
    assert isinstance(rank1.sampler, UnrepeatedDistributedSampler) and rank1.batch_size == 4
    assert torch.cat([b[0] for b in rank1]).tolist() == list(range(1, 21, 2))
