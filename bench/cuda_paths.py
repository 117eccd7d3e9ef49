"""The CUDA paths: pinned staging of async saves, the CUDA RNG in exact resume, sync/async saves of GPU state.

    PYTHONPATH=src python3 bench/cuda_paths.py [--device cuda|cpu] [--parts 1,2,3] [--gb 1.0] [--repeat 3]
                                              [--train-width 4096] [--train-batch 8192] [--train-steps 120]
                                              [--train-every 30] [--dir DIR]

Three parts, each printing PASS/FAIL lines for its correctness checks and a table of figures:

1. ``AsyncCheckpointIO`` staging (``_HostBuffers``) of a ~``gb`` GB model + Adam state on the device: the host
   buffers made for CUDA tensors are pinned, reused by the next save, and hold the source bit for bit as
   soon as ``save_checkpoint`` returns (read on the host, last tensor first, before any other CUDA call).
   Timed: how long ``save_checkpoint`` blocks the caller (first save: buffers allocated; later saves: warm)
   against one plain ``tensor.to("cpu")`` copy of the state and a copy into preallocated pinned buffers, with
   the GPU->host rate of each and the ratio to the design budget (an async save blocks within 2x of one copy).
2. Exact resume on the device: a module with dropout (and ``randn_like``) trained N steps uninterrupted
   (``torch.use_deterministic_algorithms(True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set before CUDA starts);
   the same run saving mid-epoch with ``ModelCheckpoint(every_n_train_steps=)``; a resume from that file in a
   new process (this script with ``--resume-child``). Checked: the saving run equals the plain one, the
   resumed run ends with the same weights (``torch.equal``) and the same CPU and CUDA RNG states, the file
   holds the CUDA RNG state of every device, and the resumed process draws from it at its first step.
3. Sync save/load of GPU state: ``TorchCheckpointIO`` of the same state against ``torch.save`` + fsync
   (ratio), loads back (``torch.load(weights_only=True)`` as saved, to the CPU, and through the plugin to
   CUDA) against ``torch.load``; then a Trainer run on the device with ``ModelCheckpoint`` and sync or async
   saves: the mean step that saves against the other steps, every file loads with
   ``torch.load(weights_only=True)`` and holds the weights of its step, and ``trainer.save_checkpoint`` +
   ``load_from_checkpoint(map_location="cuda")`` puts the same weights on the GPU.

``--device cpu`` runs every check that does not need a GPU (smaller default sizes) and says which it
skipped. Exit status 1 when any correctness check fails (budgets are reported, not enforced). With the
``OUT`` environment variable set, the results are also written to ``$OUT/cuda_paths.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts (deterministic cuBLAS)
os.environ.setdefault("COLUMNS", "150")  # rich's tables: output captured, not a terminal

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from _common import disk_write_rate, flush_page_cache, table

import savepoint as sp
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

RESULTS: dict[str, Any] = {"checks": [], "skipped": [], "figures": {}}

# -- bookkeeping ---------------------------------------------------------------------------------------------


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{f'  ({detail})' if detail else ''}", flush=True)
    RESULTS["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
    return ok


def skip(name: str, why: str) -> None:
    print(f"SKIP  {name}  ({why})", flush=True)
    RESULTS["skipped"].append({"name": name, "why": why})


def figure(key: str, value: Any) -> None:
    RESULTS["figures"][key] = value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensors_of(obj: Any, key: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], torch.Tensor]]:
    """Every tensor of a checkpoint-like object with its position, in the order `_HostBuffers` walks it."""
    if isinstance(obj, torch.Tensor):
        yield key, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_of(v, (*key, k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from tensors_of(v, (*key, i))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaNs and signed zeros included), `b` moved to `a`'s device."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b.to(a.device)))


def nbytes(obj: Any) -> int:
    return sum(t.numel() * t.element_size() for _, t in tensors_of(obj))


def gbps(n: int, seconds: float) -> str:
    return f"{n / seconds / 1e9:.2f} GB/s" if seconds > 0 else "-"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def median_of(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def torch_save_fsync(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


# -- the state of parts 1 and 3: a stack of linear layers and its Adam state, on the device ---------------------


def build_state(gb: float, width: int, device: torch.device) -> dict[str, Any]:
    depth = max(1, round(gb * 1e9 / (3 * 4 * width * (width + 1))))
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, width, device=device)).sum().backward()
    opt.step()
    sync(device)
    return {
        "epoch": 0,
        "global_step": 1,
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
    }


class RecordingIO(TorchCheckpointIO):
    """The base of the async plugin in part 1: keeps what it was given, writes nothing (no disk in the timing)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: Any = None

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.last = checkpoint


# -- part 1 --------------------------------------------------------------------------------------------------------


def part_staging(a: argparse.Namespace, device: torch.device, state: dict[str, Any], folder: str) -> None:
    print(f"\n== 1. AsyncCheckpointIO staging of {nbytes(state) / 1e9:.2f} GB of {device.type} state ==")
    pairs = list(tensors_of(state))
    tensors = [t for _, t in pairs]
    size = nbytes(state)
    on_cuda = [t for t in tensors if t.is_cuda]
    cuda_bytes = sum(t.numel() * t.element_size() for t in on_cuda)
    print(f"{len(tensors)} tensors, {len(on_cuda)} on CUDA ({cuda_bytes / 1e9:.2f} GB), the rest on the CPU")

    def plain_copy() -> float:
        sync(device)
        t0 = time.perf_counter()
        out = [t.to("cpu", copy=True) for t in tensors]
        sync(device)
        elapsed = time.perf_counter() - t0
        del out
        return elapsed

    t_plain = median_of(plain_copy, a.repeat)

    t_pin_alloc = t_pinned = float("nan")
    if device.type == "cuda":
        t0 = time.perf_counter()
        pinned = [torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True) for t in tensors]
        t_pin_alloc = time.perf_counter() - t0

        def pinned_copy() -> float:
            sync(device)
            t0 = time.perf_counter()
            for buf, t in zip(pinned, tensors):
                buf.copy_(t, non_blocking=t.is_cuda)
            sync(device)
            return time.perf_counter() - t0

        t_pinned = median_of(pinned_copy, a.repeat)
        del pinned
    else:
        skip("copy into preallocated pinned buffers", "pinned memory needs CUDA")

    recording = RecordingIO()
    io = AsyncCheckpointIO(recording)
    snapshots: list[Any] = []
    # See the snapshot the moment save_checkpoint returns (the writer thread may not have started yet).
    buffers = getattr(io, "_buffers", None)
    if buffers is not None and hasattr(buffers, "snapshot"):
        original = buffers.snapshot

        def spy(obj: Any) -> Any:
            out = original(obj)
            snapshots.append(out)
            return out

        buffers.snapshot = spy
    path = os.path.join(folder, "staging.ckpt")

    def timed_save() -> tuple[float, Any]:
        io.wait()
        sync(device)
        t0 = time.perf_counter()
        io.save_checkpoint(state, path)
        elapsed = time.perf_counter() - t0
        if snapshots:
            return elapsed, snapshots[-1]
        io.wait()
        return elapsed, recording.last

    def check_snapshot(label: str, snap: Any, reference: list[torch.Tensor]) -> list[torch.Tensor]:
        """Read on the host right after the save returned, last tensor first (the latest copies to land)."""
        got = list(tensors_of(snap))
        ok_layout = [k for k, _ in got] == [k for k, _ in pairs]
        mismatched = [
            str(pairs[i][0])
            for i in reversed(range(min(len(got), len(reference))))
            if not same_bits(reference[i], got[i][1])
        ]
        check(
            f"{label}: the snapshot equals the source bit for bit when save_checkpoint returns",
            ok_layout and not mismatched and len(got) == len(reference),
            f"{len(got)} tensors" + (f"; differ: {mismatched[:3]}" if mismatched else ""),
        )
        return [t for _, t in got]

    reference = [t.to("cpu", copy=True) for t in tensors]
    sync(device)
    t_first, snap1 = timed_save()
    got1 = check_snapshot("first save", snap1, reference)
    io.wait()
    if device.type == "cuda":
        unpinned = [str(pairs[i][0]) for i, t in enumerate(tensors) if t.is_cuda and not got1[i].is_pinned()]
        check(
            "the host buffers of CUDA tensors are pinned",
            not unpinned,
            f"{len(on_cuda) - len(unpinned)}/{len(on_cuda)} pinned"
            + (f"; not: {unpinned[:3]}" if unpinned else ""),
        )
    else:
        skip("the host buffers of CUDA tensors are pinned", "no CUDA tensors on --device cpu")
    check(
        "no snapshot tensor is on the GPU", all(t.device.type == "cpu" for t in got1), f"{len(got1)} tensors"
    )
    ptrs1 = [t.data_ptr() for t in got1]

    with torch.no_grad():  # the state moves on between saves, as training does
        for t in tensors:
            if t.is_floating_point():
                t.add_(1.0)
    reference = [t.to("cpu", copy=True) for t in tensors]
    sync(device)
    t_second, snap2 = timed_save()
    got2 = check_snapshot("second save (state changed since)", snap2, reference)
    reused = sum(p == t.data_ptr() for p, t in zip(ptrs1, got2))
    check(
        "the second save reuses the first save's host buffers", reused == len(got2), f"{reused}/{len(got2)}"
    )
    if device.type == "cuda":
        check(
            "the reused buffers are still pinned",
            all(got2[i].is_pinned() for i, t in enumerate(tensors) if t.is_cuda),
        )
    del reference, got1, got2, snap1, snap2
    snapshots.clear()

    t_warm = statistics.median(timed_save()[0] for _ in range(a.repeat))
    io.teardown()
    snapshots.clear()

    rows = [
        ("one plain tensor.to('cpu') copy of the state", ms(t_plain), gbps(size, t_plain), "1.00x"),
    ]
    if device.type == "cuda":
        rows.append(("allocating pinned buffers for the state", ms(t_pin_alloc), gbps(size, t_pin_alloc), ""))
        rows.append(
            (
                "copy into preallocated pinned buffers",
                ms(t_pinned),
                gbps(size, t_pinned),
                f"{t_pinned / t_plain:.2f}x",
            )
        )
    rows.append(
        (
            "AsyncCheckpointIO.save_checkpoint blocks, first save",
            ms(t_first),
            gbps(size, t_first),
            f"{t_first / t_plain:.2f}x",
        )
    )
    rows.append(
        (
            "AsyncCheckpointIO.save_checkpoint blocks, warm buffers",
            ms(t_warm),
            gbps(size, t_warm),
            f"{t_warm / t_plain:.2f}x",
        )
    )
    table(rows, ("what (device -> host)", "time (median)", "rate", "vs plain copy"))
    verdict = "within" if t_warm <= 2 * t_plain else "OVER"
    line = f"budget: a warm async save blocks {t_warm / t_plain:.2f}x one plain copy of the state (budget 2x): {verdict}"
    if device.type == "cuda":
        line += f"; {t_warm / t_pinned:.2f}x a copy into preallocated pinned buffers"
    print(line)
    figure(
        "staging",
        {
            "bytes": size,
            "cuda_bytes": cuda_bytes,
            "tensors": len(tensors),
            "plain_copy_s": t_plain,
            "pinned_alloc_s": t_pin_alloc,
            "pinned_copy_s": t_pinned,
            "async_first_blocked_s": t_first,
            "async_second_blocked_s": t_second,
            "async_warm_blocked_s": t_warm,
            "warm_over_plain": t_warm / t_plain,
            "warm_over_pinned": t_warm / t_pinned if device.type == "cuda" else None,
            "within_budget_2x": t_warm <= 2 * t_plain,
        },
    )


# -- part 2: exact resume with dropout on the device ------------------------------------------------------------------


class DropNet(sp.TrainingModule):
    def __init__(self, width: int = 256, p: float = 0.3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(p), nn.Linear(width, width))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        out = self.net(x)
        return F.mse_loss(out + 0.01 * torch.randn_like(out), x)  # draws from the device RNG besides dropout

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def resume_data(a: argparse.Namespace, loader_seed: int) -> DataLoader:
    n = a.resume_batches * a.resume_batch
    x = torch.randn(n, a.resume_width, generator=torch.Generator().manual_seed(123))
    return DataLoader(
        TensorDataset(x),
        batch_size=a.resume_batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(loader_seed),
    )


def resume_trainer(
    a: argparse.Namespace, device: torch.device, folder: str, callbacks: list[Any], plugins: Any = None
) -> sp.Trainer:
    return sp.Trainer(
        plugins=plugins,
        accelerator=device.type,
        devices=1,
        max_steps=a.resume_steps,
        max_epochs=-1,
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, sp.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
    )


def mid_checkpoint(a: argparse.Namespace, dirpath: str) -> sp.ModelCheckpoint:
    return sp.ModelCheckpoint(
        dirpath=dirpath, filename="mid-{step}", every_n_train_steps=a.resume_save_at, save_top_k=-1
    )


def rng_now(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def cpu_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class RngAtStep(sp.Callback):
    """The RNG states at the start of the first batch after global step `step` (None: the first batch)."""

    def __init__(self, device: torch.device, step: int | None = None) -> None:
        self.device, self.step = device, step
        self.state: dict[str, torch.Tensor] | None = None
        self.at_step = -1
        self.draws: dict[str, torch.Tensor] = {}
        self.saved_cuda: torch.Tensor | None = None  # the child's: the state the checkpoint says "now"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.state is not None or (self.step is not None and trainer.global_step != self.step):
            return
        self.state, self.at_step = rng_now(self.device), trainer.global_step
        if self.device.type == "cuda":  # draws that leave the run's RNG as it was
            index = self.device.index or 0
            with torch.random.fork_rng(devices=[index]):
                self.draws["current"] = torch.rand(8, device=self.device).cpu()
            if self.saved_cuda is not None:
                with torch.random.fork_rng(devices=[index]):
                    torch.cuda.set_rng_state(self.saved_cuda, self.device)
                    self.draws["saved"] = torch.rand(8, device=self.device).cpu()


def run_child(a: argparse.Namespace) -> None:
    """``--resume-child``: resume from ``--ckpt`` in this new process and write what the parent compares."""
    device = torch.device(a.device, 0) if a.device == "cuda" else torch.device("cpu")
    torch.use_deterministic_algorithms(True)
    sp.seed_everything(4321, verbose=False)  # not the parent's seed: only the checkpoint may set the streams
    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    probe = RngAtStep(device)
    now = ckpt["rng_states"][0]["now"]
    if device.type == "cuda" and "cuda" in now:
        probe.saved_cuda = now["cuda"][device.index or 0]
    trainer = resume_trainer(a, device, a.child_folder, [probe, mid_checkpoint(a, a.child_folder)])
    model = DropNet(a.resume_width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. few DataLoader workers
        trainer.fit(model, resume_data(a, loader_seed=999), ckpt_path=a.ckpt)
    torch.save(
        {
            "weights": cpu_weights(model),
            "rng_end": rng_now(device),
            "first_batch_rng": probe.state,
            "first_batch_step": probe.at_step,
            "draws": probe.draws,
            "global_step": trainer.global_step,
            "param_device": str(next(model.parameters()).device),
        },
        a.child_out,
    )


def part_resume(a: argparse.Namespace, device: torch.device, folder: str) -> None:
    print(
        f"\n== 2. exact resume on {device.type}: {a.resume_steps} steps of {a.resume_batches} batches per epoch, "
        f"saved at step {a.resume_save_at}, resumed in a new process =="
    )
    torch.use_deterministic_algorithms(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sp.seed_everything(0, verbose=False)
            plain_model = DropNet(a.resume_width)
            t0 = time.perf_counter()
            resume_trainer(a, device, os.path.join(folder, "plain"), []).fit(plain_model, resume_data(a, 0))
            t_plain = time.perf_counter() - t0
            plain_weights, plain_rng = cpu_weights(plain_model), rng_now(device)

            ckdir = os.path.join(folder, "resume-ck")
            sp.seed_everything(0, verbose=False)
            saving_model = DropNet(a.resume_width)
            probe = RngAtStep(device, step=a.resume_save_at)
            t0 = time.perf_counter()
            trainer = resume_trainer(
                a, device, os.path.join(folder, "saving"), [probe, mid_checkpoint(a, ckdir)]
            )
            trainer.fit(saving_model, resume_data(a, 0))
            t_saving = time.perf_counter() - t0
            saving_weights, saving_rng = cpu_weights(saving_model), rng_now(device)

            ckdir_async = os.path.join(folder, "resume-ck-async")
            sp.seed_everything(0, verbose=False)
            async_model = DropNet(a.resume_width)
            resume_trainer(
                a,
                device,
                os.path.join(folder, "async"),
                [mid_checkpoint(a, ckdir_async)],
                AsyncCheckpointIO(),
            ).fit(async_model, resume_data(a, 0))
            async_weights = cpu_weights(async_model)
    finally:
        torch.use_deterministic_algorithms(False)

    check(
        "the run on the device trained there",
        str(next(plain_model.parameters()).device).startswith(device.type),
        str(next(plain_model.parameters()).device),
    )
    check(
        "a run that saves mid-epoch ends with the weights of the run that does not",
        all(same_bits(plain_weights[k], saving_weights[k]) for k in plain_weights),
    )
    check(
        "... and with the same RNG states",
        all(same_bits(plain_rng[k], saving_rng[k]) for k in plain_rng),
        ", ".join(plain_rng),
    )
    check(
        "a run that saves with AsyncCheckpointIO ends with the same weights too",
        all(same_bits(plain_weights[k], async_weights[k]) for k in plain_weights),
    )
    files = sorted(glob.glob(os.path.join(ckdir, "*.ckpt")))
    by_step: dict[int, str] = {}
    loaded_ok = True
    for f in files:
        try:
            ck = torch.load(f, weights_only=True)  # as saved: no map_location
            by_step[int(ck["global_step"])] = f
        except Exception as err:
            loaded_ok = False
            print(f"  {os.path.basename(f)}: {type(err).__name__}: {err}")
    check(
        "every ModelCheckpoint file loads with torch.load(weights_only=True)",
        loaded_ok and bool(files),
        ", ".join(os.path.basename(f) for f in files),
    )
    mid = by_step.get(a.resume_save_at)
    if not check(
        f"a checkpoint of step {a.resume_save_at} exists (mid-epoch)", mid is not None, str(sorted(by_step))
    ):
        return
    ck = torch.load(mid, map_location="cpu", weights_only=True)
    async_files = glob.glob(os.path.join(ckdir_async, f"mid-step={a.resume_save_at}*.ckpt"))
    if check("the async run wrote its checkpoint of that step", len(async_files) == 1, str(async_files)):
        ck_async = torch.load(async_files[0], map_location="cpu", weights_only=True)
        keys = ("state_dict", "optimizer_states", "rng_states")  # not the callbacks' (keyed by paths)
        ours = list(tensors_of({k: ck[k] for k in keys}))
        theirs = list(tensors_of({k: ck_async[k] for k in keys}))
        differ = [str(k) for (k, x), (j, y) in zip(ours, theirs) if k != j or not same_bits(x, y)]
        check(
            "its tensors (weights, Adam state, RNG states) equal the sync save's, bit for bit",
            len(ours) == len(theirs) and not differ,
            f"{len(ours)} vs {len(theirs)} tensors" + (f"; differ: {differ[:3]}" if differ else ""),
        )
        as_saved = [torch.load(f, weights_only=True)["state_dict"] for f in (mid, async_files[0])]
        sync_on, async_on = (sorted({str(t.device) for _, t in tensors_of(x)}) for x in as_saved)
        print(f"  weights as saved: sync file on {sync_on}, async file on {async_on}")
    loop = ck["loops"]["fit_loop"]
    check(
        "it was saved mid-epoch",
        loop["batches_done"] % a.resume_batches != 0,
        f"epoch {loop['epoch']}, {loop['batches_done']} of {a.resume_batches} batches done",
    )
    rank = ck["rng_states"][0]
    if device.type == "cuda":
        count = torch.cuda.device_count()
        now, start = rank["now"], rank.get("epoch_start") or {}
        check(
            "the checkpoint holds the CUDA RNG state of every device (now and at the epoch start)",
            "cuda" in now
            and "cuda" in start
            and len(now["cuda"]) == count
            and all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in now["cuda"]),
            f"now: {len(now.get('cuda', []))}, epoch start: {len(start.get('cuda', []))}, devices: {count}",
        )
        index = device.index or 0
        check(
            "its CUDA state is the state the saving run drew from next",
            "cuda" in now and probe.state is not None and same_bits(probe.state["cuda"], now["cuda"][index]),
            f"probed at step {probe.at_step}",
        )
    else:
        skip("the checkpoint holds the CUDA RNG state", "--device cpu")
    check(
        "its CPU RNG state is the state the saving run drew from next",
        probe.state is not None and same_bits(probe.state["cpu"], rank["now"]["torch"]),
    )

    out = os.path.join(folder, "child.pt")
    child_folder = os.path.join(folder, "child")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--resume-child",
        "--device",
        device.type,
        "--ckpt",
        mid,
        "--child-out",
        out,
        "--child-folder",
        child_folder,
        *(f"--{k.replace('_', '-')}={getattr(a, k)}" for k in RESUME_FLAGS),
    ]
    t0 = time.perf_counter()
    env = dict(os.environ)  # the savepoint this process imported, whatever the working folder
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(sp.__file__))), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.child_timeout, env=env)
    t_child = time.perf_counter() - t0
    if not check(
        "the resume in a new process ran",
        proc.returncode == 0 and os.path.exists(out),
        f"exit {proc.returncode}",
    ):
        print(proc.stdout[-3000:])
        print(proc.stderr[-6000:])
        return
    child = torch.load(out, weights_only=True)
    check(
        "the resumed process ran on the device",
        child["param_device"].startswith(device.type),
        child["param_device"],
    )
    check(
        f"it resumed at step {a.resume_save_at} and ran to {a.resume_steps}",
        child["first_batch_step"] == a.resume_save_at and child["global_step"] == a.resume_steps,
        f"first step after {child['first_batch_step']}, ended at {child['global_step']}",
    )
    differ = [k for k in plain_weights if not same_bits(plain_weights[k], child["weights"][k])]
    check(
        "exact resume: the resumed run's final weights equal the uninterrupted run's (torch.equal, bitwise)",
        not differ,
        f"{len(plain_weights) - len(differ)}/{len(plain_weights)} tensors equal"
        + (
            f"; max |diff| {max((plain_weights[k] - child['weights'][k]).abs().max().item() for k in differ):.3g}"
            if differ
            else ""
        ),
    )
    check(
        "its CPU RNG state at the first resumed step is the checkpoint's",
        child["first_batch_rng"] is not None
        and same_bits(child["first_batch_rng"]["cpu"], rank["now"]["torch"]),
    )
    check(
        "it ends with the CPU RNG state of the uninterrupted run",
        same_bits(plain_rng["cpu"], child["rng_end"]["cpu"]),
    )
    if device.type == "cuda":
        index = device.index or 0
        first = child["first_batch_rng"]
        check(
            "the CUDA RNG state is restored: at the first resumed step it is the checkpoint's",
            first is not None
            and "cuda" in first
            and "cuda" in rank["now"]
            and same_bits(first["cuda"], rank["now"]["cuda"][index]),
        )
        draws = child["draws"]
        check(
            "torch.rand on CUDA after the restore draws what the checkpoint's state draws",
            "current" in draws and "saved" in draws and torch.equal(draws["current"], draws["saved"]),
            f"{draws.get('current', torch.empty(0))[:3].tolist()}",
        )
        check(
            "it ends with the CUDA RNG state of the uninterrupted run",
            same_bits(plain_rng["cuda"], child["rng_end"]["cuda"]),
        )
    else:
        skip("the CUDA RNG state is restored in the new process", "--device cpu")
    table(
        [
            (f"uninterrupted, {a.resume_steps} steps", f"{t_plain:.2f} s"),
            (f"saving at step {a.resume_save_at}", f"{t_saving:.2f} s"),
            ("resume in a new process (start, import, CUDA init, fit)", f"{t_child:.2f} s"),
        ],
        ("run", "wall time"),
    )
    figure("resume", {"plain_s": t_plain, "saving_s": t_saving, "child_s": t_child})


RESUME_FLAGS = ("resume_width", "resume_batch", "resume_batches", "resume_steps", "resume_save_at")


# -- part 3: sync save/load of GPU state; a Trainer run saving sync or async ---------------------------------------


class OneLinear(sp.TrainingModule):
    """One ``width x width`` layer trained on a fixed input made on the device (no host data on the path)."""

    def __init__(self, width: int, batch: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, width)
        self._x: torch.Tensor | None = None

    def training_step(self, batch, batch_idx):
        if self._x is None or self._x.device != self.layer.weight.device:
            g = torch.Generator(device=self.layer.weight.device).manual_seed(0)
            self._x = torch.randn(
                self.hparams.batch, self.hparams.width, device=self.layer.weight.device, generator=g
            )
        return F.mse_loss(self.layer(self._x), self._x)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-4)


class StepTimer(sp.Callback):
    """Wall time from one batch start to the next (device synchronized at each): the step and any save."""

    def __init__(self, every: int, device: torch.device) -> None:
        self.every, self.device = every, device
        self.saving: list[float] = []
        self.plain: list[float] = []
        self._t0: float | None = None
        self._step = 0

    def _close(self) -> None:
        sync(self.device)
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


class WeightsAtSave(sp.Callback):
    """A device-side copy of the weights at every step that saves, to compare with the files."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self.at[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def trainer_run(
    a: argparse.Namespace, device: torch.device, mode: str, folder: str, steps: int
) -> tuple[sp.Trainer, OneLinear, StepTimer, WeightsAtSave, list[str], float]:
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(0)
    timer = StepTimer(a.train_every if mode != "none" else 0, device)
    weights = WeightsAtSave(a.train_every)
    callbacks: list[sp.Callback] = [timer, weights]
    plugins: list[Any] = []
    if mode != "none":
        callbacks.append(
            sp.ModelCheckpoint(
                dirpath=os.path.join(folder, "ck"),
                filename="s{step}",
                every_n_train_steps=a.train_every,
                save_top_k=-1,
            )
        )
        plugins.append(AsyncCheckpointIO() if mode == "async" else TorchCheckpointIO())
    trainer = sp.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        callbacks=callbacks,
        plugins=plugins or None,
        enable_checkpointing=mode != "none",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
    )
    model = OneLinear(a.train_width, a.train_batch)
    data = DataLoader(TensorDataset(torch.zeros(steps)), batch_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        trainer.fit(model, data)
        total = time.perf_counter() - t0
    behind = [str(w.message) for w in caught if "still being written" in str(w.message)]
    return trainer, model, timer, weights, behind, total


def part_sync_and_trainer(
    a: argparse.Namespace, device: torch.device, state: dict[str, Any], folder: str
) -> None:
    size = nbytes(state)
    print(
        f"\n== 3. sync save/load of {size / 1e9:.2f} GB of {device.type} state; Trainer runs saving on {device.type} =="
    )
    rate = disk_write_rate(folder)
    print(f"disk write rate under {folder} (new file + fsync): {rate / 1e9:.2f} GB/s")
    ours_path, ref_path = os.path.join(folder, "sync.ckpt"), os.path.join(folder, "ref.pt")
    io = TorchCheckpointIO()
    t_ours: list[float] = []
    t_ref: list[float] = []
    for _ in range(a.repeat):  # interleaved; new files each time
        for path, times, save in (
            (ours_path, t_ours, lambda p: io.save_checkpoint(state, p)),
            (ref_path, t_ref, lambda p: torch_save_fsync(state, p)),
        ):
            if os.path.exists(path):
                os.unlink(path)
            flush_page_cache()
            sync(device)
            t0 = time.perf_counter()
            save(path)
            times.append(time.perf_counter() - t0)
    io.teardown()
    s_ours, s_ref = statistics.median(t_ours), statistics.median(t_ref)

    pairs = list(tensors_of(state))
    loaded = torch.load(ours_path, weights_only=True)  # as saved
    got = list(tensors_of(loaded))
    check(
        "a sync save of the state loads with torch.load(weights_only=True), bit for bit, on the devices it was saved from",
        [k for k, _ in got] == [k for k, _ in pairs]
        and all(t.device == s.device and same_bits(s, t) for (_, s), (_, t) in zip(pairs, got)),
        f"{len(got)} tensors; state_dict on {next(iter(loaded['state_dict'].values())).device}",
    )
    del loaded, got
    default = TorchCheckpointIO().load_checkpoint(ours_path)  # no map_location: where they were saved from
    check(
        "TorchCheckpointIO().load_checkpoint(path) loads it as saved, bit for bit",
        all(t.device == s.device and same_bits(s, t) for (_, s), (_, t) in zip(pairs, tensors_of(default))),
    )
    del default
    to_cpu = TorchCheckpointIO().load_checkpoint(ours_path, map_location="cpu")
    check(
        "TorchCheckpointIO().load_checkpoint(path, map_location='cpu') gives CPU tensors, bit for bit",
        all(t.device.type == "cpu" and same_bits(s, t) for (_, s), (_, t) in zip(pairs, tensors_of(to_cpu))),
    )
    del to_cpu

    def load_ours() -> float:
        sync(device)
        t0 = time.perf_counter()
        out = io.load_checkpoint(ours_path, map_location=device)
        sync(device)
        elapsed = time.perf_counter() - t0
        del out
        return elapsed

    def load_ref() -> float:
        sync(device)
        t0 = time.perf_counter()
        out = torch.load(ref_path, map_location=device, weights_only=True)
        sync(device)
        elapsed = time.perf_counter() - t0
        del out
        return elapsed

    l_ours, l_ref = load_ours(), load_ref()  # both files in the page cache from here (warm loads compared)
    l_ours = median_of(load_ours, a.repeat)
    l_ref = median_of(load_ref, a.repeat)
    on_device = io.load_checkpoint(ours_path, map_location=device)
    check(
        f"TorchCheckpointIO().load_checkpoint(map_location={device.type!r}) puts it on the device, bit for bit",
        all(
            t.device.type == device.type and same_bits(s, t)
            for (_, s), (_, t) in zip(pairs, tensors_of(on_device))
        ),
    )
    del on_device
    for p in (ours_path, ref_path):
        os.unlink(p)
    table(
        [
            (
                "sync save, new file (TorchCheckpointIO: atomic, fsync)",
                f"{s_ours:.2f} s",
                f"{s_ref:.2f} s torch.save + fsync",
                f"{s_ours / s_ref:.2f}x",
                "1.1x",
            ),
            (
                f"load to {device.type}, page cache warm (CRC checked)",
                f"{l_ours:.2f} s",
                f"{l_ref:.2f} s torch.load(map_location)",
                f"{l_ours / l_ref:.2f}x",
                "1.3x",
            ),
        ],
        ("what", "savepoint", "reference", "ratio", "budget"),
    )
    print(
        f"every sync save: {[f'{t:.2f}' for t in t_ours]} s; every torch.save: {[f'{t:.2f}' for t in t_ref]} s"
    )
    figure(
        "sync",
        {
            "bytes": size,
            "disk_write_rate": rate,
            "save_s": s_ours,
            "torch_save_fsync_s": s_ref,
            "save_ratio": s_ours / s_ref,
            "load_s": l_ours,
            "torch_load_s": l_ref,
            "load_ratio": l_ours / l_ref,
        },
    )

    # -- the Trainer ---------------------------------------------------------------------------------------------
    ckpt_mb = 3 * 4 * a.train_width * (a.train_width + 1) / 1e6
    print(
        f"\nTrainer: {a.train_width}x{a.train_width} linear + Adam (~{ckpt_mb:.0f} MB checkpoint), batch {a.train_batch}, "
        f"{a.train_steps} steps, ModelCheckpoint every {a.train_every} (save_top_k=-1)"
    )
    trainer_run(
        a, device, "none", os.path.join(folder, "warmup"), min(a.train_steps, 10)
    )  # CUDA/cuBLAS start
    rows = []
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("none", "sync", "async"):
        run_folder = os.path.join(folder, f"train-{mode}")
        trainer, model, timer, weights, behind, total = trainer_run(
            a, device, mode, run_folder, a.train_steps
        )
        plain = statistics.mean(timer.plain[1:] or timer.plain)  # the first step includes the loop's start
        saving = timer.saving
        later = statistics.mean(saving[1:]) if len(saving) > 1 else float("nan")
        runs[mode] = {
            "total_s": total,
            "plain_step_s": plain,
            "saving_steps_s": saving,
            "behind_warnings": len(behind),
        }
        if mode == "none":
            rows.append((mode, f"{total:.2f} s", "", "", ms(plain), ""))
            continue
        extra = later - plain
        rows.append(
            (
                mode,
                f"{total:.2f} s",
                ms(saving[0]) if saving else "-",
                ms(later),
                ms(plain),
                f"{extra * 1e3:+.1f} ms" if extra == extra else "-",
            )
        )
        files = sorted(glob.glob(os.path.join(run_folder, "ck", "*.ckpt")))
        steps_found: dict[int, bool] = {}
        errors = []
        for f in files:
            try:
                ck = torch.load(f, weights_only=True)
            except Exception as err:
                errors.append(f"{os.path.basename(f)}: {type(err).__name__}: {err}")
                continue
            step = int(ck["global_step"])
            at = weights.at.get(step)
            steps_found[step] = at is not None and all(same_bits(at[k], ck["state_dict"][k]) for k in at)
            runs[mode].setdefault(
                "file_devices", sorted({str(t.device) for _, t in tensors_of(ck["state_dict"])})
            )
        expected = list(range(a.train_every, a.train_steps + 1, a.train_every))
        check(
            f"{mode}: every ModelCheckpoint file loads with torch.load(weights_only=True)",
            not errors and bool(files),
            f"{len(files)} files, tensors on {runs[mode].get('file_devices')}"
            + (f"; {errors[:2]}" if errors else ""),
        )
        check(
            f"{mode}: a file for every save point, each holding the weights of its step bit for bit",
            sorted(steps_found) == expected and all(steps_found.values()),
            f"steps {sorted(steps_found)}; equal: {sum(steps_found.values())}/{len(steps_found)}",
        )
        if behind:
            print(f"  {mode}: training waited for the previous write: {behind[0][:200]}")
        if mode == "sync":
            manual = os.path.join(run_folder, "manual.ckpt")
            sync(device)
            t0 = time.perf_counter()
            trainer.save_checkpoint(manual)
            runs[mode]["trainer_save_checkpoint_s"] = time.perf_counter() - t0
            ok_load = True
            try:
                torch.load(manual, weights_only=True)
            except Exception as err:
                ok_load = False
                print(f"  {type(err).__name__}: {err}")
            check("trainer.save_checkpoint writes a file torch.load(weights_only=True) loads", ok_load)
            source = {k: v.detach() for k, v in model.state_dict().items()}
            location = "cuda" if device.type == "cuda" else "cpu"
            back = OneLinear.load_from_checkpoint(manual, map_location=location)
            params_on = {p.device.type for p in back.parameters()}
            check(
                f"load_from_checkpoint(map_location={location!r}) puts the weights on {location}, bit for bit",
                params_on == {location}
                and all(same_bits(source[k], v) for k, v in back.state_dict().items()),
                f"parameters on {sorted(params_on)}",
            )
            plain_back = OneLinear.load_from_checkpoint(manual)
            default_on = sorted({p.device.type for p in plain_back.parameters()})
            check(
                "load_from_checkpoint() without map_location gives the same weights",
                all(same_bits(source[k], v) for k, v in plain_back.state_dict().items()),
                f"parameters on {default_on}",
            )
            runs[mode]["load_from_checkpoint_default_device"] = default_on
    table(
        rows,
        (
            "checkpoints",
            "fit time",
            "first step that saves",
            "later steps that save",
            "other steps",
            "extra per save",
        ),
    )
    if "async" in runs and runs["async"]["saving_steps_s"][1:]:
        later = statistics.mean(runs["async"]["saving_steps_s"][1:])
        extra = later - runs["async"]["plain_step_s"]
        copy_s = figures_copy_rate(ckpt_mb * 1e6)
        if copy_s:
            print(
                f"async: a step that saves takes {extra * 1e3:+.1f} ms over the others; one plain copy of the "
                f"{ckpt_mb:.0f} MB state at the rate of part 1 takes {ms(copy_s)} ({extra / copy_s:.2f}x; budget 2x)"
            )
    figure("trainer", runs)


def figures_copy_rate(n: float) -> float | None:
    staging = RESULTS["figures"].get("staging")
    if not staging:
        return None
    return n / (staging["bytes"] / staging["plain_copy_s"])


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1,3")
    ap.add_argument(
        "--gb", type=float, default=None, help="state size of parts 1 and 3 (cuda: 1.0, cpu: 0.05)"
    )
    ap.add_argument(
        "--width", type=int, default=None, help="layer width of that state (cuda: 4096, cpu: 1024)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-width", type=int, default=None, help="cuda: 4096 (~201 MB checkpoint), cpu: 256")
    ap.add_argument("--train-batch", type=int, default=None, help="cuda: 8192, cpu: 64")
    ap.add_argument("--train-steps", type=int, default=None, help="cuda: 120, cpu: 40")
    ap.add_argument("--train-every", type=int, default=None, help="cuda: 30, cpu: 10")
    ap.add_argument("--resume-width", type=int, default=256)
    ap.add_argument("--resume-batch", type=int, default=32)
    ap.add_argument("--resume-batches", type=int, default=16, help="batches per epoch")
    ap.add_argument("--resume-steps", type=int, default=40)
    ap.add_argument("--resume-save-at", type=int, default=20)
    ap.add_argument("--child-timeout", type=float, default=90.0)
    ap.add_argument(
        "--dir", default=None, help="working folder (default: a new one under /tmp, removed after)"
    )
    ap.add_argument("--resume-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--child-folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.resume_child:
        run_child(a)
        return 0

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda but torch.cuda.is_available() is False; run with --device cpu for a dry run")
        return 2
    defaults = {
        "gb": (1.0, 0.05),
        "width": (4096, 1024),
        "train_width": (4096, 256),
        "train_batch": (8192, 64),
        "train_steps": (120, 40),
        "train_every": (30, 10),
    }
    for key, (on_cuda, on_cpu) in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, on_cuda if cuda else on_cpu)
    parts = {int(p) for p in a.parts.split(",") if p.strip()}
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")

    started = time.perf_counter()
    info = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "savepoint": sp.__version__,
        "cpus": os.cpu_count(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if cuda:
        info["device_count"] = torch.cuda.device_count()
        info["memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1)
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    RESULTS["info"] = info
    RESULTS["args"] = vars(a)

    root = a.dir or tempfile.mkdtemp(prefix="savepoint-cuda-", dir="/tmp")
    os.makedirs(root, exist_ok=True)
    timings: list[tuple[str, str]] = []

    def part(name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as err:
            traceback.print_exc()
            check(f"{name} ran to the end", False, f"{type(err).__name__}: {err}")
        timings.append((name, f"{time.perf_counter() - t0:.1f} s"))

    try:
        if 2 in parts:
            part("2. exact resume", lambda: part_resume(a, device, os.path.join(root, "resume")))
        state: dict[str, Any] = {}
        if parts & {1, 3}:
            t0 = time.perf_counter()
            state = build_state(a.gb, a.width, device)
            timings.append(("building the state", f"{time.perf_counter() - t0:.1f} s"))
        if 1 in parts:
            part("1. staging", lambda: part_staging(a, device, state, root))
        if 3 in parts:
            part("3. sync save/load, Trainer", lambda: part_sync_and_trainer(a, device, state, root))
    finally:
        if a.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    total = time.perf_counter() - started
    timings.append(("total", f"{total:.1f} s"))
    print()
    table(timings, ("part", "wall time"))
    failed = [c for c in RESULTS["checks"] if not c["ok"]]
    RESULTS["total_s"] = total
    RESULTS["passed"] = not failed
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "cuda_paths.json"), "w") as f:
            json.dump(RESULTS, f, indent=2, default=str)
        print(f"results: {os.path.join(out, 'cuda_paths.json')}")
    n, s = len(RESULTS["checks"]), len(RESULTS["skipped"])
    if failed:
        print(f"FAILED: {len(failed)} of {n} checks ({s} skipped):")
        for c in failed:
            print(f"  FAIL  {c['name']}  ({c['detail']})")
        return 1
    print(f"ALL PASSED: {n} checks ({s} skipped) on {info['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
