"""Saves that survive a crash: SIGKILL at random moments, a full disk, an exception inside the write."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from savepoint.checkpoint.verify import verify_checkpoint

JOB = Path(__file__).with_name("crash_job.py")


def _visible_checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ckpt"))


def test_sigkill_at_random_moments_leaves_only_loadable_checkpoints(tmp_path):
    rng = random.Random(1234)
    root = tmp_path / "run"
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(JOB), str(root), "50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # "START": torch is imported, training begins
        deadline = time.monotonic() + 120
        while (
            not (root / "ck" / "last.ckpt").exists() and time.monotonic() < deadline and proc.poll() is None
        ):
            time.sleep(0.01)  # on a busy machine the first save may take a while
        time.sleep(rng.uniform(0.0, 1.0))  # then a random moment: saves run at every step
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        found = _visible_checkpoints(root / "ck")
        assert found, "the job saves at every step: something must exist"
        for path in found:
            report = verify_checkpoint(path)
            assert report.ok, f"{path.name} after a kill: {report.problems}"
            torch.load(path, weights_only=True)
    assert kills >= 4
    # a resume from "last" works and finishes the run
    last_step = torch.load(root / "ck" / "last.ckpt", weights_only=True)["global_step"]
    finish = subprocess.run(
        [sys.executable, str(JOB), str(root), str(last_step // 16 + 2)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "START last" in finish.stdout and "DONE" in finish.stdout
    # killed writers' temporaries are never taken for checkpoints, and a later save swept them
    assert not [p for p in (root / "ck").iterdir() if p.name.startswith(".")]


DISK_FULL = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    import torch
    from savepoint.plugins.io import TorchCheckpointIO
    from savepoint.checkpoint.errors import CheckpointWriteError
    folder = sys.argv[1]
    io = TorchCheckpointIO()
    path = os.path.join(folder, "model.ckpt")
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, path)          # ~4 KB fits
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                              # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))          # "disk full" past 64 KB
    result = {}
    try:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}}, path)  # ~400 KB does not
    except CheckpointWriteError as err:
        result["error"] = str(err)
    result["files"] = sorted(os.listdir(folder))
    result["intact"] = bool(torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(1000)))
    print(json.dumps(result))
    """
)


def test_disk_full_gives_a_clear_error_and_keeps_the_earlier_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "model.ckpt" in result["error"] and "intact" in result["error"]
    assert "File too large" in result["error"] or "Errno 27" in result["error"]
    assert result["files"] == ["model.ckpt"]  # no temporary left behind
    assert result["intact"]
