"""How much a background checkpoint write slows the training step, for each way of writing it.

    python bench/writer_interference.py [--width 1536] [--layers 6] [--batch 128] [--ckpt-mb 200]
                                        [--steps 20] [--repeat 5] [--target new|last] [--chunk-mb 8]
                                        [--variants plain@0,paced@10,...] [--dir DIR]

The training step is a ``layers``-deep MLP of ``width x width`` linear layers trained with Adam on the
CPU (the defaults: about 95 ms a step on 2 cores). While the main thread runs `steps` steps (more if no
write finished by then), a background thread does what `AsyncCheckpointIO`'s writer does: it sets its
own nice value and saves a ~`ckpt-mb` MB checkpoint (weights + Adam's moments in 4 MB tensors, already
copied into the async snapshot's host buffers: that copy, on the training thread, is not measured here) with `TorchCheckpointIO`, back
to back, so every step runs beside a write. ``--target new`` saves each checkpoint to a new file and
removes the one two saves back (top-k); ``--target last`` saves over one name (``last.ckpt``: its spare
rewritten in place).

A variant is ``<how>[:<MB>][@<priority>]``; priority: a nice value 0-19 (per-thread setpriority) or
``idle`` (SCHED_IDLE), the library's ``AsyncCheckpointIO.writer_niceness`` without ``@``. How:

- ``plain``: ``TorchCheckpointIO(writeback_chunk=0, direct_writes=False)``: torch's writes as they come,
  through the page cache, all written back at the fsync;
- ``paced``: ``TorchCheckpointIO(writeback_chunk=<MB>, direct_writes=False)`` (--chunk-mb): every piece's
  writeback started with ``sync_file_range`` once written and the piece before waited for;
- ``direct``: paced, and every large record (page-aligned in the file and in memory) written with
  ``O_DIRECT`` straight from the snapshot's buffer (the library's default: 8 MB pieces, direct writes);
- ``inline-crc``: the default, but torch computes the record CRCs while it writes, holding the global
  lock (the library takes them with isal or zlib, which release it, as the bytes go out);
- ``readback-crc``: the default, but the CRCs are taken by reading the file back once it is written, as
  the library did before it took them as the bytes go out;
- ``odirect``: plain, but the archive written with ``O_DIRECT`` through a page-aligned <MB> bounce buffer
  (a copy of every byte; the CRC pass then reads the file back from the disk).

Each round runs every variant, in a rotated order, each right after `steps` steps without a write (its
baseline); `repeat` rounds. Printed per variant: the mean and 90th-percentile step time and their ratio to
the baseline run just before (medians over the rounds), the duration of one write beside training and its
rate, the training time one write costs (the write's duration x (1 - 1/ratio)), and the writer thread's
CPU time per write; then the disk's write rate (a new file + fsync) and the load average before and after.
No figure is checked against a budget: read them against each other.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import mmap
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from _common import disk_write_rate, table

from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from savepoint.plugins.io import torch_io as torch_io_module
from savepoint.plugins.io.async_io import _HostBuffers

_TORCH_SAVE = torch.save


class DirectWriter:
    """Writes through a second descriptor of the same file opened with ``O_DIRECT``, from a page-aligned
    buffer of `chunk` bytes (offsets and lengths stay block-aligned; the last block is padded, and the
    caller's ``truncate()`` at the position this leaves in `f` cuts the padding off)."""

    def __init__(self, f, chunk: int) -> None:
        self.f = f
        self.fd = os.open(f"/proc/self/fd/{f.fileno()}", os.O_WRONLY | os.O_DIRECT)
        self.buffer = mmap.mmap(-1, chunk)  # page-aligned
        self.view = memoryview(self.buffer)
        self.offset = f.tell()  # 0: a new temporary or a spare rewritten from its start
        self.fill = 0

    def write(self, data) -> int:
        src = memoryview(data).cast("B")
        done = 0
        while done < len(src):
            n = min(len(self.buffer) - self.fill, len(src) - done)
            self.view[self.fill : self.fill + n] = src[done : done + n]
            self.fill += n
            done += n
            if self.fill == len(self.buffer):
                os.pwrite(self.fd, self.view, self.offset)
                self.offset += self.fill
                self.fill = 0
        return len(src)

    def flush(self) -> None:  # torch's last call: the tail, padded to a block
        padded = -(-self.fill // 4096) * 4096
        self.view[self.fill : padded] = bytes(padded - self.fill)
        os.pwrite(self.fd, self.view[:padded], self.offset)
        os.close(self.fd)
        self.f.seek(self.offset + self.fill)


@contextlib.contextmanager
def wrapped_save(wrapper: Callable) -> Iterator[None]:
    """torch.save(obj, f) writes through `wrapper(f)` (only the bench's writer thread saves meanwhile)."""

    def save(obj, f, *args, **kwargs):
        return _TORCH_SAVE(obj, wrapper(f), *args, **kwargs)

    with mock.patch.object(torch, "save", save):
        yield


@contextlib.contextmanager
def inline_crc() -> Iterator[None]:
    """torch computes the CRCs while it writes (holding the global lock); none filled in afterwards (the
    writer still runs its CRC of each piece as it goes by, ~15 ms per 200 MB with isal)."""
    options = torch_io_module.torch_save_options

    def crc_on(*, crc32=None, storage_alignment=None):
        return options(crc32=True, storage_alignment=storage_alignment)

    with (
        mock.patch.object(torch_io_module, "torch_save_options", crc_on),
        mock.patch.object(torch_io_module, "fill_crc32", lambda path, known=None: None),
    ):
        yield


@contextlib.contextmanager
def readback_crc() -> Iterator[None]:
    """The record CRCs taken by reading the written file back (what the CRCs taken in passing replaced)."""
    fill = torch_io_module.fill_crc32
    with mock.patch.object(torch_io_module, "fill_crc32", lambda path, known=None: fill(path)):
        yield


class Variant:
    """``<how>[:<MB>][@<priority>]``: how the file is written (``:<MB>``: a piece size other than
    --chunk-mb), at a nice value (0-19) or ``idle`` (SCHED_IDLE); without ``@``, at the library's default."""

    def __init__(self, spec: str, chunk: int) -> None:
        how, _, priority = spec.partition("@")
        how, _, mb = how.partition(":")
        chunk = int(mb) << 20 if mb else chunk
        default_chunk = inspect.signature(TorchCheckpointIO).parameters["writeback_chunk"].default
        ways = {  # TorchCheckpointIO's writeback_chunk and direct_writes, and a patch around the save
            "plain": (0, False, None),
            "paced": (chunk, False, None),
            "direct": (chunk, True, None),
            "inline-crc": (default_chunk, True, inline_crc),
            "readback-crc": (default_chunk, True, readback_crc),
            "odirect": (0, False, lambda: wrapped_save(lambda f: DirectWriter(f, chunk))),
        }
        if how not in ways:
            raise ValueError(f"unknown way of writing {how!r}; choose from {list(ways)}")
        self.writeback_chunk, self.direct_writes, self.patch = ways[how]
        if not priority:
            self.nice = AsyncCheckpointIO.writer_niceness
        elif priority == "idle":
            self.nice = -1
        elif priority.isdigit() and 0 <= int(priority) <= 19:
            self.nice = int(priority)
        else:
            raise ValueError(f"unknown priority {priority!r}: a nice value 0-19, or idle")
        self.is_default = (
            how == "direct" and chunk == default_chunk and self.nice == AsyncCheckpointIO.writer_niceness
        )
        size = f" {chunk >> 20} MB" if how in ("paced", "direct", "odirect") else ""
        self.label = f"{how}{size} @ " + ("SCHED_IDLE" if self.nice == -1 else f"nice {self.nice}")


DEFAULT_VARIANTS = "plain@10,paced@10,direct@0,direct@10,direct@19,inline-crc@10,readback-crc@10"


def checkpoint(nbytes: int) -> dict:
    """Weights plus Adam's two moments, in 4 MB float tensors, copied into host buffers as an async save
    copies them (`AsyncCheckpointIO`'s: page-aligned, which direct writes need)."""
    n = max(1, round(nbytes / (3 * (4 << 20))))
    gen = torch.Generator().manual_seed(0)
    weights = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(n)}
    state = {
        i: {"step": torch.tensor(100.0), "exp_avg": torch.randn_like(w), "exp_avg_sq": torch.rand_like(w)}
        for i, w in enumerate(weights.values())
    }
    return _HostBuffers().snapshot(
        {
            "state_dict": weights,
            "optimizer_states": [{"state": state, "param_groups": [{"lr": 1e-4, "params": list(state)}]}],
            "global_step": 100,
        }
    )


class Writer(threading.Thread):
    """Saves `state` back to back until stopped, at `nice` (-1: SCHED_IDLE), like the async writer."""

    def __init__(self, state: dict, folder: str, variant: Variant, target: str) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.state, self.folder, self.variant, self.target = state, folder, variant, target
        self.stop = threading.Event()
        self.started_writing = threading.Event()
        self.durations: list[float] = []
        self.cpu: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        tid = threading.get_native_id()
        if self.variant.nice == -1:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, tid, self.variant.nice)
        io = TorchCheckpointIO(
            writeback_chunk=self.variant.writeback_chunk, direct_writes=self.variant.direct_writes
        )
        names: list[str] = []
        try:
            with self.variant.patch() if self.variant.patch else contextlib.nullcontext():
                self.started_writing.set()
                i = 0
                while not self.stop.is_set():
                    name = "last.ckpt" if self.target == "last" else f"step-{i}.ckpt"
                    path = os.path.join(self.folder, name)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    io.save_checkpoint(self.state, path)
                    self.durations.append(time.perf_counter() - t0)
                    self.cpu.append(time.thread_time() - c0)
                    if self.target == "new":
                        names.append(path)
                        if len(names) > 2:
                            io.remove_checkpoint(names.pop(0))
                    i += 1
        except BaseException as err:
            self.error = err
            self.started_writing.set()
        finally:
            io.teardown()


class Training:
    def __init__(self, width: int, layers: int, batch: int) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())])
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.x, self.y = torch.randn(batch, width), torch.randn(batch, width)

    def steps(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
            loss.item()
            times.append(time.perf_counter() - t0)
        return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def trial(name: str, variant: Variant, a: argparse.Namespace, training: Training, state: dict, root: str):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    writer = Writer(state, folder, variant, a.target)
    writer.start()
    writer.started_writing.wait()
    times = training.steps(a.steps)
    while not writer.durations and writer.error is None:  # at least one whole write beside the steps
        times += training.steps(1)
    completed = len(writer.durations)  # the write in flight now finishes without training beside it
    writer.stop.set()
    writer.join()
    shutil.rmtree(folder, ignore_errors=True)
    if writer.error is not None:
        raise RuntimeError(f"variant {name}: the writer failed") from writer.error
    return times, writer.durations[:completed], writer.cpu[:completed]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--ckpt-mb", type=float, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target", choices=("new", "last"), default="new")
    ap.add_argument("--chunk-mb", type=int, default=8)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated names")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    try:
        all_variants = {n: Variant(n, a.chunk_mb << 20) for n in a.variants.split(",")}
    except ValueError as err:
        ap.error(str(err))
    names = list(all_variants)
    root = a.dir or tempfile.mkdtemp(prefix="savepoint-writer-")
    os.makedirs(root, exist_ok=True)
    load_before = os.getloadavg()
    state = checkpoint(int(a.ckpt_mb * 1e6))
    size = os.path.getsize(_probe(state, root))
    training = Training(a.width, a.layers, a.batch)
    training.steps(5)  # warm-up
    print(
        f"step: {a.layers} x {a.width}x{a.width} linear + Adam, batch {a.batch}, {torch.get_num_threads()} "
        f"threads; checkpoint {size / 1e6:.0f} MB, target {a.target!r}; {a.steps} steps x {a.repeat} rounds; "
        f"default writer nice {AsyncCheckpointIO.writer_niceness}"
    )
    steps: dict[str, list[list[float]]] = {n: [] for n in names}
    base: dict[str, list[list[float]]] = {n: [] for n in names}
    writes: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rates = []
    for r in range(a.repeat):
        rates.append(disk_write_rate(root))
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            base[n].append(training.steps(a.steps))  # each variant's own baseline, just before it
            times, durations, cpu_s = trial(n, all_variants[n], a, training, state, root)
            steps[n].append(times)
            writes[n] += durations
            cpu[n] += cpu_s
    load_after = os.getloadavg()
    everyone = [t for runs in base.values() for t in runs]
    rows = [
        (
            "none (baseline)",
            f"{statistics.median(statistics.mean(t) for t in everyone) * 1e3:.1f} ms",
            "1.00x",
            f"{statistics.median(p90(t) for t in everyone) * 1e3:.1f} ms",
            "1.00x",
            "",
            "",
            "",
        )
    ]
    for n in names:
        ratio = statistics.median(statistics.mean(t) / statistics.mean(b) for t, b in zip(steps[n], base[n]))
        tail = statistics.median(p90(t) / p90(b) for t, b in zip(steps[n], base[n]))
        write = lost = ""
        if writes[n]:
            w = statistics.median(writes[n])
            write = f"{w:.2f} s ({size / 1e6 / w:.0f} MB/s, {len(writes[n])} writes)"
            lost = f"{w * (1 - 1 / ratio) * 1e3:.0f} ms"
        rows.append(
            (
                all_variants[n].label + (" (default)" if all_variants[n].is_default else ""),
                f"{statistics.median(statistics.mean(t) for t in steps[n]) * 1e3:.1f} ms",
                f"{ratio:.2f}x",
                f"{statistics.median(p90(t) for t in steps[n]) * 1e3:.1f} ms",
                f"{tail:.2f}x",
                write,
                lost,
                f"{statistics.median(cpu[n]):.2f} s" if cpu[n] else "",
            )
        )
    table(
        rows,
        (
            "writer",
            "step mean",
            "ratio",
            "step p90",
            "ratio",
            "one write (beside training)",
            "training lost per write",
            "writer CPU per write",
        ),
    )
    print(
        f"ratios: each round's steps over the baseline steps run just before them, median of {a.repeat} rounds. "
        f"disk write rate (new file + fsync): {statistics.median(rates) / 1e9:.2f} GB/s (median of {len(rates)}); "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)"
    )
    spread = {
        n: [f"{statistics.mean(t) / statistics.mean(b):.2f}" for t, b in zip(steps[n], base[n])]
        for n in names
    }
    print(f"every round's step-mean ratio: {spread}")
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


def _probe(state: dict, root: str) -> str:
    path = os.path.join(root, "probe.ckpt")
    TorchCheckpointIO().save_checkpoint(state, path)
    return path


if __name__ == "__main__":
    main()
