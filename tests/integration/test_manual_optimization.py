"""Manual optimization (automatic_optimization = False): stepping, global_step, hooks, and exact resume."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import TinyModel, loaders, quiet_trainer

GAN_JOB = Path(__file__).with_name("gan_job.py")


def _gan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GAN_JOB), *args], capture_output=True, text=True, timeout=300)


def _assert_same(reference: dict, resumed: dict, label: str) -> None:
    assert resumed["global_step"] == reference["global_step"], label
    for name, value in reference["params"].items():
        assert torch.equal(value, resumed["params"][name]), f"{label}: {name} differs"
    for ref_opt, res_opt in zip(reference["optimizers"], resumed["optimizers"]):
        for key, state in ref_opt["state"].items():
            for k, v in state.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(res_opt["state"][key][k])), label
    assert reference["scheduler"] == resumed["scheduler"], label
    n = len(resumed["losses"])
    assert resumed["losses"] == reference["losses"][len(reference["losses"]) - n :], label


@pytest.fixture(scope="module")
def gan_reference(tmp_path_factory) -> tuple[dict, list[str]]:
    root = tmp_path_factory.mktemp("gan")
    full = _gan(str(root / "full"), str(root / "full.pt"))
    assert full.returncode == 0, full.stderr[-3000:]
    checkpoints = sorted(p for p in glob.glob(str(root / "full" / "ckpts" / "*.ckpt")) if "last" not in p)
    return torch.load(root / "full.pt", weights_only=False), checkpoints


def test_manual_optimization_gan_resumes_bit_exactly_from_its_checkpoints(tmp_path, gan_reference):
    reference, checkpoints = gan_reference
    assert reference["global_step"] == 3 * 8 * 2  # two optimizer steps per batch, as Lightning counts
    assert len(checkpoints) == 12  # every 4 optimizer steps = every 2 batches
    chosen = checkpoints[1::3]  # mid-epoch and epoch ends, every epoch
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(chosen))
    proc = _gan(str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), "--ckpt-list", str(listing))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path, resumed in torch.load(tmp_path / "resumed.pt", weights_only=False).items():
        _assert_same(reference, resumed, os.path.basename(path))


def test_manual_optimization_gan_crashed_mid_epoch_resumes_from_last_bit_exactly(tmp_path, gan_reference):
    crashed = _gan(str(tmp_path / "run"), str(tmp_path / "crashed.pt"), "--crash-at-batch", "12")
    assert crashed.returncode == 3, crashed.stderr[-3000:]
    resumed = _gan(str(tmp_path / "run"), str(tmp_path / "resumed.pt"), "--ckpt", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = torch.load(tmp_path / "resumed.pt", weights_only=False)
    _assert_same(gan_reference[0], result, "crash at epoch 1, batch 4")
    # the crash came before batch 12's save: the last save point is after batch 11 (epoch 1, batch 3)
    assert len(result["losses"]) == 24 - 12


class TwoOptimizers(TinyModel):
    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.net[0].parameters(), lr=0.1),
            torch.optim.SGD(self.net[2].parameters(), lr=0.1),
        ]


def test_automatic_optimization_with_two_optimizers_names_manual_optimization(tmp_path):
    train, _ = loaders()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        trainer.fit(TwoOptimizers(), train)


class Manual(TinyModel):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.hooks: list[str] = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = F.cross_entropy(self(batch[0]), batch[1])
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def on_before_backward(self, loss):
        self.hooks.append("on_before_backward")

    def on_after_backward(self):
        self.hooks.append("on_after_backward")

    def on_before_optimizer_step(self, optimizer):
        self.hooks.append("on_before_optimizer_step")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def test_manual_optimization_counts_steps_and_runs_hooks(tmp_path):
    train, _ = loaders()
    model = Manual()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_epochs=1)
    trainer.fit(model, train)
    assert trainer.global_step == 8
    assert model.hooks[:3] == ["on_before_backward", "on_after_backward", "on_before_optimizer_step"]
    # the module steps its schedulers itself in manual mode: the trainer did not
    assert model.lr_schedulers().last_epoch == 0


def test_manual_optimization_rejects_trainer_gradient_clipping(tmp_path):
    train, _ = loaders()
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, gradient_clip_val=1.0
    )
    with pytest.raises(ValueError, match="clip_gradients"):
        trainer.fit(Manual(), train)


def test_manual_backward_in_automatic_mode_says_how_to_switch():
    model = TinyModel()
    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        model.manual_backward(torch.tensor(1.0, requires_grad=True))


def test_toggle_optimizer_freezes_the_other_optimizers_parameters(tmp_path):
    seen = {}

    class Toggling(Manual):
        def training_step(self, batch, batch_idx):
            first, _second = self.optimizers()
            self.toggle_optimizer(first)
            seen["toggled"] = [p.requires_grad for p in self.parameters()]
            self.untoggle_optimizer(first)
            seen["untoggled"] = [p.requires_grad for p in self.parameters()]

        configure_optimizers = TwoOptimizers.configure_optimizers

    train, _ = loaders()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_steps=1)
    trainer.fit(Toggling(), train)
    assert seen["toggled"] == [True, True, False, False]
    assert seen["untoggled"] == [True, True, True, True]


def test_training_step_without_batch_idx_is_called_with_the_batch_only(tmp_path):
    calls = []

    class NoIdx(TinyModel):
        def training_step(self, batch):
            calls.append(len(batch))
            return F.cross_entropy(self(batch[0]), batch[1])

    train, _ = loaders()
    quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_epochs=1).fit(
        NoIdx(), train
    )
    assert calls == [2] * 8


def test_clip_gradients_clips_by_norm(tmp_path):
    norms = []

    class Clipping(Manual):
        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(F.cross_entropy(self(batch[0]), batch[1]) * 100)
            self.clip_gradients(opt, gradient_clip_val=0.01, gradient_clip_algorithm="norm")
            grads = [p.grad for p in self.parameters()]
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            )
            opt.step()

    train, _ = loaders()
    quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_steps=3).fit(
        Clipping(), train
    )
    assert len(norms) == 3 and all(n == pytest.approx(0.01, rel=1e-4) for n in norms)


def test_freeze_and_unfreeze_toggle_requires_grad_and_mode():
    model = TinyModel()
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_optimizers_use_pl_optimizer_false_returns_the_raw_optimizer(tmp_path):
    seen = {}

    class Raw(Manual):
        def training_step(self, batch, batch_idx):
            seen["raw"] = self.optimizers(use_pl_optimizer=False)
            seen["wrapped"] = self.optimizers()
            return super().training_step(batch, batch_idx)

    train, _ = loaders()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_steps=1)
    trainer.fit(Raw(), train)
    assert seen["raw"] is trainer.optimizers[0]
    assert seen["wrapped"].optimizer is trainer.optimizers[0]
    assert isinstance(seen["wrapped"].param_groups, list)
