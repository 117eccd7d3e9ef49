"""The standard callbacks in real fits, and stateful ones resumed exactly."""

import csv
import os

import pytest
import torch
from torch import nn

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.callbacks import (
    BackboneFinetuning,
    GradientAccumulationScheduler,
    LambdaCallback,
    LearningRateMonitor,
    StochasticWeightAveraging,
)
from savepoint.loggers import CSVLogger


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_model_summary_is_printed_at_fit_start_by_default(capsys):
    class WithExample(TinyModel):
        def __init__(self):
            super().__init__()
            self.example_input_array = torch.zeros(3, 8)

    quiet_trainer(max_epochs=1).fit(WithExample(), *loaders())
    out = capsys.readouterr().out
    assert "0 | net  | Sequential | 178    | train | 960   | [3, 8]   | [3, 2]" in out
    assert "178       Total params" in out


def test_model_summary_is_off_with_enable_model_summary_false(capsys):
    quiet_trainer(max_epochs=1, enable_model_summary=False).fit(TinyModel(), *loaders())
    assert "Total params" not in capsys.readouterr().out


def test_lambda_callback_runs_the_given_hooks():
    calls = []
    cb = LambdaCallback(
        on_train_epoch_end=lambda trainer, module: calls.append(("epoch_end", trainer.current_epoch)),
        on_fit_end=lambda trainer, module: calls.append(("fit_end",)),
    )
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), *loaders())
    assert calls == [("epoch_end", 0), ("epoch_end", 1), ("fit_end",)]


def test_lambda_callback_rejects_an_unknown_hook():
    with pytest.raises(TypeError, match="on_epoch_done"):
        LambdaCallback(on_epoch_done=print)


def test_learning_rate_monitor_logs_the_scheduled_rate(tmp_path):
    class Scheduled(TinyModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    trainer = quiet_trainer(max_epochs=3, logger=CSVLogger(tmp_path), callbacks=[LearningRateMonitor()])
    trainer.fit(Scheduled(), *loaders())
    with open(os.path.join(trainer.log_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-SGD")]
    assert [float(r["lr-SGD"]) for r in rows] == [0.1, 0.05, 0.025]
    assert [int(r["step"]) for r in rows] == [0, 8, 16]


def test_learning_rate_monitor_needs_a_logger():
    with pytest.raises(ValueError, match="needs a logger"):
        quiet_trainer(max_epochs=1, logger=False, callbacks=[LearningRateMonitor()]).fit(
            TinyModel(), *loaders()
        )


class Transfer(sp.TrainingModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1, momentum=0.9)


def fit(model_factory, root, callbacks, max_epochs, ckpt_path=None, **kwargs):
    torch.manual_seed(0)
    model = model_factory()
    train, _ = loaders()
    trainer = sp.Trainer(
        max_epochs=max_epochs,
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=[*callbacks(), sp.ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, **kwargs)],
    )
    trainer.fit(model, train, ckpt_path=ckpt_path)
    return model, trainer


def test_backbone_finetuning_unfreezes_at_the_epoch_and_resumes_exactly(tmp_path):
    """Resumed after the backbone was unfrozen, it keeps training it (Lightning leaves it frozen)."""
    callbacks = lambda: [BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5)]  # noqa: E731
    start = fit(Transfer, tmp_path / "start", lambda: [], 0)[0].backbone[0].weight.detach().clone()
    reference, ref_trainer = fit(Transfer, tmp_path / "ref", callbacks, 4)
    assert len(ref_trainer.optimizers[0].param_groups) == 2
    assert not torch.equal(reference.backbone[0].weight, start)  # trained after epoch 1
    fit(Transfer, tmp_path / "run", callbacks, 4)
    resumed, trainer = fit(
        Transfer, tmp_path / "run", callbacks, 4, ckpt_path=tmp_path / "run/ckpt/epoch=1-step=16.ckpt"
    )
    assert trainer.optimizers[0].param_groups[1]["lr"] == ref_trainer.optimizers[0].param_groups[1]["lr"]
    assert_same_weights(weights(resumed), weights(reference))


def test_gradient_accumulation_scheduler_changes_the_factor_by_epoch_and_resumes_mid_epoch(tmp_path):
    callbacks = lambda: [GradientAccumulationScheduler({1: 2})]  # noqa: E731
    reference, trainer = fit(TinyModel, tmp_path / "ref", callbacks, 3)
    assert trainer.global_step == 8 + 4 + 4
    fit(TinyModel, tmp_path / "run", callbacks, 3, every_n_train_steps=10)
    resumed, trainer = fit(
        TinyModel,
        tmp_path / "run",
        callbacks,
        3,
        every_n_train_steps=10,
        ckpt_path=tmp_path / "run/ckpt/epoch=1-step=10.ckpt",
    )
    assert trainer.global_step == 16
    assert_same_weights(weights(resumed), weights(reference))


def test_gradient_accumulation_scheduler_rejects_a_trainer_factor_too():
    with pytest.raises(ValueError, match="both set the accumulation"):
        quiet_trainer(
            max_epochs=1, accumulate_grad_batches=2, callbacks=[GradientAccumulationScheduler({0: 2})]
        ).fit(TinyModel(), *loaders())


def test_stochastic_weight_averaging_ends_with_the_average_of_epoch_start_weights(tmp_path):
    seen = []
    record = LambdaCallback(on_train_epoch_start=lambda t, m: seen.append(weights(m)))
    model, _ = fit(
        TinyModel, tmp_path, lambda: [record, StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=3)], 4
    )
    averaged = seen[2:]  # epochs 2 and 3 (swa_epoch_start is 1-based, as in Lightning)
    for name, value in weights(model).items():
        assert torch.allclose(value, (averaged[0][name] + averaged[1][name]) / 2), name


def test_stochastic_weight_averaging_resumes_exactly_inside_the_swa_phase(tmp_path):
    callbacks = lambda: [StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)]  # noqa: E731
    reference, _ = fit(TinyModel, tmp_path / "ref", callbacks, 5)
    fit(TinyModel, tmp_path / "run", callbacks, 5)
    resumed, _ = fit(
        TinyModel, tmp_path / "run", callbacks, 5, ckpt_path=tmp_path / "run/ckpt/epoch=2-step=24.ckpt"
    )
    assert_same_weights(weights(resumed), weights(reference))
