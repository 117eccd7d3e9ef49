"""Sharded (FSDP2, every rank writes its shard) against full (gathered to rank 0) saves of the same model
and Adam state, with 2 ranks on CPU/gloo; and the sizes on disk.

    python bench/distributed_save.py [--mb 256] [--repeat 3]     (starts torchrun itself)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def worker(a: argparse.Namespace) -> None:
    import savepoint as sp

    class Model(sp.TrainingModule):
        def __init__(self, width: int, depth: int) -> None:
            super().__init__()
            self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    width = 2048
    depth = max(2, round(a.mb * 1e6 / (3 * 4 * width * width)))  # params + 2 Adam moments
    torch.manual_seed(0)
    model = Model(width, depth)
    strategy = sp.FSDPStrategy(shard_modules={nn.Linear}, accelerator="cpu")
    strategy._configure_devices(devices=1, num_nodes=1, accelerator="cpu")
    strategy.setup_environment()
    strategy.connect(model)
    strategy.setup(None)  # type: ignore[arg-type]
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.layers(torch.randn(4, width)).sum().backward()
    opt.step()
    rank = dist.get_rank()

    def checkpoint() -> dict:
        return {
            "epoch": 0,
            "global_step": 1,
            "state_dict": strategy.model_state_dict(),
            "optimizer_states": [strategy.optimizer_state(opt)],
        }

    results = {}
    for kind in ("sharded", "full"):
        strategy.state_dict_type = kind
        times = []
        for i in range(a.repeat):
            path = os.path.join(a.dir, f"{kind}-{i}.ckpt")
            os.sync()
            dist.barrier()
            t0 = time.perf_counter()
            strategy.save_checkpoint(checkpoint(), path)
            dist.barrier()
            times.append(time.perf_counter() - t0)
        results[kind] = (statistics.median(times), _size(os.path.join(a.dir, f"{kind}-0.ckpt")))
    if rank == 0:
        (ts, ss), (tf, sf) = results["sharded"], results["full"]
        from rich.console import Console
        from rich.table import Table

        t = Table("what", "sharded (2 ranks write)", "full (gathered, rank 0 writes)", "ratio")
        t.add_row("save time (fsync included)", f"{ts:.3f} s", f"{tf:.3f} s", f"{ts / tf:.2f}x")
        t.add_row("size on disk", f"{ss / 1e6:.1f} MB", f"{sf / 1e6:.1f} MB", f"{ss / sf:.2f}x")
        Console().print(t)
        files = sorted(os.listdir(os.path.join(a.dir, "sharded-0.ckpt")))
        print("sharded folder:", ", ".join(files))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir")
    a = ap.parse_args()
    if "RANK" in os.environ:
        worker(a)
        return
    from savepoint.strategies.launcher import free_port

    folder = tempfile.mkdtemp(prefix="savepoint-dist-")
    try:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            __file__,
            "--mb",
            str(a.mb),
            "--repeat",
            str(a.repeat),
            "--dir",
            folder,
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
