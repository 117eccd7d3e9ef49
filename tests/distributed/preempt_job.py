"""A 2-process job for the preemption tests: signals and kills at chosen moments, failures on one rank.
Run under torchrun (``--max-restarts`` for the elastic test), or as a plain script with --self-launch.

    python preempt_job.py ROOT OUT [--chaos ATTEMPT:SIGNAL:RANK:BATCH,...] [--raise-on-rank R --at-batch B]
                          [--self-launch] [--every-n-steps N]

--chaos: in restart ATTEMPT (TORCHELASTIC_RESTART_COUNT), RANK sends itself SIGNAL (SIGTERM, SIGKILL...)
in the training_step of its BATCH-th batch (counted over the attempt). Every attempt resumes with
ckpt_path="last". OUT.rank<R>: final parameters, global step, and the error fit raised (or None).
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp


class Net(sp.TrainingModule):
    def __init__(self, chaos: dict[int, tuple[int, int]], fail_at: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        self.chaos = chaos  # rank -> (signal, batch) for this attempt
        self.fail_at = fail_at
        self.batches = 0

    def training_step(self, batch, batch_idx):
        rank = self.trainer.global_rank
        if rank in self.chaos and self.batches == self.chaos[rank][1]:
            os.kill(os.getpid(), self.chaos[rank][0])
        if self.batches == self.fail_at:
            raise ValueError(f"injected failure on rank {rank}")
        self.batches += 1
        x, y = batch
        return F.cross_entropy(self.body(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def parse_chaos(text: str | None, attempt: int) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for item in filter(None, (text or "").split(",")):
        at, name, rank, batch = item.split(":")
        if int(at) == attempt:
            out[int(rank)] = (getattr(signal, name), int(batch))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--chaos")
    p.add_argument("--raise-on-rank", type=int)
    p.add_argument("--at-batch", type=int, default=3)
    p.add_argument("--self-launch", action="store_true")
    p.add_argument("--every-n-steps", type=int, default=4)
    a = p.parse_args()
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(96, 8), torch.randint(0, 2, (96,)))
    rank = int(os.environ.get("RANK", "0"))
    fail_at = a.at_batch if a.raise_on_rank is not None and rank == a.raise_on_rank else -1
    model = Net(parse_chaos(a.chaos, attempt), fail_at)
    trainer = sp.Trainer(
        strategy="ddp",
        devices=2 if a.self_launch else "auto",
        accelerator="cpu",
        max_epochs=4,
        default_root_dir=a.root,
        callbacks=[sp.ModelCheckpoint(dirpath=f"{a.root}/ck", every_n_train_steps=a.every_n_steps)],
        enable_progress_bar=False,
        logger=False,
    )
    error = None
    started = time.monotonic()
    try:
        trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True), ckpt_path="last")
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        print(f"rank {trainer.global_rank}: {error}", flush=True)
    result = {
        "error": error,
        "global_step": trainer.global_step,
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "seconds": time.monotonic() - started,
    }
    torch.save(result, f"{a.out}.rank{trainer.global_rank}")
    if error is not None:
        raise SystemExit(1)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
