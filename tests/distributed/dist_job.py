"""A distributed training job for tests/distributed. Run under torchrun, or as a plain script with
--self-launch (the Trainer starts the processes itself).

    python dist_job.py ROOT OUT --strategy {ddp,fsdp,fsdp-full} [--ckpt PATH] [--max-epochs N]
                       [--self-launch] [--fail-save-on-rank R] [--async]
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp
from savepoint.plugins.io import AsyncCheckpointIO, TorchCheckpointIO


class Net(sp.TrainingModule):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(
            nn.Linear(8, width),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class FailingIO(TorchCheckpointIO):
    supports_sharded = True

    def __init__(self, rank_to_fail: int) -> None:
        super().__init__()
        self.rank_to_fail = rank_to_fail

    def _maybe_fail(self, path: str) -> None:
        if int(os.environ.get("RANK", "0")) == self.rank_to_fail:
            raise OSError(f"injected write failure for {path}")

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self._maybe_fail(path)
        super().save_checkpoint(checkpoint, path, storage_options)

    def save_sharded(self, state, path, process_group=None):
        # Fail inside DCP's write phase, where a real disk error would happen.
        import torch.distributed.checkpoint as dcp

        rank_to_fail = self.rank_to_fail

        class Writer(dcp.FileSystemWriter):
            def write_data(self, plan, planner):
                if dist.get_rank() == rank_to_fail:
                    raise OSError(f"injected write failure for {path}")
                return super().write_data(plan, planner)

        dcp.save(state, storage_writer=Writer(path), process_group=process_group)


class RecordingIO(TorchCheckpointIO):
    """Appends every call it sees to ROOT/io.rank<R>."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root

    def _record(self, what: str) -> None:
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, f"io.rank{os.environ.get('RANK', '0')}"), "a") as f:
            f.write(what + "\n")

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self._record(f"save {os.path.basename(path)}")
        super().save_checkpoint(checkpoint, path, storage_options)

    def remove_checkpoint(self, path):
        self._record(f"remove {os.path.basename(path)}")
        super().remove_checkpoint(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--strategy", default="ddp")
    p.add_argument("--ckpt")
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--self-launch", action="store_true")
    p.add_argument("--fail-save-on-rank", type=int)
    p.add_argument("--async-io", action="store_true")
    p.add_argument("--manual-save")
    p.add_argument("--record-io", action="store_true")
    p.add_argument("--every-n-steps", type=int)
    a = p.parse_args()

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(96, 8), torch.randint(0, 2, (96,)))
    val = TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
    kwargs: dict = {}
    io = FailingIO(a.fail_save_on_rank) if a.fail_save_on_rank is not None else None
    if a.record_io:
        io = RecordingIO(a.root)
    if a.async_io:
        io = AsyncCheckpointIO(io)
    if a.strategy == "ddp":
        strategy = sp.DDPStrategy(checkpoint_io=io) if io is not None else "ddp"
    else:
        strategy = sp.FSDPStrategy(
            state_dict_type="full" if a.strategy == "fsdp-full" else "sharded",
            shard_modules={nn.Linear},
            checkpoint_io=io,
        )
    if a.self_launch:
        kwargs["devices"] = 2
    cb = sp.ModelCheckpoint(dirpath=f"{a.root}/ck", monitor="val_loss", save_top_k=2, save_last=True)
    callbacks: list = [cb]
    if a.every_n_steps:
        callbacks.append(
            sp.ModelCheckpoint(dirpath=f"{a.root}/steps", every_n_train_steps=a.every_n_steps, save_top_k=-1)
        )
    trainer = sp.Trainer(
        strategy=strategy,
        max_epochs=a.max_epochs,
        default_root_dir=a.root,
        callbacks=callbacks,
        enable_progress_bar=False,
        accelerator="cpu",
        **kwargs,
    )
    model = Net()
    error = None
    try:
        trainer.fit(
            model,
            DataLoader(data, batch_size=8, shuffle=True),
            DataLoader(val, batch_size=8),
            ckpt_path=a.ckpt,
        )
        if a.manual_save:
            trainer.save_checkpoint(a.manual_save)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    rank = trainer.global_rank
    if a.strategy.startswith("fsdp") and error is None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        params = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=False)
        )
    else:
        params = model.state_dict()
    result = {
        "rank": rank,
        "world_size": trainer.world_size,
        "error": error,
        "global_step": trainer.global_step,
        "best": cb.best_model_path,
        "best_k": sorted(cb.best_k_models),
        "last": cb.last_model_path,
    }
    torch.save(
        {"result": result, "params": {k: v.detach().cpu().clone() for k, v in params.items()}},
        f"{a.out}.rank{rank}",
    )
    print("RESULT", json.dumps(result), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    # Free the trainer's objects (process groups among them) now, while the interpreter is whole: a gloo
    # worker thread that drops a Python object during interpreter shutdown aborts the process.
    del trainer, model, cb, callbacks, strategy, io  # the strategy holds the trainer
    gc.collect()


if __name__ == "__main__":
    main()
