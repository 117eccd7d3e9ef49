"""Exception-time checkpoints: ModelCheckpoint(save_on_exception=True) and OnExceptionCheckpoint, named as
Lightning 2.6 names them (checked against the installed lightning), the exception always propagating."""

from __future__ import annotations

import os

import pytest
import torch

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.callbacks import OnExceptionCheckpoint


class FailAt:
    """training_step raises at global step `step` (a mixin for the savepoint and the lightning module)."""

    fail_step = 5

    def training_step(self, batch, batch_idx):
        if self.trainer.global_step == self.fail_step:
            raise ValueError("boom")
        return super().training_step(batch, batch_idx)


class Failing(FailAt, TinyModel):
    pass


def _savepoint_files(tmp_path, **ckpt_kwargs) -> list[str]:
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath=tmp_path / "sp", save_on_exception=True, **ckpt_kwargs)
    with pytest.raises(ValueError, match="boom"):
        quiet_trainer(max_epochs=2, callbacks=[cb], logger=False).fit(Failing(), train, val)
    return sorted(os.listdir(tmp_path / "sp"))


def _lightning_files(tmp_path, **ckpt_kwargs) -> list[str]:
    lightning = pytest.importorskip("lightning.pytorch")
    import torch.nn.functional as F
    from torch import nn

    class Lit(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

        def training_step(self, batch, batch_idx):
            if self.trainer.global_step == FailAt.fail_step:
                raise ValueError("boom")
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    train, val = loaders()
    cb = lightning.callbacks.ModelCheckpoint(dirpath=tmp_path / "pl", save_on_exception=True, **ckpt_kwargs)
    trainer = lightning.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(Lit(), train, val)
    return sorted(os.listdir(tmp_path / "pl"))


@pytest.mark.parametrize("kwargs", [{}, {"save_last": True}], ids=["default", "save_last"])
def test_save_on_exception_writes_the_files_lightning_writes(tmp_path, kwargs):
    ours = _savepoint_files(tmp_path, **kwargs)
    assert ours == _lightning_files(tmp_path, **kwargs)
    assert "epoch=0-step=5.ckpt" in ours


def test_save_on_exception_file_resumes_at_the_failed_batch(tmp_path):
    _savepoint_files(tmp_path)
    ckpt = torch.load(tmp_path / "sp" / "epoch=0-step=5.ckpt", weights_only=True)
    loop = ckpt["loops"]["fit_loop"]
    assert (ckpt["global_step"], loop["batches_done"], loop["phase"]) == (5, 5, "batches")


def test_on_exception_checkpoint_file_is_removed_by_a_run_that_ends_well(tmp_path):
    train, val = loaders()
    path = tmp_path / "oe" / "on_exception.ckpt"
    with pytest.raises(ValueError, match="boom"):
        quiet_trainer(max_epochs=1, callbacks=[OnExceptionCheckpoint(tmp_path / "oe")]).fit(
            Failing(), train, val
        )
    assert torch.load(path, weights_only=True)["global_step"] == 5
    quiet_trainer(max_epochs=1, callbacks=[OnExceptionCheckpoint(tmp_path / "oe")]).fit(
        TinyModel(), train, val
    )
    assert not path.exists()


def test_on_exception_checkpoint_rejects_an_empty_filename(tmp_path):
    with pytest.raises(ValueError, match="filename=''"):
        OnExceptionCheckpoint(tmp_path, filename="")
