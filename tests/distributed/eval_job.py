"""trainer.test and trainer.predict under DDP (torchrun, 2 ranks): run by test_distributed_eval.py.

    python -m torch.distributed.run --nproc_per_node=2 eval_job.py OUT_DIR

21 samples over 2 ranks: no sample may be seen twice (a padded sampler would repeat one). Each rank writes
OUT_DIR/result.rank{r} (test results) and its predictions through a BasePredictionWriter.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import savepoint as sp
from savepoint.callbacks import BasePredictionWriter


class Doubler(sp.TrainingModule):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return x * self.scale

    def test_step(self, batch, batch_idx):
        (x,) = batch
        self.log("seen", float(x.shape[0]), reduce_fx="sum", sync_dist=True)
        self.log("mean_x", x.mean(), sync_dist=True, batch_size=x.shape[0])

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


class PerRankWriter(BasePredictionWriter):
    def __init__(self, out: str) -> None:
        super().__init__("epoch")
        self.out = out

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save(
            {"predictions": predictions, "indices": batch_indices},
            f"{self.out}/predictions.rank{trainer.global_rank}",
        )


def main() -> None:
    out = sys.argv[1]
    data = TensorDataset(torch.arange(21, dtype=torch.float32).unsqueeze(1))
    trainer = sp.Trainer(
        strategy="ddp",
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[PerRankWriter(out)],
    )
    model = Doubler()
    results = trainer.test(model, dataloaders=DataLoader(data, batch_size=4), verbose=False)
    returned = trainer.predict(model, dataloaders=DataLoader(data, batch_size=4))
    plain = sp.Trainer(
        strategy="ddp", accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        use_distributed_sampler=False,
    )  # fmt: skip
    everything = plain.predict(model, dataloaders=DataLoader(data, batch_size=4))
    torch.save(
        {"test": results, "returned": returned, "unsampled": everything},
        f"{out}/result.rank{trainer.global_rank}",
    )


if __name__ == "__main__":
    main()
