"""Trainer arguments a Lightning script passes besides the checkpointing ones, and the state properties."""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader

import savepoint as sp
from helpers import TinyModel, loaders, make_data, quiet_trainer
from savepoint.callbacks import ModelCheckpoint, Timer


class Recorder(sp.Callback):
    def __init__(self) -> None:
        self.train_batches: list[tuple[int, int]] = []
        self.val_batches = 0
        self.states: dict[str, tuple] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_batches.append((trainer.current_epoch, batch_idx))
        self.states["train"] = (trainer.state.fn, trainer.state.stage, trainer.training, trainer.validating)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_batches += 1
        if not trainer.sanity_checking:
            self.states["val"] = (trainer.state.fn, trainer.state.stage, trainer.training, trainer.validating)
        else:
            self.states["sanity"] = (trainer.state.stage, trainer.sanity_checking)


def test_fast_dev_run_runs_n_batches_and_writes_nothing(tmp_path):
    recorder = Recorder()
    trainer = sp.Trainer(
        fast_dev_run=2, default_root_dir=tmp_path, callbacks=[recorder], enable_progress_bar=False
    )
    train, val = loaders()
    trainer.fit(TinyModel(), train, val)
    assert recorder.train_batches == [(0, 0), (0, 1)]
    assert recorder.val_batches == 2  # no sanity check, two validation batches
    assert trainer.global_step == 2
    assert not any(files for _, _, files in os.walk(tmp_path))  # no checkpoint, no log


def test_fast_dev_run_true_is_one_batch(tmp_path):
    recorder = Recorder()
    trainer = sp.Trainer(
        fast_dev_run=True, default_root_dir=tmp_path, callbacks=[recorder], enable_progress_bar=False
    )
    trainer.fit(TinyModel(), loaders()[0])
    assert recorder.train_batches == [(0, 0)]


def test_overfit_batches_reuses_the_same_first_batches_in_order(tmp_path):
    seen: list[torch.Tensor] = []

    class Seeing(TinyModel):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    train, _ = loaders(shuffle=True)
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, overfit_batches=2
    )
    with pytest.warns(UserWarning, match="sequential"):
        trainer.fit(Seeing(), train)
    x = make_data(64, seed=0).tensors[0]
    assert len(seen) == 4
    for i, batch in enumerate(seen):
        assert torch.equal(batch, x[(i % 2) * 8 : (i % 2) * 8 + 8])


def test_state_and_stage_flags_follow_the_loop(tmp_path):
    recorder = Recorder()
    train, val = loaders()
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=[recorder]
    )
    trainer.fit(TinyModel(), train, val)
    assert recorder.states["train"] == ("fit", "train", True, False)
    assert recorder.states["val"] == ("fit", "validate", False, True)
    assert recorder.states["sanity"] == ("sanity_check", True)
    assert trainer.state.finished and trainer.state.stage is None


def test_estimated_stepping_batches_counts_optimizer_steps(tmp_path):
    seen = {}

    class Estimating(TinyModel):
        def configure_optimizers(self):
            seen["steps"] = self.trainer.estimated_stepping_batches
            return super().configure_optimizers()

    train, _ = loaders()  # 8 batches
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        max_epochs=3,
        accumulate_grad_batches=3,
    )
    trainer.fit(Estimating(), train)
    assert seen["steps"] == math.ceil(8 / 3) * 3 == trainer.global_step


def test_limit_predict_batches_limits_predict(tmp_path):
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, limit_predict_batches=2)
    out = trainer.predict(TinyModel(), dataloaders=DataLoader(torch.randn(40, 8), batch_size=8))
    assert len(out) == 2


@pytest.mark.parametrize(
    "precision, dtype", [("64-true", torch.float64), ("bf16-true", torch.bfloat16), (64, torch.float64)]
)
def test_true_precision_casts_weights_and_inputs(tmp_path, precision, dtype):
    seen = {}

    class Typed(TinyModel):
        def training_step(self, batch, batch_idx):
            seen["input"] = batch[0].dtype
            return super().training_step(batch, batch_idx)

    model = Typed()
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, precision=precision, max_steps=2
    )
    trainer.fit(model, loaders()[0])
    assert seen["input"] == dtype
    assert all(p.dtype == dtype for p in model.parameters())
    assert trainer.precision == {64: "64-true"}.get(precision, precision)


def test_max_time_adds_a_timer_and_parses_each_form():
    for value, seconds in (("00:01:00:05", 3605), ({"minutes": 2}, 120), (timedelta(seconds=9), 9)):
        trainer = sp.Trainer(max_time=value, enable_progress_bar=False, logger=False)
        timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
        assert len(timers) == 1 and timers[0]._duration == seconds


@pytest.mark.parametrize("value", ["1:00:00", "soon", {"fortnights": 1}, 12])
def test_max_time_rejects_other_forms(value):
    with pytest.raises(ValueError, match="max_time"):
        sp.Trainer(max_time=value)


def test_max_time_stops_training_and_saves_a_checkpoint(tmp_path):
    class Slow(TinyModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                timer = next(cb for cb in self.trainer.callbacks if isinstance(cb, Timer))
                timer._offset = 10.0  # as if ten seconds had already been spent
            return super().training_step(batch, batch_idx)

    train, val = loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck")
    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, max_time={"seconds": 5}, max_epochs=5, callbacks=[checkpoint]
    )
    trainer.fit(Slow(), train, val)
    assert trainer.global_step == 3  # stopped after the step that found the budget spent
    saved = torch.load(checkpoint.best_model_path, weights_only=True)  # validation ran, then the save
    assert saved["global_step"] == 3 and saved["epoch"] == 0


def test_timer_elapsed_time_is_restored_on_resume(tmp_path):
    timer = Timer(duration="00:01:00:00")
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, callbacks=[timer], max_epochs=1)
    trainer.fit(TinyModel(), loaders()[0])
    spent = timer.time_elapsed("train")
    state = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["callbacks"]
    resumed = Timer(duration="00:01:00:00")
    resumed.load_state_dict(state[Timer.__qualname__])
    assert resumed.time_elapsed("train") == pytest.approx(state[Timer.__qualname__]["time_elapsed"]["train"])
    assert 0 < resumed.time_elapsed("train") <= spent


def test_reload_dataloaders_every_n_epochs_asks_again(tmp_path):
    calls = []

    class Reloading(TinyModel):
        def train_dataloader(self):
            calls.append(self.current_epoch)
            return loaders()[0]

    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        max_epochs=4,
        reload_dataloaders_every_n_epochs=2,
    )
    trainer.fit(Reloading())
    assert calls == [0, 2]


def test_detect_anomaly_reports_the_nan_backward(tmp_path):
    class Nan(TinyModel):
        def training_step(self, batch, batch_idx):
            return (self(batch[0]).sum() * 0).sqrt() * torch.tensor(float("nan"))

    trainer = quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, detect_anomaly=True
    )
    with pytest.raises(RuntimeError, match="nan"), pytest.warns(UserWarning):
        trainer.fit(Nan(), loaders()[0])


def test_barebones_turns_off_checkpoints_logs_and_the_progress_bar(tmp_path):
    trainer = sp.Trainer(barebones=True, default_root_dir=tmp_path, max_epochs=1)
    assert (
        trainer.logger is None
        and trainer.checkpoint_callback is None
        and trainer.progress_bar_callback is None
    )
    with pytest.raises(ValueError, match="barebones=True"):
        sp.Trainer(barebones=True, enable_checkpointing=True)


def test_inference_mode_false_evaluates_under_no_grad(tmp_path):
    modes = []

    class Mode(TinyModel):
        def test_step(self, batch, batch_idx):
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    for flag in (True, False):
        quiet_trainer(default_root_dir=tmp_path, logger=False, inference_mode=flag).test(
            Mode(), dataloaders=loaders()[1], verbose=False
        )
    assert modes[0] == (True, False) and modes[-1] == (False, False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fast_dev_run": -1}, "fast_dev_run"),
        ({"limit_test_batches": 1.5}, "limit_test_batches"),
        ({"overfit_batches": -2}, "overfit_batches"),
        ({"inference_mode": "yes"}, "inference_mode"),
        ({"reload_dataloaders_every_n_epochs": -1}, "reload_dataloaders_every_n_epochs"),
        ({"precision": "8-true"}, "precision"),
    ],
)
def test_trainer_rejects_bad_values_in_the_constructor(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sp.Trainer(**kwargs)


def test_trainer_unknown_argument_suggests_the_close_one():
    with pytest.raises(TypeError, match="Did you mean 'limit_predict_batches'"):
        sp.Trainer(limit_predict_batch=2)


def test_benchmark_sets_cudnn_benchmark(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    sp.Trainer(benchmark=True)
    assert torch.backends.cudnn.benchmark is True
    sp.Trainer()  # None leaves the setting alone, as Lightning does when not deterministic
    assert torch.backends.cudnn.benchmark is True


def test_sync_batchnorm_on_one_process_leaves_batchnorm_alone(tmp_path):
    class WithBN(TinyModel):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 2)
            )

    model = WithBN()
    quiet_trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, sync_batchnorm=True, max_steps=1
    ).fit(model, loaders()[0])
    assert type(model.net[1]) is torch.nn.BatchNorm1d


def test_max_time_spent_before_the_resume_counts(tmp_path):
    train, _ = loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4)
    quiet_trainer(
        default_root_dir=tmp_path, logger=False, max_epochs=1, max_time="00:01:00:00", callbacks=[checkpoint]
    ).fit(TinyModel(), train)
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    assert saved["callbacks"]["Timer"]["time_elapsed"]["train"] > 0
    saved["callbacks"]["Timer"]["time_elapsed"]["train"] = 3600.0  # as if the first run had used the hour
    torch.save(saved, tmp_path / "spent.ckpt")
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=False, max_epochs=3, max_time="00:01:00:00")
    trainer.fit(TinyModel(), train, ckpt_path=tmp_path / "spent.ckpt")
    assert trainer.global_step == saved["global_step"]  # the budget was spent: no further step
