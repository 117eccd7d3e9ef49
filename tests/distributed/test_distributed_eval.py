"""trainer.test / trainer.predict under 2-process DDP (gloo, CPU): every sample exactly once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("eval_job.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_eval(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_eval")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_port()}", str(JOB), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_ddp_test_counts_every_sample_once_and_means_exactly(ddp_eval):
    for rank in (0, 1):
        (result,) = torch.load(ddp_eval / f"result.rank{rank}", weights_only=False)["test"]
        assert result["seen"] == 21.0  # a padded DistributedSampler would give 22
        assert result["mean_x"] == pytest.approx(10.0)  # the mean over all 21 samples, weighted by batch size


def test_ddp_predict_writes_each_sample_once_per_rank(ddp_eval):
    indices, values = [], []
    for rank in (0, 1):
        written = torch.load(ddp_eval / f"predictions.rank{rank}", weights_only=False)
        for batch_indices, prediction in zip(written["indices"][0], written["predictions"]):
            indices.extend(batch_indices)
            values.extend(prediction.squeeze(1).tolist())
    assert sorted(indices) == list(range(21))
    assert all(v == 2.0 * i for i, v in zip(indices, values))


def test_ddp_predict_returns_this_ranks_predictions(ddp_eval):
    sizes = [
        sum(p.shape[0] for p in torch.load(ddp_eval / f"result.rank{r}", weights_only=False)["returned"])
        for r in (0, 1)
    ]
    assert sizes == [11, 10]


def test_ddp_without_distributed_sampler_gives_each_rank_all_the_data(ddp_eval):
    for rank in (0, 1):
        unsampled = torch.load(ddp_eval / f"result.rank{rank}", weights_only=False)["unsampled"]
        assert torch.equal(torch.cat(unsampled).squeeze(1), 2.0 * torch.arange(21, dtype=torch.float32))
