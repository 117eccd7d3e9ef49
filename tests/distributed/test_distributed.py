"""2-process jobs on CPU with gloo: DDP under torchrun and self-launched, FSDP2 sharded checkpoints that
reshard, faults that reach every rank, two "nodes" over loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("dist_job.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMEOUT = 240  # a hang in a collective fails the test instead of blocking the suite


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun(tmp_path: Path, nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [
        *TORCHRUN,
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_port()}",
        str(JOB),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _results(tmp_path: Path, out: str, world: int) -> list[dict]:
    return [torch.load(tmp_path / f"{out}.rank{r}", weights_only=False) for r in range(world)]


def _same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_torchrun_writes_one_set_of_files_and_ranks_agree(tmp_path):
    _torchrun(tmp_path, 2, "run", "out", "--record-io", "--manual-save", "run/manual.ckpt")
    r0, r1 = _results(tmp_path, "out", 2)
    assert r0["result"]["error"] is None and r1["result"]["error"] is None
    assert sorted(os.listdir(tmp_path / "run/ck")) == [
        "epoch=0-step=6.ckpt",
        "epoch=1-step=12.ckpt",
        "last.ckpt",
    ]
    for key in ("best", "best_k", "last"):  # top-k agrees across ranks
        assert r0["result"][key] == r1["result"][key]
    assert _same_params(r0["params"], r1["params"])
    # rank 0 alone wrote, once per file (manual save included); rank 1's plugin saw no write
    calls = (tmp_path / "run/io.rank0").read_text().splitlines()
    assert calls.count("save manual.ckpt") == 1 and calls.count("save epoch=0-step=6.ckpt") == 1
    assert not (tmp_path / "run/io.rank1").exists()
    ckpt = torch.load(tmp_path / "run/manual.ckpt", weights_only=True)
    assert len(ckpt["rng_states"]) == 2  # every rank's RNG state is in the file


def test_ddp_resume_from_last_on_every_rank_is_exact(tmp_path):
    _torchrun(tmp_path, 2, "full", "ref", "--max-epochs", "3", "--every-n-steps", "4")
    _torchrun(tmp_path, 2, "part", "part", "--max-epochs", "3", "--every-n-steps", "4")
    # resume from a mid-epoch step checkpoint (6 steps per epoch: step 8 is inside epoch 1)
    shutil.copytree(tmp_path / "part/steps", tmp_path / "resume_from")
    _torchrun(tmp_path, 2, "res", "res", "--max-epochs", "3", "--ckpt", "resume_from/epoch=1-step=8.ckpt")
    ref, res = _results(tmp_path, "ref", 2), _results(tmp_path, "res", 2)
    for rank in range(2):
        assert res[rank]["result"]["global_step"] == 18
        assert _same_params(ref[rank]["params"], res[rank]["params"]), f"rank {rank} differs"
    # and "last" resolves on every rank to the same file
    _torchrun(tmp_path, 2, "full", "more", "--max-epochs", "4", "--ckpt", "last")
    assert [r["result"]["global_step"] for r in _results(tmp_path, "more", 2)] == [24, 24]


def test_ddp_self_launched_by_the_trainer(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(JOB), "run", "out", "--self-launch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = _results(tmp_path, "out", 2)
    assert r0["result"]["world_size"] == r1["result"]["world_size"] == 2
    assert r0["result"]["best_k"] == r1["result"]["best_k"]
    assert sorted(os.listdir(tmp_path / "run/ck")) == [
        "epoch=0-step=6.ckpt",
        "epoch=1-step=12.ckpt",
        "last.ckpt",
    ]


@pytest.mark.parametrize(("strategy", "failing_rank"), [("ddp", 0), ("fsdp", 1)])
def test_save_failure_on_one_rank_reaches_every_rank(tmp_path, strategy, failing_rank):
    _torchrun(
        tmp_path,
        2,
        "run",
        "out",
        "--strategy",
        strategy,
        "--fail-save-on-rank",
        str(failing_rank),
        check=False,
    )
    for result in _results(tmp_path, "out", 2):
        error = result["result"]["error"]
        assert error is not None and "CheckpointWriteError" in error, error
        assert f"rank {failing_rank}" in error.lower() or f"rank{failing_rank}" in error.lower(), error
        assert "injected write failure" in error


def test_fsdp_sharded_checkpoint_reshards_to_another_world_size(tmp_path):
    _torchrun(tmp_path, 2, "two", "two", "--strategy", "fsdp")
    sharded = tmp_path / "two/ck/last.ckpt"
    assert sharded.is_dir() and (sharded / ".metadata").is_file() and (sharded / "meta.ckpt").is_file()
    assert sorted(p.name for p in sharded.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    trained = _results(tmp_path, "two", 2)[0]["params"]
    # 2 -> 1: loading (max_epochs already reached: nothing trains) gives bit-equal weights
    _torchrun(tmp_path, 1, "two", "one", "--strategy", "fsdp", "--ckpt", "two/ck/last.ckpt")
    assert _same_params(trained, _results(tmp_path, "one", 1)[0]["params"])
    # 1 -> 2
    _torchrun(tmp_path, 1, "single", "single", "--strategy", "fsdp")
    single = _results(tmp_path, "single", 1)[0]["params"]
    _torchrun(tmp_path, 2, "single", "back", "--strategy", "fsdp", "--ckpt", "single/ck/last.ckpt")
    for result in _results(tmp_path, "back", 2):
        assert _same_params(single, result["params"])


def test_fsdp_sharded_checkpoint_loads_in_one_plain_process_and_converts(tmp_path):
    _torchrun(tmp_path, 2, "two", "two", "--strategy", "fsdp")
    sys.path.insert(0, str(JOB.parent))
    from dist_job import Net

    trained = _results(tmp_path, "two", 2)[0]["params"]
    model = Net.load_from_checkpoint(tmp_path / "two/ck/last.ckpt")
    assert _same_params(trained, model.state_dict())
    from savepoint.cli import main

    assert main(["convert", str(tmp_path / "two/ck/last.ckpt"), str(tmp_path / "full.ckpt")]) == 0
    full = torch.load(tmp_path / "full.ckpt", weights_only=True)
    assert _same_params(trained, full["state_dict"])
    # a folder without .metadata (a save that never committed) is not a checkpoint
    partial = tmp_path / "two/ck/partial.ckpt"
    shutil.copytree(tmp_path / "two/ck/last.ckpt", partial)
    (partial / ".metadata").unlink()
    from savepoint.checkpoint.verify import verify_checkpoint

    assert not verify_checkpoint(partial).ok
    with pytest.raises(Exception, match=r"not a committed sharded checkpoint|not a sharded checkpoint"):
        Net.load_from_checkpoint(partial)


def test_fsdp_full_state_dict_is_one_weights_only_file(tmp_path):
    _torchrun(tmp_path, 2, "run", "out", "--strategy", "fsdp-full")
    last = tmp_path / "run/ck/last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, weights_only=True)
    trained = _results(tmp_path, "out", 2)[0]["params"]
    assert _same_params(trained, ckpt["state_dict"])
    sys.path.insert(0, str(JOB.parent))
    from dist_job import Net

    assert _same_params(trained, Net.load_from_checkpoint(last).state_dict())


def test_two_nodes_on_one_machine_over_loopback(tmp_path):
    port = _port()
    procs = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(JOB),
                "run",
                "out",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for node in (0, 1)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err[-4000:]
    r0, r1 = _results(tmp_path, "out", 2)
    assert r0["result"]["world_size"] == 2 and r0["result"]["best_k"] == r1["result"]["best_k"]
    assert sorted(os.listdir(tmp_path / "run/ck")) == [
        "epoch=0-step=6.ckpt",
        "epoch=1-step=12.ckpt",
        "last.ckpt",
    ]


def test_fsdp_async_sharded_saves_commit_and_reload(tmp_path):
    _torchrun(tmp_path, 2, "run", "out", "--strategy", "fsdp", "--async-io")
    trained = _results(tmp_path, "out", 2)[0]["params"]
    for name in ("epoch=0-step=6.ckpt", "epoch=1-step=12.ckpt", "last.ckpt"):
        assert (tmp_path / "run/ck" / name / ".metadata").is_file(), name
    _torchrun(tmp_path, 1, "run", "one", "--strategy", "fsdp", "--ckpt", "run/ck/last.ckpt")
    assert _same_params(trained, _results(tmp_path, "one", 1)[0]["params"])


def test_ddp_async_saves_write_once_and_reload(tmp_path):
    _torchrun(tmp_path, 2, "run", "out", "--async-io")
    assert sorted(os.listdir(tmp_path / "run/ck")) == [
        "epoch=0-step=6.ckpt",
        "epoch=1-step=12.ckpt",
        "last.ckpt",
    ]
    trained = _results(tmp_path, "out", 2)[0]["params"]
    assert _same_params(trained, torch.load(tmp_path / "run/ck/last.ckpt", weights_only=True)["state_dict"])


def test_an_error_in_one_ranks_checkpoint_hook_stops_every_rank_without_a_hang(tmp_path):
    """The first callback's planned save is dropped (writing it would wait on the other rank, which is
    inside the second callback's broadcast); rank 1 learns of rank 0's failure."""
    job = Path(__file__).with_name("hook_error_job.py")
    cmd = [
        *TORCHRUN,
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_port()}",
        str(job),
        ".",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    out = proc.stdout + proc.stderr
    assert "RANK 0 ERROR OSError: storage hiccup on exists" in out, out[-4000:]
    assert "RANK 1 ERROR RankFailedError" in out, out[-4000:]
