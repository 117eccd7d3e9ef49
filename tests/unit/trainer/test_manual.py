from __future__ import annotations

import torch

from savepoint.trainer.manual import clip_grads, takes_batch_idx


def test_takes_batch_idx_reads_the_step_signature():
    class M:
        def with_idx(self, batch, batch_idx): ...
        def without(self, batch): ...
        def star(self, *args): ...

    m = M()
    assert takes_batch_idx(m.with_idx) and takes_batch_idx(m.star)
    assert not takes_batch_idx(m.without)


def test_clip_grads_by_value_bounds_every_gradient():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([-3.0, -0.1, 0.2, 5.0])
    clip_grads(torch.optim.SGD([p], lr=0.1), 0.5, "value")
    assert torch.equal(p.grad, torch.tensor([-0.5, -0.1, 0.2, 0.5]))
