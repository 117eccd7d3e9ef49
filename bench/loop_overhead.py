"""Per-step cost of the Trainer against a hand-written PyTorch loop on a tiny model, and import time.

    python bench/loop_overhead.py [--steps 3000] [--repeat 3]

Same data, same model, same optimizer. The first Trainer row turns off the progress bar, the logger,
the model summary and checkpointing, which a hand-written loop does not have either; the second has
every default on (the rich bar, the TensorBoard logger when installed, the model summary, the default
ModelCheckpoint: one save per epoch). Both are held to the 1.3x budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from _common import table

import savepoint as sp


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))


class Wrapped(sp.TrainingModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def data(steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 16, 32, generator=g)
    y = torch.randint(0, 4, (steps * 16,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def hand_written(steps: int) -> float:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = data(steps)
    t0 = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def with_trainer(steps: int, everything_on: bool, root: str) -> float:
    model = Wrapped()
    loader = data(steps)
    if everything_on:
        trainer = sp.Trainer(max_epochs=1, default_root_dir=root, num_sanity_val_steps=0)
    else:
        trainer = sp.Trainer(
            max_epochs=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
    t0 = time.perf_counter()
    trainer.fit(model, loader)
    return (time.perf_counter() - t0) / steps


def import_time(module: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    import tempfile

    root = tempfile.mkdtemp(prefix="savepoint-loop-")
    hand_written(200)  # warm up
    with_trainer(200, False, root)
    with_trainer(200, True, root)  # one-time costs (importing tensorboard) are not per-step costs
    # Interleaved, so a busy moment of the machine hits every variant alike; medians.
    hand, bare, full = [], [], []
    for _ in range(a.repeat):
        hand.append(hand_written(a.steps))
        bare.append(with_trainer(a.steps, False, root))
        full.append(with_trainer(a.steps, True, root))
    t_hand, t_bare, t_full = statistics.median(hand), statistics.median(bare), statistics.median(full)
    torch_runs, sp_runs = [], []
    for _ in range(7):  # interleaved: both see the same state of the machine and its caches
        torch_runs.append(import_time("torch", 1))
        sp_runs.append(import_time("savepoint", 1))
    t_torch, t_sp = statistics.median(torch_runs), statistics.median(sp_runs)
    table(
        [
            (
                "Trainer step (no bar/logger/ckpt)",
                f"{t_bare * 1e6:.0f} us",
                f"{t_hand * 1e6:.0f} us hand loop",
                f"{t_bare / t_hand:.2f}x",
                "<= 1.30x",
            ),
            (
                "Trainer step (all defaults on)",
                f"{t_full * 1e6:.0f} us",
                f"{t_hand * 1e6:.0f} us hand loop",
                f"{t_full / t_hand:.2f}x",
                "<= 1.30x",
            ),
            (
                "import savepoint",
                f"{t_sp:.2f} s",
                f"{t_torch:.2f} s import torch",
                f"+{t_sp - t_torch:.2f} s",
                "<= +0.30 s",
            ),
        ],
        ("what", "savepoint", "reference", "ratio", "budget"),
    )


if __name__ == "__main__":
    main()
