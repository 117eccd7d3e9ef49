"""2-process gloo jobs on CPU: elastic restarts after signals and kills, and failures that end every rank.

Every subprocess has a bounded timeout: a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import torch

JOB = Path(__file__).with_name("preempt_job.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMEOUT = 240


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, *args: str, restarts: int = 0) -> subprocess.CompletedProcess[str]:
    cmd = [*TORCHRUN, "--nproc_per_node=2", f"--max-restarts={restarts}", "--monitor-interval=0.2",
           "--master_addr=127.0.0.1", f"--master_port={_port()}", str(JOB), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_env())


def _result(tmp_path: Path, out: str, rank: int) -> dict:
    return torch.load(tmp_path / f"{out}.rank{rank}", weights_only=False)


def test_elastic_restarts_after_signals_and_kills_end_bit_equal_to_an_uninterrupted_run(tmp_path):
    ref = _torchrun(tmp_path, "ref", "ref")
    assert ref.returncode == 0, ref.stderr[-4000:]
    rng = random.Random()
    # attempt 0: SIGTERM reaches rank 1 only (every rank must stop at the same step and save);
    # attempt 1: rank 0 is killed outright at a random batch (resume from the last periodic save);
    # attempt 2: SIGTERM on rank 0; attempt 3 runs to the end.
    chaos = f"0:SIGTERM:1:{rng.randint(1, 8)},1:SIGKILL:0:{rng.randint(1, 8)},2:SIGTERM:0:{rng.randint(0, 5)}"
    run = _torchrun(tmp_path, "run", "run", "--chaos", chaos, restarts=3)
    assert run.returncode == 0, f"chaos={chaos}\n" + run.stderr[-6000:]
    assert "SIGTERM received" in run.stdout, run.stdout[-3000:]
    for rank in range(2):
        expected, got = _result(tmp_path, "ref", rank), _result(tmp_path, "run", rank)
        assert got["global_step"] == expected["global_step"] == 24
        for key, value in expected["params"].items():
            assert torch.equal(value, got["params"][key]), f"chaos={chaos}: rank {rank} {key} differs"


def test_failure_on_rank_0_of_a_self_launched_job_ends_every_rank_with_a_short_message(tmp_path):
    cmd = [sys.executable, str(JOB), "run", "out", "--self-launch", "--raise-on-rank", "0"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode != 0
    assert "rank 0: ValueError: injected failure on rank 0" in proc.stdout  # the original error, on its rank
    # rank 1 was blocked in the step's all-reduce: its watchdog saw rank 0's record and ended it
    assert "savepoint: rank 0 failed (ValueError: injected failure on rank 0); rank 1 exits." in proc.stderr
    assert not (tmp_path / "out.rank1").exists()


def test_failure_on_a_child_rank_of_a_self_launched_job_reaches_rank_0_as_rank_failed(tmp_path):
    cmd = [sys.executable, str(JOB), "run", "out", "--self-launch", "--raise-on-rank", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode != 0
    assert _result(tmp_path, "out", 1)["error"] == "ValueError: injected failure on rank 1"
    # rank 0 names the failing rank and its error: raised as RankFailedError when its collective broke
    # (rank 1's sockets closed), or printed by its watchdog when that took longer than the grace period
    raised = (
        "rank 0: RankFailedError: rank 1 failed (ValueError: injected failure on rank 1); rank 0 stopped too."
    )
    printed = "savepoint: rank 1 failed (ValueError: injected failure on rank 1); rank 0 exits."
    assert raised in proc.stdout or printed in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
