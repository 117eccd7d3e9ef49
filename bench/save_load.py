"""Save and load of a ~1 GB training checkpoint (a model plus Adam state), against plain torch.

    python bench/save_load.py [--gb 1.0] [--dir DIR] [--repeat 5] [--only-save]

Prints one table: each measurement, its reference on the same machine in the same run, the ratio, and
the budget of DESIGN.md. Save timings include fsync; dirty pages are flushed between runs; medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from _common import PeakRSS, flush_page_cache, median_time, table

import savepoint as sp
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO


class Big(sp.TrainingModule):
    def __init__(self, width: int = 4096, depth: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)


def build_checkpoint(gb: float) -> tuple[Big, torch.optim.Optimizer, dict]:
    # model + 2 Adam moments = 3 x params x 4 bytes
    width = 4096
    depth = max(1, round(gb * 1e9 / (3 * 4 * width * width)))
    torch.manual_seed(0)
    model = Big(width, depth)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    checkpoint = {
        "epoch": 0,
        "global_step": 1,
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "hyper_parameters": dict(model.hparams),
    }
    return model, opt, checkpoint


def nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(nbytes(v) for v in obj)
    return 0


def torch_save_fsync(obj, path: str) -> None:
    torch.save(obj, path)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def torch_save_inplace_fsync(obj, path: str) -> None:
    """torch.save over an existing file without truncating it first (same blocks rewritten), then fsync."""
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        torch.save(obj, f)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def read_all(module: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only-save", action="store_true", help="stop after the synchronous save rows")
    a = ap.parse_args()
    folder = a.dir or tempfile.mkdtemp(prefix="savepoint-bench-")
    os.makedirs(folder, exist_ok=True)
    model, opt, ckpt = build_checkpoint(a.gb)
    size = nbytes(ckpt)
    print(f"checkpoint: {size / 1e9:.2f} GB of tensors in {folder}")
    rows = []

    # 1. synchronous save vs torch.save + fsync of the same dict
    ref_path, our_path = os.path.join(folder, "ref.pt"), os.path.join(folder, "ours.ckpt")
    inplace_path = os.path.join(folder, "ref-inplace.pt")
    io = TorchCheckpointIO()
    # 1a. over an existing file (as last.ckpt is saved at every save point), against two references:
    # torch.save(path) (truncates: the file system allocates every block again) and torch.save into the
    # existing file rewritten in place (no truncation, no new blocks: not atomic, the fastest a disk allows).
    t_inplace, t_ref, t_ours = interleaved_many(
        [
            lambda: torch_save_inplace_fsync(ckpt, inplace_path),
            lambda: torch_save_fsync(ckpt, ref_path),
            lambda: io.save_checkpoint(ckpt, our_path),
        ],
        a.repeat,
    )
    rows.append(
        (
            "sync save over an existing file",
            f"{t_ours:.3f} s",
            f"{t_inplace:.3f} s  torch.save in place+fsync",
            f"{t_ours / t_inplace:.2f}x",
            "<= 1.10x",
        )
    )
    rows.append(
        (
            "  (the same, against a truncating rewrite)",
            f"{t_ours:.3f} s",
            f"{t_ref:.3f} s  torch.save(path)+fsync",
            f"{t_ours / t_ref:.2f}x",
            "(information)",
        )
    )
    # 1b. to a new name (nothing to replace on either side)
    counter = iter(range(10_000))

    def fresh(prefix: str) -> str:
        return os.path.join(folder, f"{prefix}-new-{next(counter)}.ckpt")

    t_ref_new, t_ours_new = interleaved(
        lambda: torch_save_fsync(ckpt, fresh("ref")),
        lambda: io.save_checkpoint(ckpt, fresh("ours")),
        a.repeat,
    )
    rows.append(
        (
            "sync save to a new file",
            f"{t_ours_new:.3f} s",
            f"{t_ref_new:.3f} s  torch.save+fsync",
            f"{t_ours_new / t_ref_new:.2f}x",
            "<= 1.10x",
        )
    )
    for name in os.listdir(folder):
        if "-new-" in name:
            os.unlink(os.path.join(folder, name))
    if a.only_save:
        table(rows, ("what", "savepoint", "reference", "ratio", "budget"))
        io.teardown()
        if a.dir is None:
            shutil.rmtree(folder)
        return

    # 2. extra memory while saving (sync)
    flush_page_cache()
    with PeakRSS() as peak:
        io.save_checkpoint(ckpt, our_path)
    rows.append(
        (
            "extra memory, sync save",
            f"{peak.extra / 1e6:.1f} MB",
            f"{size / 1e6:.0f} MB checkpoint",
            f"{peak.extra / size:.1%}",
            "< 5%",
        )
    )

    # 3. async: time training is blocked vs one copy_ into warm buffers
    warm = {k: torch.empty_like(v) for k, v in _flat(ckpt).items()}

    def one_copy() -> None:
        for k, v in _flat(ckpt).items():
            warm[k].copy_(v)

    t_copy = median_time(one_copy, a.repeat)
    aio = AsyncCheckpointIO(TorchCheckpointIO())
    aio.save_checkpoint(ckpt, os.path.join(folder, "async-0.ckpt"))  # allocates the buffers once
    aio.wait()
    blocked = []
    for i in range(a.repeat):
        flush_page_cache()
        t0 = time.perf_counter()
        aio.save_checkpoint(ckpt, os.path.join(folder, f"async-{i + 1}.ckpt"))
        blocked.append(time.perf_counter() - t0)
        aio.wait()
    t_blocked = sorted(blocked)[len(blocked) // 2]
    rows.append(
        (
            "async save: training blocked",
            f"{t_blocked:.3f} s",
            f"{t_copy:.3f} s  one copy_ (warm)",
            f"{t_blocked / t_copy:.2f}x",
            "<= 2.00x",
        )
    )

    # 4. extra memory, async (its host buffers are one checkpoint's worth)
    aio.teardown()
    del aio
    aio2 = AsyncCheckpointIO(TorchCheckpointIO())
    with PeakRSS() as peak:
        aio2.save_checkpoint(ckpt, os.path.join(folder, "async-mem.ckpt"))
        aio2.wait()
    rows.append(
        (
            "extra memory, async save",
            f"{peak.extra / 1e6:.1f} MB",
            f"{size / 1e6:.0f} MB checkpoint",
            f"{peak.extra / size:.2f}x",
            "<= 1 checkpoint",
        )
    )

    # 5. a background write slowing the training steps that run meanwhile
    x = torch.randn(64, 4096)
    layer = model.layers[0]

    def step() -> None:
        layer(x).sum().backward()

    for _ in range(3):
        step()
    t_step = median_time(step, 20)
    done = threading.Event()
    aio2.save_checkpoint(ckpt, os.path.join(folder, "async-bg.ckpt"))
    threading.Thread(target=lambda: (aio2.wait(), done.set()), daemon=True).start()
    during = []
    while not done.is_set():
        t0 = time.perf_counter()
        step()
        during.append(time.perf_counter() - t0)
    aio2.teardown()
    t_during = sorted(during)[len(during) // 2] if during else t_step
    rows.append(
        (
            "train step during a background write",
            f"{t_during * 1e3:.1f} ms",
            f"{t_step * 1e3:.1f} ms  without a write",
            f"{t_during / t_step:.2f}x",
            "<= 1.20x",
        )
    )

    # 6. load_from_checkpoint vs torch.load(mmap=True) + load_state_dict(assign=True); both read every parameter
    full = {**ckpt, "format_version": 1}
    io.save_checkpoint(full, our_path)
    torch_save_fsync(full, ref_path)
    del opt
    ckpt = full = warm = None  # free the memory before the load measurements
    width, depth = model.hparams.width, model.hparams.depth
    del model

    def ref_load() -> None:
        m = Big(width, depth)
        sd = torch.load(ref_path, mmap=True, weights_only=True)["state_dict"]
        m.load_state_dict(sd, assign=True)
        read_all(m)

    def our_load() -> None:
        m = Big.load_from_checkpoint(our_path)  # integrity checked (CRC32 of every record it uses)
        read_all(m)

    def our_load_unchecked() -> None:
        m = Big.load_from_checkpoint(our_path, verify_integrity=False)
        read_all(m)

    t_ref_load, t_our_load = interleaved(ref_load, our_load, a.repeat)
    rows.append(
        (
            "load_from_checkpoint (+ read all)",
            f"{t_our_load:.3f} s",
            f"{t_ref_load:.3f} s  mmap load + assign",
            f"{t_our_load / t_ref_load:.2f}x",
            "<= 1.30x",
        )
    )
    t_ref_load, t_unchecked = interleaved(ref_load, our_load_unchecked, a.repeat)
    rows.append(
        (
            "  the same, verify_integrity=False",
            f"{t_unchecked:.3f} s",
            f"{t_ref_load:.3f} s  mmap load + assign",
            f"{t_unchecked / t_ref_load:.2f}x",
            "(no CRCs)",
        )
    )

    table(rows, ("what", "savepoint", "reference", "ratio", "budget"))
    io.teardown()
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    if a.dir is None:
        os.rmdir(folder)


def interleaved_many(fns, repeat: int) -> list[float]:
    """Medians of round-robin runs (page cache flushed before each), so drift hits every side alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            out.append(median_time(fn, 1, flush_page_cache))
    return [statistics.median(t) for t in times]


def interleaved(reference, ours, repeat: int) -> tuple[float, float]:
    """Medians of alternating runs (page cache flushed before each), so drift hits both sides alike."""
    ref_times, our_times = [], []
    for _ in range(repeat):
        ref_times.append(median_time(reference, 1, flush_page_cache))
        our_times.append(median_time(ours, 1, flush_page_cache))
    return statistics.median(ref_times), statistics.median(our_times)


def _flat(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}/{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}/{i}"))
    return out


if __name__ == "__main__":
    main()
