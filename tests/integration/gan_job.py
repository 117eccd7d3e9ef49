"""A GAN in manual optimization, for the exact-resume tests: run it fresh, crash it, or resume it.

    python gan_job.py ROOT OUT [--ckpt PATH | --ckpt-list FILE] [--crash-at-batch N]

The shape of Lightning's generative_adversarial_net.py example: two optimizers stepped in training_step
with toggle_optimizer / manual_backward / clip_gradients, a per-epoch LR scheduler stepped by the
module, dropout, shuffled data, ``training_step(self, batch)`` without batch_idx. Writes OUT
(torch.save): parameters, both optimizer states, the scheduler state and every step's losses.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp
from savepoint.callbacks import ModelCheckpoint


class GAN(sp.TrainingModule):
    def __init__(self, latent: int = 4, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(latent, 16), nn.ReLU(), nn.Linear(16, 6))
        self.discriminator = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.losses: list[tuple[int, float, float]] = []

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent)

        self.toggle_optimizer(opt_g)
        fake = self(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(real.shape[0], 1))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), torch.ones(real.shape[0], 1))
        fake_loss = F.binary_cross_entropy_with_logits(
            self.discriminator(fake.detach()), torch.zeros(real.shape[0], 1)
        )
        d_loss = (real_loss + fake_loss) / 2
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)
        self.losses.append((self.global_step, float(g_loss.detach()), float(d_loss.detach())))

    def on_train_epoch_end(self):
        self.lr_schedulers().step()

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
        return [opt_g, opt_d], [torch.optim.lr_scheduler.StepLR(opt_g, step_size=1, gamma=0.5)]


class Crash(sp.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch * 8 + batch_idx == self.at:
            os._exit(3)  # a hard crash: no teardown, no flush


def run(root: str, ckpt: str | None, crash_at: int | None, scramble: int | None = None) -> dict:
    torch.manual_seed(7)
    model = GAN()
    data = TensorDataset(torch.randn(64, 6) * 0.5 + 1.0)
    if scramble is not None:
        torch.manual_seed(scramble)  # only the checkpoint's own RNG state can make the resume exact
    callbacks: list[sp.Callback] = [
        ModelCheckpoint(
            dirpath=f"{root}/ckpts",
            every_n_train_steps=4,
            save_top_k=-1,
            save_last=True,
            filename="{epoch}-{step}",
        )
    ]
    if crash_at is not None:
        callbacks.append(Crash(crash_at))
    trainer = sp.Trainer(
        max_epochs=3, default_root_dir=root, callbacks=callbacks, enable_progress_bar=False, logger=False
    )
    trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True), ckpt_path=ckpt)
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizers": [opt.state_dict() for opt in trainer.optimizers],
        "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        "losses": model.losses,
        "global_step": trainer.global_step,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--ckpt")
    p.add_argument("--ckpt-list")
    p.add_argument("--crash-at-batch", type=int)
    a = p.parse_args()
    if a.ckpt_list:
        with open(a.ckpt_list) as f:
            paths = [line.strip() for line in f if line.strip()]
        results = {path: run(f"{a.root}/resume-{i}", path, None, 100 + i) for i, path in enumerate(paths)}
        torch.save(results, a.out)
    else:
        torch.save(run(a.root, a.ckpt, a.crash_at_batch, None if a.ckpt is None else 99), a.out)


if __name__ == "__main__":
    main()
