"""A training job for the interruption tests: stopped by a signal or an exception at a chosen moment, or
resumed, each in its own process.

    python interrupt_job.py ROOT OUT [--signal NAME --at-batch B [--twice] [--plugin]]
                            [--raise PHASE --at-batch B [--callback modelcheckpoint|onexception]]
                            [--ckpt PATH | --ckpt-list FILE | --scenarios FILE]

PHASE: forward (in training_step), after_backward (on_after_backward), before_step
(on_before_optimizer_step), in_step (inside optimizer.step, after it changed the parameters). The run:
shuffled data, dropout, AdamW, accumulate_grad_batches=2, a save every 3 steps. OUT (torch.save): the
final parameters and step, or {checkpoint: result} with --ckpt-list. With --scenarios (a JSON file
{name: [args...]}) each scenario runs in turn in this process under ROOT/<name>, catching what fit raises
(one process pays torch's imports once); OUT is {name: {"raised", "code", "stdout", "warnings"}}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp
from savepoint.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from savepoint.plugins import StopSignals


class Net(sp.TrainingModule):
    def __init__(self, fault: Fault | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.fault = fault

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.body(x + float(np.random.rand()) * 1e-3), y)
        self.log("train_loss", loss, on_epoch=True)
        if self.fault:
            self.fault.hit("forward")
        return loss

    def on_after_backward(self):
        if self.fault:
            self.fault.hit("after_backward")

    def on_before_optimizer_step(self, optimizer):
        if self.fault:
            self.fault.hit("before_step")

    def configure_optimizers(self):
        fault = self.fault

        class Faulty(torch.optim.AdamW):
            def step(self, closure=None):
                out = super().step(closure)
                if fault:
                    fault.hit("in_step")  # after the update: the parameters are already changed
                return out

        return Faulty(self.parameters(), lr=0.02)


class Fault:
    """Fires once, at batch `at_batch` (counted over the run), in `phase`."""

    def __init__(self, phase: str, at_batch: int, signum: int = 0, twice: bool = False) -> None:
        self.phase, self.at_batch, self.signum, self.twice = phase, at_batch, signum, twice
        self.batch = -1

    def hit(self, phase: str) -> None:
        if phase == "forward":
            self.batch += 1
        if phase != self.phase or self.batch != self.at_batch:
            return
        if self.signum:
            os.kill(os.getpid(), self.signum)
            if self.twice:
                os.kill(os.getpid(), self.signum)
            return
        raise KeyboardInterrupt  # as if Ctrl-C landed here with no handler installed


def run(a: argparse.Namespace, root: str, ckpt: str | None, scramble: int | None = None) -> dict:
    for seed_fn in (torch.manual_seed, np.random.seed, random.seed):
        seed_fn(7)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=g)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4, shuffle=True)
    fault = None
    if a.signal or a.raise_at:
        signum = getattr(signal, a.signal) if a.signal else 0
        fault = Fault(a.raise_at or "forward", a.at_batch, signum, a.twice)
    model = Net(fault)
    callbacks: list[sp.Callback] = [
        ModelCheckpoint(
            dirpath=f"{root}/ck",
            every_n_train_steps=3,
            save_on_exception=a.callback == "modelcheckpoint",
        )
    ]
    if a.callback == "onexception":
        callbacks.append(OnExceptionCheckpoint(f"{root}/ck"))
    if scramble is not None:
        for seed_fn in (torch.manual_seed, np.random.seed, random.seed):
            seed_fn(scramble)
    trainer = sp.Trainer(
        max_epochs=3,
        default_root_dir=root,
        accumulate_grad_batches=2,
        callbacks=callbacks,
        enable_progress_bar=False,
        logger=False,
        plugins=[StopSignals(signal.SIGUSR1)] if a.plugin else None,
    )
    trainer.fit(model, data, ckpt_path=ckpt)
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "global_step": trainer.global_step,
    }


def scenarios(parser: argparse.ArgumentParser, root: str, listing: str) -> dict:
    with open(listing) as f:
        chosen = json.load(f)
    out = {}
    for name, args in chosen.items():
        a = parser.parse_args([f"{root}/{name}", "-", *args])
        buffer = io.StringIO()
        raised, code, result = None, 0, {}
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer):
            warnings.simplefilter("always")
            try:
                result = run(a, a.root, a.ckpt)
            except (sp.Preempted, KeyboardInterrupt) as err:
                raised, code = type(err).__name__, getattr(err, "code", None)
        out[name] = {"raised": raised, "code": code, "stdout": buffer.getvalue(),
                     "warnings": [str(w.message) for w in caught], **result}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--signal")
    p.add_argument("--raise", dest="raise_at")
    p.add_argument("--at-batch", type=int, default=0)
    p.add_argument("--twice", action="store_true")
    p.add_argument("--plugin", action="store_true")
    p.add_argument("--callback", default="modelcheckpoint")
    p.add_argument("--ckpt")
    p.add_argument("--ckpt-list")
    p.add_argument("--scenarios")
    a = p.parse_args()
    if a.scenarios:
        torch.save(scenarios(p, a.root, a.scenarios), a.out)
    elif a.ckpt_list:
        with open(a.ckpt_list) as f:
            paths = [line.strip() for line in f if line.strip()]
        results = {
            path: run(a, f"{a.root}/resume-{i}", path, scramble=100 + i) for i, path in enumerate(paths)
        }
        torch.save(results, a.out)
    else:
        torch.save(run(a, a.root, a.ckpt), a.out)


if __name__ == "__main__":
    main()
