"""What `self.log` keeps of a tensor (`MetricStore._as_tensor`)."""

import pytest
import torch

from savepoint.trainer.metrics import MetricStore


@pytest.mark.parametrize("enable_graph", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_logged_scalar_is_its_own_four_bytes(enable_graph, dtype):
    weight = torch.ones(1 << 16, dtype=dtype, requires_grad=True)
    loss = (weight * 2)[5]  # one element of a 256-512 KB storage, part of a graph
    kept = MetricStore._as_tensor("loss", loss, enable_graph=enable_graph)
    assert kept.dtype == torch.float32 and kept.shape == ()
    assert kept.untyped_storage().nbytes() == 4  # not the whole storage the loss lives in
    assert kept.requires_grad is enable_graph
    assert float(kept) == 2.0
    if enable_graph:
        kept.backward()
        assert weight.grad[5] == 2.0 and weight.grad.sum() == 2.0
