"""The demo of `make demo`: train, get killed mid-run (as a preemption would), resume, use the best model.

1. starts `train_digits.py` in its own process and kills it with SIGKILL after a few epochs;
2. resumes in a new process from "last" (the newest checkpoint) and trains to the end;
3. loads the best checkpoint with `Classifier.load_from_checkpoint` and prints its accuracy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
ROOT = Path(os.environ.get("SAVEPOINT_DEMO_DIR", "demo_output"))
KILL_AFTER_EPOCH = 6


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    script = [sys.executable, str(HERE / "train_digits.py"), str(ROOT)]

    print(f"== 1. training (it will be killed after epoch {KILL_AFTER_EPOCH}, as a preemption would)")
    # Piped, the progress bar prints one plain line per epoch (after the epoch's checkpoint is saved).
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        print("   ", line.rstrip())
        if line.startswith(f"Epoch {KILL_AFTER_EPOCH}/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    print(f"   process killed (exit status {proc.returncode})")
    checkpoints = sorted((ROOT / "runs").glob("version_*/checkpoints/*.ckpt"))
    print("   checkpoints on disk:", ", ".join(p.name for p in checkpoints))

    print("== 2. resuming from 'last' in a new process")
    subprocess.run([*script, "--resume"], check=True)

    print("== 3. loading the best checkpoint")
    sys.path.insert(0, str(HERE))
    from train_digits import Classifier, Digits

    best = max(
        (p for p in (ROOT / "runs").glob("version_*/checkpoints/digits-*.ckpt")),
        key=lambda p: float(p.stem.rsplit("val_acc=", 1)[1]),
    )
    model = Classifier.load_from_checkpoint(best)
    model.eval()
    data = Digits()
    data.setup("validate")
    correct = total = 0
    with torch.no_grad():
        for x, y in data.val_dataloader():
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    print(f"   {best}")
    print(f"   hyperparameters: {dict(model.hparams)}")
    print(f"   accuracy on the {total} held-out digits: {correct / total:.1%}")


if __name__ == "__main__":
    main()
