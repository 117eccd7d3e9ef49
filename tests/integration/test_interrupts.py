"""Signals and exceptions in the middle of training: what is saved, the exit code, and an exact resume.

Every scenario runs interrupt_job.py in its own process (10 batches per epoch, accumulate_grad_batches=2,
a periodic save every 3 steps). The processes run side by side in a module fixture; each test checks
one behaviour, and every checkpoint an interruption left is resumed in a fresh process to the end of
the run, where the weights must equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("interrupt_job.py")

# Run together in one process (fit raises Preempted / KeyboardInterrupt, caught by the job).
IN_PROCESS = {
    "ref": [],
    "sigint": ["--signal", "SIGINT", "--at-batch", "14"],  # 1st batch of a window: stops mid-window
    "sigusr1": ["--signal", "SIGUSR1", "--at-batch", "15", "--plugin"],
    "forward": ["--raise", "forward", "--at-batch", "15"],
    "after_backward": ["--raise", "after_backward", "--at-batch", "15"],
    "before_step": ["--raise", "before_step", "--at-batch", "15"],
    "in_step": ["--raise", "in_step", "--at-batch", "15"],
    "onexception": ["--raise", "after_backward", "--at-batch", "15", "--callback", "onexception"],
}
# Each in its own process: what the process's exit looks like.
OWN_PROCESS = {
    "sigterm": ["--signal", "SIGTERM", "--at-batch", "15"],  # 2nd batch of a window: stops after its step
    "twice": ["--signal", "SIGTERM", "--at-batch", "15", "--twice"],
}


def _run(tmp: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(JOB), str(tmp / name), str(tmp / f"{name}.pt"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("interrupts")
    listing = tmp / "scenarios.json"
    listing.write_text(json.dumps(IN_PROCESS))
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(_run, tmp, name, *args) for name, args in OWN_PROCESS.items()}
        futures["in_process"] = pool.submit(_run, tmp, "in_process", "--scenarios", str(listing))
        procs = {name: f.result() for name, f in futures.items()}
    assert procs["in_process"].returncode == 0, procs["in_process"].stderr[-3000:]
    results = torch.load(tmp / "in_process.pt", weights_only=False)
    dirs = {name: tmp / "in_process" / name for name in IN_PROCESS} | {
        name: tmp / name for name in OWN_PROCESS
    }
    return {"tmp": tmp, "procs": procs, "results": results, "dirs": dirs, "ref": results["ref"]}


def _files(runs: dict, name: str) -> list[str]:
    return sorted(os.listdir(runs["dirs"][name] / "ck"))


def _loop(runs: dict, name: str, file: str) -> dict:
    ckpt = torch.load(runs["dirs"][name] / "ck" / file, weights_only=True)
    return {"global_step": ckpt["global_step"], **ckpt["loops"]["fit_loop"]}


def test_sigterm_exits_143_with_a_message_naming_signal_and_checkpoint(runs):
    proc = runs["procs"]["sigterm"]
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "SIGTERM" in proc.stdout
    assert f"saved to '{runs['dirs']['sigterm'] / 'ck' / 'epoch=1-step=8.ckpt'}'" in proc.stdout
    assert "Traceback" not in proc.stderr  # Preempted is a SystemExit: no traceback


@pytest.mark.parametrize(("name", "signum"), [("sigint", signal.SIGINT), ("sigusr1", signal.SIGUSR1)])
def test_signal_raises_preempted_with_code_128_plus_signum(runs, name, signum):
    result = runs["results"][name]
    assert (result["raised"], result["code"]) == ("Preempted", 128 + signum)
    assert signal.Signals(signum).name in result["stdout"] and "saved to" in result["stdout"]


def test_signal_loses_no_step_the_step_in_flight_completes(runs):
    # SIGTERM landed in the forward of batch 15 (epoch 1, batch 5): its step (the 8th) completed and was saved.
    assert _files(runs, "sigterm") == ["epoch=1-step=8.ckpt"]  # the stop save replaced step 6 in the top-k
    loop = _loop(runs, "sigterm", "epoch=1-step=8.ckpt")
    assert (loop["global_step"], loop["epoch"], loop["batches_done"], loop["accumulated"]) == (8, 1, 6, 0)


def test_signal_mid_window_saves_the_window_with_its_gradient(runs):
    loop = _loop(runs, "sigint", "epoch=1-step=7.ckpt")
    assert (loop["batches_done"], loop["accumulated"]) == (5, 1) and loop["accumulated_grads"]


def test_second_signal_exits_at_once_without_saving(runs):
    proc = runs["procs"]["twice"]
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-3000:]
    assert _files(runs, "twice") == ["epoch=1-step=6.ckpt"]  # only the periodic save


@pytest.mark.parametrize("phase", ["forward", "after_backward", "before_step"])
def test_save_on_exception_saves_the_state_before_the_batch_in_flight(runs, phase):
    assert runs["results"][phase]["raised"] == "KeyboardInterrupt"  # never swallowed
    assert "epoch=1-step=7.ckpt" in _files(runs, phase)  # Lightning's name for the exception save
    loop = _loop(runs, phase, "epoch=1-step=7.ckpt")
    # batch 15 (in-epoch 5) is not counted, and the window holds batch 14's gradient alone
    assert (loop["batches_done"], loop["accumulated"], loop["phase"]) == (5, 1, "batches")


def test_exception_inside_the_optimizer_step_saves_nothing_and_warns(runs):
    result = runs["results"]["in_step"]
    assert result["raised"] == "KeyboardInterrupt"
    assert any("inside an optimizer step" in w for w in result["warnings"])
    assert _files(runs, "in_step") == ["epoch=1-step=6.ckpt"]


def test_on_exception_checkpoint_writes_its_file(runs):
    assert "on_exception.ckpt" in _files(runs, "onexception")
    loop = _loop(runs, "onexception", "on_exception.ckpt")
    assert (loop["batches_done"], loop["accumulated"]) == (5, 1)


def test_every_interrupted_run_resumes_bit_exactly(runs):
    tmp = runs["tmp"]
    names = [n for n in [*IN_PROCESS, *OWN_PROCESS] if n != "ref"]
    left = [runs["dirs"][name] / "ck" / f for name in names for f in _files(runs, name)]
    listing = tmp / "list.txt"
    listing.write_text("\n".join(map(str, left)))
    proc = _run(tmp, "resumed", "--ckpt-list", str(listing))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp / "resumed.pt", weights_only=False)
    assert len(results) == len(left) >= 12
    for path, result in results.items():
        assert result["global_step"] == runs["ref"]["global_step"], path
        for key, value in runs["ref"]["params"].items():
            assert torch.equal(value, result["params"][key]), f"{path}: {key} differs"
