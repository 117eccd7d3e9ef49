"""What checkpointing costs a whole training run: no checkpoints / sync saves / async saves.

    python bench/checkpoint_overhead.py [--width 4096] [--steps 200] [--every 20] [--top-k 2]
                                        [--callbacks 1] [--batch 64] [--repeat 3] [--dir DIR]

The model is one ``width x width`` linear layer trained with Adam (4096: a ~200 MB checkpoint), with
``ModelCheckpoint(every_n_train_steps=every, save_top_k=top_k, save_last=True, monitor="loss")``;
``--callbacks N`` adds N-1 more ModelCheckpoint callbacks saving at the same steps (each keeping its newest
file in a folder of its own), whose files are further names of the same save point. The three
modes run interleaved, in an order rotated each round (none, sync, async; sync, async, none; ...), and
each figure is the median over `repeat` runs; each round's overhead over its own run without
checkpoints is printed too, with their median and mean (the steadier figures where identical runs spread
by several percent). Printed: the total fit time and its overhead over no checkpoints, the mean duration of the
steps that save and of those that do not, the time from the end of the last step to fit's return (the
end-of-fit hooks and teardown: an async save still being written is finished there), the bytes written per
save point (a link counts zero), and the write rate of the disk under the folder (a new file + fsync), with
the time writing every save point's bytes once takes at that rate, to read the overheads against.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from _common import disk_write_rate, table

import savepoint as sp
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO


class OneLinear(sp.TrainingModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = F.mse_loss(self.layer(x), x)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-4)


class CountingIO(TorchCheckpointIO):
    """Counts the bytes that land on disk (a link writes none)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        super().save_checkpoint(checkpoint, path, storage_options)
        self.bytes += os.path.getsize(path)


class StepTimer(sp.Callback):
    """Wall time from one batch start to the next: the step, its hooks and any save it triggers."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.saving: list[float] = []
        self.plain: list[float] = []
        self._t0: float | None = None
        self._step = 0

    def _close(self) -> None:
        if self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            (self.saving if self.every and self._step % self.every == 0 else self.plain).append(elapsed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close()
        self._step = trainer.global_step + 1
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self._close()
        self._t0 = None
        self.ended = time.perf_counter()


def run(mode: str, a: argparse.Namespace, data: TensorDataset, folder: str) -> dict[str, float]:
    torch.manual_seed(0)
    shutil.rmtree(folder, ignore_errors=True)
    counting = CountingIO()
    timer = StepTimer(a.every if mode != "none" else 0)
    callbacks: list[sp.Callback] = [timer]
    plugins = []
    if mode != "none":
        callbacks.append(
            sp.ModelCheckpoint(
                dirpath=folder,
                every_n_train_steps=a.every,
                save_top_k=a.top_k,
                save_last=True,
                monitor="loss",
            )
        )
        callbacks += [
            sp.ModelCheckpoint(
                dirpath=os.path.join(folder, f"extra{i}"),
                every_n_train_steps=a.every,
                filename="latest-{step}",
            )
            for i in range(1, a.callbacks)
        ]
        plugins.append(AsyncCheckpointIO(counting) if mode == "async" else counting)
    trainer = sp.Trainer(
        max_steps=a.steps,
        max_epochs=-1,
        callbacks=callbacks,
        plugins=plugins or None,
        enable_checkpointing=mode != "none",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        default_root_dir=folder,
    )
    t0 = time.perf_counter()
    trainer.fit(OneLinear(a.width), DataLoader(data, batch_size=a.batch))
    end = time.perf_counter()
    total = end - t0
    points = a.steps // a.every if mode != "none" else 0
    return {
        "total": total,
        "saving": statistics.mean(timer.saving) if timer.saving else float("nan"),
        "plain": statistics.mean(timer.plain),
        "end": end - timer.ended,
        "bytes": counting.bytes / points if points else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--callbacks", type=int, default=1, help="ModelCheckpoint callbacks saving at each point")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    root = a.dir or tempfile.mkdtemp(prefix="savepoint-overhead-")
    folder = os.path.join(root, "ck")
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(a.steps * a.batch, a.width))
    size_mb = 3 * 4 * a.width * (a.width + 1) / 1e6
    print(
        f"model: {a.width}x{a.width} linear + Adam (~{size_mb:.0f} MB checkpoint), {a.steps} steps, save every "
        f"{a.every}, {a.callbacks} ModelCheckpoint callback(s)"
    )
    results: dict[str, list[dict[str, float]]] = {"none": [], "sync": [], "async": []}
    rates = []
    run("none", argparse.Namespace(**{**vars(a), "steps": min(a.steps, 10)}), data, folder)  # warm-up
    modes = list(results)
    for i in range(a.repeat):
        rates.append(disk_write_rate(root))
        for mode in modes[i % 3 :] + modes[: i % 3]:  # rotated: no mode always runs first or last
            results[mode].append(run(mode, a, data, folder))
    med = {
        mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for mode, runs in results.items()
    }
    base = med["none"]["total"]
    rows = []
    for mode, m in med.items():
        overhead = f"{(m['total'] / base - 1) * 100:+.1f}%" if mode != "none" else ""
        saving = f"{m['saving'] * 1e3:.0f} ms" if mode != "none" else ""
        written = f"{m['bytes'] / 1e6:.0f} MB" if mode != "none" else ""
        end = f"{m['end'] * 1e3:.0f} ms"
        rows.append(
            (mode, f"{m['total']:.2f} s", overhead, saving, f"{m['plain'] * 1e3:.0f} ms", end, written)
        )
    table(
        rows,
        (
            "checkpoints",
            "fit time",
            "overhead",
            "step that saves",
            "other steps",
            "after the last step",
            "written per save point",
        ),
    )
    rate = statistics.median(rates)
    once = a.steps // a.every * med["sync"]["bytes"] / rate
    print(
        f"disk write rate (new file + fsync): {rate / 1e9:.2f} GB/s (median of {len(rates)}); writing every save "
        f"point's bytes once at that rate takes {once:.2f} s, against a sync overhead of "
        f"{med['sync']['total'] - base:.2f} s and an async one of {med['async']['total'] - base:.2f} s"
    )
    totals = {mode: [f"{r['total']:.2f}" for r in runs] for mode, runs in results.items()}
    print(f"every run's fit time: {totals}")
    paired = {
        mode: [f"{(r['total'] / n['total'] - 1) * 100:+.1f}%" for r, n in zip(results[mode], results["none"])]
        for mode in ("sync", "async")
    }
    print(f"every round's overhead over its own run without checkpoints: {paired}")
    for mode in ("sync", "async"):
        rounds = [(r["total"] / n["total"] - 1) * 100 for r, n in zip(results[mode], results["none"])]
        if len(rounds) > 1:  # the steadier figure on a noisy machine: each round against its own baseline
            half = 1.96 * statistics.stdev(rounds) / len(rounds) ** 0.5
            mean = statistics.mean(rounds)
            print(
                f"{mode} overhead over the rounds: median {statistics.median(rounds):+.1f}%, mean {mean:+.1f}% "
                f"(95% interval {mean - half:+.1f}% to {mean + half:+.1f}%, normal approximation)"
            )
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
