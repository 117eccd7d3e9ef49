"""Exact resume: every checkpoint a run wrote, resumed in a new process, ends bit-identical on CPU.

The run: shuffled data, dropout, numpy/python RNG in the step, a per-step LR scheduler,
accumulate_grad_batches=3, val_check_interval=0.5, a checkpoint after every optimizer step and after
every validation (mid-epoch validations land mid gradient-accumulation), three epochs.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("exact_resume_job.py")


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _assert_exact(reference: dict, resumed: dict, label: str) -> None:
    assert resumed["global_step"] == reference["global_step"], label
    for name, value in reference["params"].items():
        assert torch.equal(value, resumed["params"][name]), f"{label}: parameter {name} differs"
    assert _equal(reference["optimizer"], resumed["optimizer"]), f"{label}: optimizer state differs"
    n = len(resumed["losses"])
    assert n > 0 or resumed["global_step"] == reference["global_step"], label
    assert resumed["losses"] == reference["losses"][len(reference["losses"]) - n :], (
        f"{label}: logged losses differ"
    )


def _full_run(tmp_path: Path, *variant: str) -> tuple[dict, list[str]]:
    _run(str(tmp_path / "full"), str(tmp_path / "full.pt"), *variant)
    reference = torch.load(tmp_path / "full.pt", weights_only=False)
    return reference, sorted(glob.glob(str(tmp_path / "full" / "ckpts" / "*.ckpt")))


def _resume_all(tmp_path: Path, checkpoints: list[str], *variant: str) -> dict:
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(checkpoints))
    _run(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), "--ckpt-list", str(listing), *variant)
    return torch.load(tmp_path / "resumed.pt", weights_only=False)


def _phases(checkpoints: list[str]) -> list[dict]:
    return [torch.load(c, weights_only=True)["loops"]["fit_loop"] for c in checkpoints]


def test_exact_resume_from_every_checkpoint(tmp_path):
    reference, checkpoints = _full_run(tmp_path)
    loops = _phases(checkpoints)
    # the run wrote every kind of checkpoint the promise is about
    assert any(s["phase"] == "after_batch" and 0 < s["batches_done"] < 16 for s in loops)  # mid-epoch
    assert any(s["batches_done"] == 16 for s in loops)  # end of epoch
    assert any(s["phase"] == "batches" and s["batches_done"] == 8 for s in loops)  # right after mid-epoch val
    assert any(s["accumulated"] > 0 for s in loops)  # mid gradient accumulation
    results = _resume_all(tmp_path, checkpoints)
    assert len(results) == len(checkpoints) >= 20
    for path, resumed in results.items():
        _assert_exact(reference, resumed, os.path.basename(path))


def test_exact_resume_each_in_a_fresh_process(tmp_path):
    reference, checkpoints = _full_run(tmp_path)
    by_name = {os.path.basename(c): c for c in checkpoints}
    chosen = [
        "val-epoch=1-step=8.ckpt",
        "epoch=0-step=3.ckpt",
        "epoch=1-step=12.ckpt",
    ]  # mid-accum, mid-epoch, end
    for name in chosen:
        _run(str(tmp_path / name), str(tmp_path / f"{name}.pt"), "--ckpt", by_name[name])
        _assert_exact(reference, torch.load(tmp_path / f"{name}.pt", weights_only=False), name)


@pytest.mark.parametrize(
    "variant",
    [("--workers", "2"), ("--datamodule",), ("--precision", "bf16-mixed")],
    ids=["num_workers=2", "stateful-datamodule", "bf16-mixed"],
)
def test_exact_resume_variants(tmp_path, variant):
    reference, checkpoints = _full_run(tmp_path, *variant)
    chosen = checkpoints[::3]  # a third of them, spread over every phase, keeps the suite quick
    results = _resume_all(tmp_path, chosen, *variant)
    for path, resumed in results.items():
        _assert_exact(reference, resumed, f"{variant} {os.path.basename(path)}")


def test_exact_resume_early_stopping_stops_at_the_same_epoch(tmp_path):
    variant = ("--early-stopping", "--max-epochs", "8")
    reference, checkpoints = _full_run(tmp_path, *variant)
    assert reference["epoch"] < 8, "the scenario must stop early"
    results = _resume_all(tmp_path, checkpoints[::4], *variant)
    for path, resumed in results.items():
        assert resumed["stopped_epoch"] == reference["stopped_epoch"], os.path.basename(path)
        _assert_exact(reference, resumed, os.path.basename(path))


BETWEEN_EPOCHS = """
import sys, torch, torch.nn.functional as F
from torch import nn
sys.path.insert(0, sys.argv[3])
from helpers import loaders
import savepoint as sp

class Drop(sp.TrainingModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

mode, out = sys.argv[1], sys.argv[2]
train, _ = loaders()
make = lambda n: sp.Trainer(max_epochs=n, enable_progress_bar=False, logger=False, enable_checkpointing=False)
torch.manual_seed(0 if mode != "resume" else 999)  # the resumed run starts from a different RNG state
model = Drop()
if mode == "full":
    make(3).fit(model, train)
elif mode == "part":
    trainer = make(2)
    trainer.fit(model, train)
    trainer.save_checkpoint(out + ".ckpt")  # after fit: the position is the start of epoch 2
else:
    make(3).fit(model, train, ckpt_path=out + ".ckpt")
torch.save(model.state_dict(), out)
"""


def test_exact_resume_from_a_save_between_epochs(tmp_path):
    tests_dir = str(Path(__file__).parents[1])

    def run(mode: str, out: Path) -> None:
        proc = subprocess.run([sys.executable, "-c", BETWEEN_EPOCHS, mode, str(out), tests_dir], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]

    run("full", tmp_path / "full.pt")
    run("part", tmp_path / "part")
    run("resume", tmp_path / "part")  # reads part.ckpt, overwrites part with the resumed weights
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "part")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


LOADER_GENERATOR = """
import sys
sys.path.insert(0, sys.argv[4])
import torch
from torch.utils.data import DataLoader
from helpers import TinyModel, make_data
import savepoint as sp

mode, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
model = TinyModel()
# The shuffle order comes from the loader's own generator, seeded by the script as users do.
train = DataLoader(make_data(64), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7))
callbacks = [sp.ModelCheckpoint(dirpath=folder, every_n_train_steps=8, save_top_k=-1, filename="{step}")]
if mode == "epochs":
    callbacks = [sp.ModelCheckpoint(dirpath=folder, save_top_k=-1, filename="{epoch}")]
trainer = sp.Trainer(max_epochs=3, callbacks=callbacks, enable_progress_bar=False, logger=False,
                     enable_model_summary=False, default_root_dir=folder)
trainer.fit(model, train, ckpt_path=None if mode != "resume" else sys.argv[5])
torch.save(model.state_dict(), out)
"""


@pytest.mark.parametrize("trigger", ["steps", "epochs"])
def test_exact_resume_at_an_epoch_boundary_with_a_loader_generator(tmp_path, trigger):
    """A save on an epoch's last batch (every_n_train_steps = the epoch's length) or at its end
    (every_n_epochs): the next epoch's shuffle order comes from the loader's generator as it was then."""
    tests_dir = str(Path(__file__).parents[1])

    def run(mode: str, out: Path, *extra: str) -> None:
        proc = subprocess.run([sys.executable, "-c", LOADER_GENERATOR, mode, str(tmp_path / "ck"), str(out), tests_dir,
                               *extra], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(trigger, tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt")
    saved = sorted(glob.glob(str(tmp_path / "ck" / "*.ckpt")), key=lambda p: torch.load(p)["global_step"])
    assert [torch.load(p)["global_step"] for p in saved] == [8, 16, 24]
    for ckpt in saved[:2]:  # the ends of epochs 0 and 1
        run("resume", tmp_path / "resumed.pt", ckpt)
        resumed = torch.load(tmp_path / "resumed.pt")
        assert all(torch.equal(full[k], resumed[k]) for k in full), os.path.basename(ckpt)
