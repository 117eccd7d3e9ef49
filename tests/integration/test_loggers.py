"""Loggers in real fits: TensorBoard event files read back, several loggers, MLflow, and resumed runs
whose logs continue exactly."""

import csv
import os
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def csv_rows(log_dir) -> list[dict[str, str]]:
    with open(os.path.join(log_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_tensorboard_logger_default_writes_step_and_epoch_scalars(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=2, log_every_n_steps=2)
    trainer.fit(TinyModel(), train, val)
    assert isinstance(trainer.logger, TensorBoardLogger)
    log_dir = Path(trainer.log_dir)
    assert log_dir == tmp_path / "runs" / "version_0"
    found = scalars(log_dir)
    # Steps are those of the batch that logged, counted from 0 (as Lightning): every 2nd of 16 batches.
    assert [s for s, _ in found["train_loss"]] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert [s for s, _ in found["val_loss"]] == [7, 15]  # one point per validation epoch
    assert found["val_loss"][-1][1] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert (log_dir / "hparams.yaml").read_text().startswith("in_dim: 8")


def test_tensorboard_logger_hparams_plugin_declares_the_monitored_metric(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, callbacks=[sp.ModelCheckpoint(monitor="val_loss")])
    trainer.fit(TinyModel(lr=0.05), train, val)
    acc = EventAccumulator(trainer.log_dir)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert {m.name.tag for m in experiment.metric_infos} == {"hp_metric", "val_loss"}
    assert session.session_start_info.hparams["lr"].number_value == pytest.approx(0.05)


def test_tensorboard_logger_experiment_is_the_summary_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writers = []

    class Histograms(TinyModel):
        def on_train_epoch_end(self):
            writers.append(self.logger.experiment)
            self.logger.experiment.add_histogram("weights", self.net[0].weight, self.global_step)

    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(Histograms(), train, val)
    assert isinstance(writers[0], SummaryWriter)
    acc = EventAccumulator(trainer.log_dir)
    acc.Reload()
    assert acc.Tags()["histograms"] == ["weights"]


def test_tensorboard_logger_log_graph_uses_example_input_array(tmp_path):
    class WithExample(TinyModel):
        def __init__(self):
            super().__init__()
            self.example_input_array = torch.zeros(2, 8)

    train, val = loaders()
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    quiet_trainer(max_epochs=1, logger=logger).fit(WithExample(), train, val)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert acc.Tags()["graph"] is True


def test_trainer_several_loggers_share_one_version_folder(tmp_path):
    seen = []

    class Looks(TinyModel):
        def on_train_start(self):
            seen.append((self.logger, list(self.loggers)))

    tb, csv_logger = TensorBoardLogger(tmp_path), CSVLogger(tmp_path)
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, logger=[tb, csv_logger], log_every_n_steps=2)
    trainer.fit(Looks(), train, val)
    assert trainer.loggers == [tb, csv_logger] and trainer.logger is tb
    assert seen == [(tb, [tb, csv_logger])]
    assert tb.log_dir == csv_logger.log_dir == str(tmp_path / "runs" / "version_0")
    rows = csv_rows(csv_logger.log_dir)
    tb_steps = [s for s, _ in scalars(tb.log_dir)["train_loss"]]
    assert [int(r["step"]) for r in rows if r["train_loss"]] == tb_steps


def test_trainer_logger_false_has_no_loggers(tmp_path):
    trainer = quiet_trainer(max_epochs=1, logger=False)
    trainer.fit(TinyModel(), *loaders())
    assert trainer.loggers == [] and trainer.logger is None
    assert not (tmp_path / "runs" / "version_0" / "hparams.yaml").exists()


def test_trainer_logger_rejects_a_list_with_a_non_logger():
    with pytest.raises(TypeError, match="a list of them"):
        sp.Trainer(logger=[CSVLogger("."), "tensorboard"])


def test_custom_logger_receives_hparams_metrics_save_and_finalize(tmp_path):
    calls = []

    class Recorder(Logger):
        def log_hyperparams(self, params, *args, **kwargs):
            calls.append(("hparams", dict(params)))

        def log_metrics(self, metrics, step=None):
            calls.append(("metrics", step, sorted(metrics)))

        def save(self):
            calls.append(("save",))

        def finalize(self, status):
            calls.append(("finalize", status))

        def after_save_checkpoint(self, checkpoint_callback):
            calls.append(("checkpoint", os.path.basename(checkpoint_callback.last_model_path or "")))

    train, val = loaders()
    quiet_trainer(max_epochs=1, logger=Recorder(), log_every_n_steps=4).fit(TinyModel(), train, val)
    assert calls[0] == ("hparams", {"in_dim": 8, "hidden": 16, "lr": 0.1})
    # Steps of the batch that logged, from 0 (as Lightning): the 4th and the 8th batch.
    assert ("metrics", 3, ["epoch", "train_loss"]) in calls
    assert ("metrics", 7, ["epoch", "val_loss"]) in calls
    assert calls.index(("save",)) < calls.index(("checkpoint", ""))  # flushed before the checkpoint
    assert calls[-1] == ("finalize", "success")


def fit_three_epochs(root, logger_factory, ckpt_path=None):
    torch.manual_seed(0)
    train, val = loaders()
    trainer = sp.Trainer(
        max_epochs=3,
        default_root_dir=root,
        enable_progress_bar=False,
        log_every_n_steps=3,
        logger=logger_factory(root),
        callbacks=[sp.ModelCheckpoint(save_top_k=-1)],
    )
    trainer.fit(TinyModel(), train, val, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("reader", ["tensorboard", "csv"])
def test_resumed_run_continues_the_same_log_without_duplicate_or_missing_steps(tmp_path, reader):
    """A run that "crashed" after epoch 2 (its logs run past the checkpoint of epoch 1) resumes from
    epoch 1's checkpoint: the logs end up exactly as an uninterrupted run's."""
    factory = (lambda root: True) if reader == "tensorboard" else (lambda root: CSVLogger(root))
    read = scalars if reader == "tensorboard" else csv_rows
    reference = fit_three_epochs(tmp_path / "ref", factory)
    crashed = fit_three_epochs(tmp_path / "run", factory)
    ckpt = Path(crashed.log_dir) / "checkpoints" / "epoch=0-step=8.ckpt"
    resumed = fit_three_epochs(tmp_path / "run", factory, ckpt_path=ckpt)
    assert resumed.log_dir == crashed.log_dir  # same version folder, same TensorBoard run
    assert read(resumed.log_dir) == read(reference.log_dir)
    assert sorted(os.listdir(Path(resumed.log_dir).parent)) == ["version_0"]


@pytest.fixture
def mlflow_file_store(monkeypatch):
    # MLflow 3 keeps its file store behind this switch (a database URI needs sqlalchemy).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


@pytest.mark.usefixtures("mlflow_file_store")
def test_mlflow_logger_records_params_and_metrics_in_a_local_store(tmp_path):
    logger = MLFlowLogger(experiment_name="demo", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    train, val = loaders()
    quiet_trainer(max_epochs=2, logger=logger, log_every_n_steps=4).fit(TinyModel(), train, val)
    client = logger.experiment
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"in_dim": "8", "hidden": "16", "lr": "0.1"}
    history = client.get_metric_history(logger.run_id, "val_loss")
    assert [m.step for m in history] == [7, 15]  # the last batch of each epoch, counted from 0
    assert [m.step for m in client.get_metric_history(logger.run_id, "train_loss")] == [3, 7, 11, 15]


@pytest.mark.usefixtures("mlflow_file_store")
def test_mlflow_logger_resumed_run_logs_into_the_same_run(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    first = MLFlowLogger(tracking_uri=uri)
    trainer = fit_three_epochs(tmp_path, lambda root: first)
    ckpt = trainer.checkpoint_callback.best_model_path
    second = MLFlowLogger(tracking_uri=uri)
    fit_three_epochs(tmp_path, lambda root: second, ckpt_path=ckpt)
    assert second.run_id == first.run_id
