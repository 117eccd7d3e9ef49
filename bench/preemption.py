"""Preemption: a run saving every N steps gets SIGTERM at random moments and is restarted each time with
``fit(ckpt_path="last")``, alone and as 2 DDP ranks under torchrun (the signal goes to one rank).

    python bench/preemption.py [--preemptions 10] [--every 20] [--steps 400] [--ddp-preemptions 10] [--seed 0]

Reported: steps lost per preemption (steps a run had completed minus the step its checkpoint holds; goal 0),
time from the signal to the checkpoint being committed and to the process exit (goal: under one save plus
one step, beside which both are shown), the per-batch cost of agreeing on the stop under DDP, and whether
the final weights equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import table

HERE = os.path.abspath(__file__)


# -- the training job ---------------------------------------------------------------------------------------


def child(a: argparse.Namespace) -> None:
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import savepoint as sp

    class Net(sp.TrainingModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 8))

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    class Progress(sp.Callback):
        """One line per finished batch: the step and the time (read by the driver)."""

        def __init__(self, path: str) -> None:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.is_global_zero:
                os.write(self.fd, f"{trainer.global_step} {time.time():.6f}\n".encode())

    rank = int(os.environ.get("RANK", "0"))
    os.makedirs(a.root, exist_ok=True)
    with open(os.path.join(a.root, f"pid.rank{rank}"), "w") as f:
        f.write(str(os.getpid()))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(
        a.steps * 16 // 2, 64, generator=g
    )  # two epochs of a.steps // 2 batches (per rank: fewer)
    data = DataLoader(
        TensorDataset(x, torch.randint(0, 8, (len(x),), generator=g)), batch_size=16, shuffle=True
    )
    trainer = sp.Trainer(
        max_steps=a.steps if not a.ddp else a.steps // 2,
        default_root_dir=a.root,
        callbacks=[sp.ModelCheckpoint(every_n_train_steps=a.every), Progress(a.progress)],
        enable_progress_bar=False,
        logger=False,
        strategy="ddp" if a.ddp else "auto",
        accelerator="cpu",
    )
    model = Net()
    try:
        trainer.fit(model, data, ckpt_path=None if a.ref else "last")
    except sp.Preempted as stop:
        if trainer.is_global_zero:
            print("STOP " + json.dumps({"step": stop.global_step, "t": time.time()}), flush=True)
        raise
    if trainer.is_global_zero:
        torch.save(model.state_dict(), a.out)
    t0 = time.perf_counter()
    trainer.save_checkpoint(
        os.path.join(a.root, "timing.ckpt")
    )  # on every rank: the strategy decides who writes
    if trainer.is_global_zero:
        print("SAVE_S " + str(time.perf_counter() - t0), flush=True)


# -- the driver ---------------------------------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(root: str, out: str, progress: str, a: argparse.Namespace, ddp: bool, ref: bool) -> list[str]:
    args = [HERE, "--child", "--root", root, "--out", out, "--progress", progress,
            "--steps", str(a.steps), "--every", str(a.every)]  # fmt: skip
    if ref:
        args.append("--ref")
    if not ddp:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={_port()}", *args, "--ddp"]  # fmt: skip


def _steps(progress: str) -> list[tuple[int, float]]:
    if not os.path.exists(progress):
        return []
    with open(progress) as f:
        return [(int(s), float(t)) for s, t in (line.split() for line in f if line.strip())]


def _reference(a: argparse.Namespace, root: str, ddp: bool, env: dict[str, str]) -> tuple[float, float]:
    """The uninterrupted run: writes ROOT/ref.pt; returns (one save, one step) in seconds."""
    cmd = _command(os.path.join(root, "ref"), os.path.join(root, "ref.pt"), os.path.join(root, "ref.progress"), a,
                   ddp, True)  # fmt: skip
    ref = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if ref.returncode != 0:
        raise SystemExit(ref.stderr[-3000:])
    times = [t for _, t in _steps(os.path.join(root, "ref.progress"))]
    step_s = statistics.median(b - a_ for a_, b in itertools.pairwise(times))
    return float(ref.stdout.split("SAVE_S ")[1].split()[0]), step_s


def _preempt_once(proc: subprocess.Popen[str], progress: str, pid_file: str, wait_s: float) -> dict | None:
    """SIGTERM to the process in `pid_file` once training runs; None when the run ended first."""
    while len(_steps(progress)) < 2 and proc.poll() is None:  # training has started
        time.sleep(0.01)
    time.sleep(wait_s)
    with open(pid_file) as f:
        target = int(f.read())
    t_signal = time.time()
    try:
        os.kill(target, signal.SIGTERM)
    except ProcessLookupError:
        pass  # the run ended before the signal: no stop to count
    stdout, stderr = proc.communicate(timeout=300)
    t_exit = time.time()
    if "STOP " not in stdout:
        if proc.returncode == 0:
            return None
        raise SystemExit(f"a run ended without a stop (rc {proc.returncode}):\n{stderr[-3000:]}")
    stop = json.loads(stdout.split("STOP ")[1].splitlines()[0])
    done = max(s for s, _ in _steps(progress))
    return {"lost": done - stop["step"], "commit": stop["t"] - t_signal, "exit": t_exit - t_signal}


def run_series(a: argparse.Namespace, ddp: bool, preemptions: int, rng: random.Random) -> dict:
    root = tempfile.mkdtemp(prefix="savepoint-preempt-")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    save_s, step_s = _reference(a, root, ddp, env)
    run_root, out = os.path.join(root, "run"), os.path.join(root, "run.pt")
    os.makedirs(run_root, exist_ok=True)
    stops: list[dict] = []
    attempts = 0
    while True:
        progress = os.path.join(root, f"run{attempts}.progress")
        proc = subprocess.Popen(_command(run_root, out, progress, a, ddp, False), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        attempts += 1
        if len(stops) < preemptions:
            pid_file = os.path.join(run_root, f"pid.rank{rng.randint(0, 1) if ddp else 0}")  # either rank
            stop = _preempt_once(proc, progress, pid_file, rng.uniform(0, 30 * step_s))
            if stop is not None:
                stops.append(stop)
                continue
            break
        _, stderr = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"final attempt failed:\n{stderr[-3000:]}")
        break
    expected, got = torch.load(os.path.join(root, "ref.pt")), torch.load(out)
    equal = expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    series = {key: [s[key] for s in stops] for key in ("lost", "commit", "exit")}
    return {**series, "save_s": save_s, "step_s": step_s, "equal": equal, "attempts": attempts}


def flag_check_cost(iterations: int = 2000) -> float:
    """Seconds per `max_across_ranks` (the per-batch stop agreement) between 2 gloo ranks on CPU."""
    code = f"""
import time, torch.distributed as dist
from savepoint.strategies import DDPStrategy
s = DDPStrategy(accelerator="cpu"); s.setup_environment()
for _ in range(100): s.max_across_ranks(0)
t = time.perf_counter()
for _ in range({iterations}): s.max_across_ranks(0)
if dist.get_rank() == 0: print("COST", (time.perf_counter() - t) / {iterations})
s.teardown(); dist.destroy_process_group()
"""
    path = os.path.join(tempfile.mkdtemp(), "flag.py")
    with open(path, "w") as f:
        f.write(code)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_port()}", path]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    return float(out.stdout.split("COST ")[1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--root")
    ap.add_argument("--out")
    ap.add_argument("--progress")
    ap.add_argument("--ref", action="store_true")
    ap.add_argument("--ddp", action="store_true")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--preemptions", type=int, default=10)
    ap.add_argument("--ddp-preemptions", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    rng = random.Random(a.seed)
    rows = []
    series = [("1 process", False, a.preemptions), ("2 DDP ranks (torchrun)", True, a.ddp_preemptions)]
    for label, ddp, count in series:
        if count <= 0:
            continue
        r = run_series(a, ddp, count, rng)
        ms = lambda xs: f"{statistics.median(xs) * 1e3:.0f} ms (max {max(xs) * 1e3:.0f})"  # noqa: E731
        rows.append((
            label, f"{len(r['lost'])} ({r['attempts']} runs)", f"{statistics.mean(r['lost']):.1f} (max {max(r['lost'])})",
            ms(r["commit"]), ms(r["exit"]), f"{(r['save_s'] + r['step_s']) * 1e3:.0f} ms",
            "yes" if r["equal"] else "NO",
        ))  # fmt: skip
    cost = flag_check_cost()
    table(rows, ("run", "preemptions", "steps lost", "signal -> saved", "signal -> exit", "1 save + 1 step",
                 "bit-equal"))  # fmt: skip
    print(
        f"stop agreement under DDP (2 gloo ranks, one all-reduce of an int per batch): {cost * 1e6:.0f} us per batch"
    )


if __name__ == "__main__":
    main()
