"""trainer.test and trainer.predict: hooks, ckpt_path, several dataloaders, the results table, writers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import savepoint as sp
from helpers import TinyModel, loaders, make_data, quiet_trainer
from savepoint.callbacks import BasePredictionWriter, ModelCheckpoint


class EvalModel(TinyModel):
    def test_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        acc = (self(x).argmax(-1) == y).float().mean()
        self.log("test_acc", acc)
        self.log("test_loss", F.cross_entropy(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        return self(x).argmax(-1)


class HookRecorder(sp.Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []


def _recording_hook(name: str):
    def hook(self, trainer, pl_module, *args):
        self.calls.append(f"{name}:{args[0]}" if name in ("setup", "teardown") else name)

    return hook


for _name in [n for n in vars(sp.Callback) if n.startswith(("on_test", "on_predict"))] + [
    "setup",
    "teardown",
]:
    setattr(HookRecorder, _name, _recording_hook(_name))


def _loader(n: int = 16, seed: int = 1) -> DataLoader:
    return DataLoader(make_data(n, seed=seed), batch_size=8)


def test_trainer_test_returns_epoch_means_of_test_step_values(tmp_path):
    model = EvalModel()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    (result,) = trainer.test(model, dataloaders=_loader(), verbose=False)
    x, y = make_data(16, seed=1).tensors
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).float().mean().item()
    assert result["test_acc"] == pytest.approx(expected)
    assert trainer.callback_metrics["test_acc"].item() == pytest.approx(expected)
    assert trainer.state.fn == "test" and trainer.state.finished


def test_trainer_test_calls_hooks_in_lightning_order(tmp_path):
    recorder = HookRecorder()
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=[recorder]
    )
    trainer.test(EvalModel(), dataloaders=_loader(), verbose=False)
    assert recorder.calls == [
        "setup:test",
        "on_test_start",
        "on_test_epoch_start",
        "on_test_batch_start",
        "on_test_batch_end",
        "on_test_batch_start",
        "on_test_batch_end",
        "on_test_epoch_end",
        "on_test_end",
        "teardown:test",
    ]


def test_trainer_test_with_several_dataloaders_gives_one_result_per_dataloader(tmp_path):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    results = trainer.test(EvalModel(), dataloaders=[_loader(16, 1), _loader(8, 2)], verbose=False)
    assert len(results) == 2
    assert set(results[0]) == {"test_acc/dataloader_idx_0", "test_loss/dataloader_idx_0"}
    assert set(results[1]) == {"test_acc/dataloader_idx_1", "test_loss/dataloader_idx_1"}


def test_trainer_test_ckpt_path_best_loads_the_best_weights(tmp_path):
    train, val = loaders()
    model = EvalModel()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=1)
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, max_epochs=3, callbacks=[checkpoint])
    trainer.fit(model, train, val)
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the in-memory weights differ from every checkpoint
    trainer.test(model, dataloaders=_loader(), ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path
    for name, value in model.state_dict().items():
        assert torch.equal(value, best[name]), name


def test_trainer_test_without_model_after_fit_uses_best_with_a_warning(tmp_path):
    train, val = loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss")
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, callbacks=[checkpoint])
    trainer.fit(EvalModel(), train, val)
    with pytest.warns(UserWarning, match="best model of the previous fit"):
        trainer.test(dataloaders=_loader(), verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path


def test_trainer_test_prints_a_results_table(tmp_path, capsys):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    trainer.test(EvalModel(), dataloaders=_loader())
    out = capsys.readouterr().out
    assert "Test" in out and "test_acc" in out and "test_loss" in out


def test_trainer_test_without_test_step_says_so(tmp_path):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="does not implement test_step"):
        trainer.test(TinyModel(), dataloaders=_loader())


def test_trainer_test_uses_datamodule_test_dataloader(tmp_path):
    dm = sp.DataModule.from_datasets(test_dataset=make_data(24, seed=3), batch_size=8)
    batches = []

    class Counting(EvalModel):
        def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            batches.append(batch_idx)

    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, limit_test_batches=2
    )
    trainer.test(Counting(), datamodule=dm, verbose=False)
    assert batches == [0, 1]
    assert isinstance(trainer.test_dataloaders, DataLoader)


def test_trainer_predict_returns_predictions_per_batch(tmp_path):
    model = EvalModel()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    predictions = trainer.predict(model, dataloaders=_loader(20))
    assert [p.shape[0] for p in predictions] == [8, 8, 4]
    x, _ = make_data(20, seed=1).tensors
    with torch.no_grad():
        assert torch.equal(torch.cat(predictions), model(x).argmax(-1))


def test_trainer_predict_with_return_predictions_false_returns_none(tmp_path):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    assert trainer.predict(EvalModel(), dataloaders=_loader(), return_predictions=False) is None


def test_trainer_predict_several_dataloaders_gives_a_list_per_dataloader(tmp_path):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    out = trainer.predict(EvalModel(), dataloaders=[_loader(16), _loader(8)])
    assert [len(part) for part in out] == [2, 1]


def test_trainer_predict_default_predict_step_calls_forward(tmp_path):
    class Plain(TinyModel):
        pass

    x = torch.randn(10, 8)
    model = Plain()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    (out,) = trainer.predict(model, dataloaders=DataLoader(x, batch_size=10))
    with torch.no_grad():
        assert torch.equal(out, model(x))


class Writer(BasePredictionWriter):
    def __init__(self, interval: str) -> None:
        super().__init__(interval)
        self.batches: list[tuple[list[int], int]] = []
        self.epoch: tuple | None = None

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.batches.append((list(batch_indices), int(prediction.shape[0])))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.epoch = (len(predictions), batch_indices)


def test_prediction_writer_batch_interval_gets_dataset_indices(tmp_path):
    writer = Writer("batch")
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=[writer]
    )
    trainer.predict(EvalModel(), dataloaders=_loader(12), return_predictions=False)
    assert writer.batches == [(list(range(8)), 8), (list(range(8, 12)), 4)]
    assert writer.epoch is None


def test_prediction_writer_epoch_interval_gets_all_predictions(tmp_path):
    writer = Writer("epoch")
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=[writer]
    )
    trainer.predict(EvalModel(), dataloaders=_loader(12))
    assert writer.batches == []
    assert writer.epoch == (2, [[list(range(8)), list(range(8, 12))]])


def test_prediction_writer_rejects_an_unknown_interval():
    with pytest.raises(ValueError, match="write_interval='step'"):
        BasePredictionWriter("step")


def test_trainer_predict_ckpt_path_loads_weights(tmp_path):
    model = EvalModel()
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_epochs=1)
    train, _ = loaders()
    trainer.fit(model, train)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    other = EvalModel()
    quiet_trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False).predict(
        other, dataloaders=_loader(), ckpt_path=tmp_path / "m.ckpt"
    )
    for name, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[name]), name
