"""Time from ``fit(ckpt_path=...)`` to the first training step, for a checkpoint near the end of a long
epoch (100,000 batches), against a fresh start.

    python bench/resume.py [--batches 100000]

The checkpoint is written by a real run (10 steps into the epoch) whose loop position is then moved to
batch N - 10, as if the run had got there: what is timed is the resume itself (restore, rebuild the
epoch's permutation, skip the consumed batches without loading them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from _common import table

import savepoint as sp


class Tiny(sp.TrainingModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class FirstStep(sp.Callback):
    def __init__(self) -> None:
        self.t0 = 0.0
        self.first: float | None = None
        self.batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first is None:
            self.first = time.perf_counter() - self.t0
            self.batch_idx = batch_idx
            trainer.should_stop = True


def loader(batches: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = batches * 8
    return DataLoader(
        TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g)),
        batch_size=8,
        shuffle=True,
    )


def time_to_first_step(data: DataLoader, ckpt: str | None) -> tuple[float, int]:
    probe = FirstStep()
    trainer = sp.Trainer(
        max_epochs=1,
        callbacks=[probe],
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    probe.t0 = time.perf_counter()
    trainer.fit(Tiny(), data, ckpt_path=ckpt)
    assert probe.first is not None
    return probe.first, probe.batch_idx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=100_000)
    a = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="savepoint-resume-")
    data = loader(a.batches)
    trainer = sp.Trainer(
        max_steps=10,
        enable_progress_bar=False,
        logger=False,
        default_root_dir=folder,
        enable_checkpointing=False,
    )
    trainer.fit(Tiny(), data)
    early = os.path.join(folder, "early.ckpt")
    trainer.save_checkpoint(early)
    ckpt = torch.load(early, weights_only=True)
    loop = ckpt["loops"]["fit_loop"]
    assert loop["data"]["num_batches"] == a.batches
    loop["batches_done"] = loop["total_batches"] = a.batches - 10
    loop["phase"] = "batches"
    late = os.path.join(folder, "late.ckpt")
    sp.TorchCheckpointIO().save_checkpoint(ckpt, late)

    fresh = min(time_to_first_step(data, None)[0] for _ in range(3))
    resumed, idx = min(time_to_first_step(data, late) for _ in range(3))
    assert idx == a.batches - 10, idx
    table(
        [
            (
                f"fit -> first step, resume at batch {idx:,} of {a.batches:,}",
                f"{resumed * 1e3:.0f} ms",
                f"{fresh * 1e3:.0f} ms fresh start",
                f"+{(resumed - fresh) * 1e3:.0f} ms",
                "well under 1 s",
            )
        ],
        ("what", "resume", "reference", "difference", "target"),
    )
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    main()
