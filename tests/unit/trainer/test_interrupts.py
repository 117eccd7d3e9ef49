"""Which exceptions are a peer's failure seen through a broken collective (reported as RankFailedError)."""

from __future__ import annotations

import torch.distributed as dist

from savepoint.trainer.interrupts import _is_broken_collective


def test_a_gloo_connection_closed_error_is_a_broken_collective():
    err = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1234.")
    assert _is_broken_collective(err)
    assert _is_broken_collective(dist.DistBackendError("NCCL communicator was aborted"))


def test_the_rank_own_error_is_not_a_broken_collective():
    assert not _is_broken_collective(ValueError("injected failure"))
    assert not _is_broken_collective(RuntimeError("CUDA out of memory"))
