"""Spec 003 (ModelCheckpoint: when / which / what / where, manual saving) as tests."""

import math
import os
import stat
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.callbacks import ModelCheckpoint
from savepoint.plugins.io import TorchCheckpointIO
from savepoint.trainer import fit_loop


class ScriptedModel(TinyModel):
    """Logs a scripted val_loss per validation, and a training metric."""

    def __init__(self, values=(0.5, 0.3, 0.4, 0.2, 0.6), **kw):
        super().__init__(**kw)
        self.values = list(values)
        self.n_val = 0

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("my_metric", float(batch_idx))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.values[self.n_val % len(self.values)])

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.n_val += 1


def test_spec_top_k_by_val_loss_and_best_model_path(tmp_path):
    train, val = loaders()
    checkpoint_callback = ModelCheckpoint(dirpath="my/path/", save_top_k=2, monitor="val_loss")
    trainer = quiet_trainer(callbacks=[checkpoint_callback], max_epochs=5)
    trainer.fit(ScriptedModel(), train, val)
    files = sorted(os.listdir(tmp_path / "my/path"))
    assert files == ["epoch=1-step=16.ckpt", "epoch=3-step=32.ckpt"]  # val_loss 0.3 and 0.2
    assert checkpoint_callback.best_model_path == str(tmp_path / "my/path/epoch=3-step=32.ckpt")
    assert float(checkpoint_callback.best_model_score) == pytest.approx(0.2)
    assert checkpoint_callback.kth_best_model_path.endswith("epoch=1-step=16.ckpt")
    assert float(checkpoint_callback.kth_value) == pytest.approx(0.3)
    assert set(checkpoint_callback.best_k_models) == {str(tmp_path / "my/path" / f) for f in files}


def test_spec_filename_with_metrics_exactly_as_printed(tmp_path):
    train, val = loaders()
    checkpoint_callback = ModelCheckpoint(
        dirpath="my/path/", filename="sample-mnist-{epoch:02d}-{val_loss:.2f}"
    )
    trainer = quiet_trainer(callbacks=[checkpoint_callback], max_epochs=3)
    trainer.fit(ScriptedModel(values=(0.5, 0.7, 0.32)), train, val)
    assert os.listdir(tmp_path / "my/path") == ["sample-mnist-epoch=02-val_loss=0.32.ckpt"]


def test_spec_top_10_min_val_loss_keeps_all_when_fewer(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(
        save_top_k=10,
        monitor="val_loss",
        mode="min",
        dirpath="my/path/",
        filename="sample-mnist-{epoch:02d}-{val_loss:.2f}",
    )
    quiet_trainer(callbacks=[cb], max_epochs=3).fit(ScriptedModel(), train, val)
    assert sorted(os.listdir(tmp_path / "my/path")) == [
        "sample-mnist-epoch=00-val_loss=0.50.ckpt",
        "sample-mnist-epoch=01-val_loss=0.30.ckpt",
        "sample-mnist-epoch=02-val_loss=0.40.ckpt",
    ]


def test_spec_last_k_by_logged_global_step(tmp_path):
    class LogsStep(ScriptedModel):
        def training_step(self, batch, batch_idx):
            self.log("global_step", float(self.global_step))
            return super().training_step(batch, batch_idx)

    train, val = loaders()
    cb = ModelCheckpoint(
        save_top_k=2,
        monitor="global_step",
        mode="max",
        dirpath="my/path/",
        filename="sample-mnist-{epoch:02d}-{global_step}",
    )
    quiet_trainer(callbacks=[cb], max_epochs=4).fit(LogsStep(), train, val)
    assert sorted(os.listdir(tmp_path / "my/path")) == [
        "sample-mnist-epoch=02-global_step=23.0.ckpt",
        "sample-mnist-epoch=03-global_step=31.0.ckpt",
    ]


def test_spec_any_logged_training_metric_can_be_monitored(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(monitor="my_metric", mode="max", save_on_train_epoch_end=True, dirpath="ck")
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(ScriptedModel(), train, val)
    assert os.path.basename(cb.best_model_path) == "epoch=0-step=8.ckpt"


def test_every_n_train_steps(tmp_path):
    train, _ = loaders()
    cb = ModelCheckpoint(dirpath="ck", every_n_train_steps=5, save_top_k=-1)
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(TinyModel(), train)
    assert sorted(os.listdir("ck")) == ["epoch=0-step=5.ckpt", "epoch=1-step=10.ckpt", "epoch=1-step=15.ckpt"]


def test_every_n_epochs(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", every_n_epochs=2, save_top_k=-1)
    quiet_trainer(callbacks=[cb], max_epochs=5).fit(TinyModel(), train, val)
    assert sorted(os.listdir("ck")) == ["epoch=1-step=16.ckpt", "epoch=3-step=32.ckpt"]


def test_train_time_interval_saves_by_wall_time(tmp_path, monkeypatch):
    class Clock:  # the training clock, advanced 30 ms by every step: no dependence on the machine's speed
        now = 1000.0

        @classmethod
        def monotonic(cls):
            return cls.now

    monkeypatch.setattr(fit_loop, "time", Clock)

    class Slow(TinyModel):
        def training_step(self, batch, batch_idx):
            Clock.now += 0.03
            return super().training_step(batch, batch_idx)

    train, _ = loaders()
    cb = ModelCheckpoint(dirpath="ck", train_time_interval=timedelta(seconds=0.1), save_top_k=-1)
    quiet_trainer(callbacks=[cb], max_epochs=1).fit(Slow(), train)
    # 8 steps x 30 ms: 120 ms have passed after step 4 and 120 ms more after step 8.
    assert sorted(os.listdir("ck")) == ["epoch=0-step=4.ckpt", "epoch=0-step=8.ckpt"]


def test_step_triggered_save_waits_for_the_first_validation(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", every_n_train_steps=3, save_top_k=-1)
    quiet_trainer(callbacks=[cb], max_epochs=2, num_sanity_val_steps=0).fit(ScriptedModel(), train, val)
    steps = sorted(int(f.split("step=")[1].split(".")[0]) for f in os.listdir("ck"))
    # Steps 3 and 6 came before val_loss existed: one save waits for the end of the first validation (step 8).
    assert steps == [8, 9, 12, 15]


def test_missing_monitor_key_names_it_and_lists_metrics(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(monitor="val_acc")
    with pytest.raises(KeyError, match=r"val_acc.*'val_loss'"):
        quiet_trainer(callbacks=[cb], max_epochs=1).fit(TinyModel(), train, val)


def test_save_last_always_holds_the_most_recent_state(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_last=True)
    trainer = quiet_trainer(callbacks=[cb], max_epochs=4)
    trainer.fit(ScriptedModel(values=(0.1, 0.5, 0.6, 0.7)), train, val)  # stops improving after epoch 0
    assert sorted(os.listdir("ck")) == ["epoch=0-step=8.ckpt", "last.ckpt"]
    last = torch.load("ck/last.ckpt", weights_only=True)
    assert last["global_step"] == 32 and cb.last_model_path == str(tmp_path / "ck/last.ckpt")


def test_save_last_with_top_k_zero(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", save_top_k=0, save_last=True)
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(TinyModel(), train, val)
    assert os.listdir("ck") == ["last.ckpt"]
    assert torch.load("ck/last.ckpt", weights_only=True)["global_step"] == 16


def test_save_last_link_is_a_second_name_of_the_newest_file(tmp_path):
    # Lightning makes a symbolic link; savepoint a hard link (never dangling), see docs/design.md
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", save_top_k=-1, save_last="link")
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(TinyModel(), train, val)
    assert not os.path.islink("ck/last.ckpt")
    assert os.stat("ck/last.ckpt").st_ino == os.stat("ck/epoch=1-step=16.ckpt").st_ino
    assert torch.load("ck/last.ckpt", weights_only=True)["global_step"] == 16


def test_save_last_link_is_a_copy_through_a_custom_checkpoint_io(tmp_path):
    class Custom(TorchCheckpointIO):
        pass

    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", save_top_k=1, save_last="link")
    quiet_trainer(callbacks=[cb], plugins=[Custom()], max_epochs=1).fit(TinyModel(), train, val)
    assert not os.path.islink("ck/last.ckpt") and os.path.isfile("ck/last.ckpt")


def test_save_weights_only_file_still_loads_with_load_from_checkpoint(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", save_weights_only=True)
    quiet_trainer(callbacks=[cb], max_epochs=1).fit(TinyModel(hidden=7), train, val)
    ckpt = torch.load(cb.best_model_path, weights_only=True)
    assert "optimizer_states" not in ckpt and "callbacks" not in ckpt and "loops" not in ckpt
    assert TinyModel.load_from_checkpoint(cb.best_model_path).hparams.hidden == 7
    with pytest.raises(sp.WeightsOnlyCheckpointError, match="weights-only"):
        quiet_trainer(max_epochs=2).fit(TinyModel(hidden=7), train, val, ckpt_path=cb.best_model_path)


def test_auto_insert_metric_name_false(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(
        dirpath="ck", filename="{epoch:02d}-{val_loss:.2f}", auto_insert_metric_name=False, monitor="val_loss"
    )
    quiet_trainer(callbacks=[cb], max_epochs=1).fit(ScriptedModel(values=(0.25,)), train, val)
    assert os.listdir("ck") == ["00-0.25.ckpt"]


def test_existing_file_of_another_run_gets_a_version_suffix(tmp_path):
    train, val = loaders()
    for _ in range(2):
        cb = ModelCheckpoint(dirpath="ck", filename="fixed")
        quiet_trainer(callbacks=[cb], max_epochs=1).fit(TinyModel(), train, val)
    assert sorted(os.listdir("ck")) == ["fixed-v1.ckpt", "fixed.ckpt"]


def test_version_counter_disabled_overwrites(tmp_path):
    train, val = loaders()
    for _ in range(2):
        cb = ModelCheckpoint(dirpath="ck", filename="fixed", enable_version_counter=False)
        quiet_trainer(callbacks=[cb], max_epochs=1).fit(TinyModel(), train, val)
    assert os.listdir("ck") == ["fixed.ckpt"]


def test_nan_monitored_value_never_becomes_best(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=1)
    with pytest.warns(UserWarning, match="non-finite"):
        quiet_trainer(callbacks=[cb], max_epochs=3).fit(
            ScriptedModel(values=(0.4, math.nan, 0.5)), train, val
        )
    assert os.listdir("ck") == ["epoch=0-step=8.ckpt"]


class Recording(TorchCheckpointIO):
    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        super().save_checkpoint(checkpoint, path, storage_options)
        self.events.append(("save", os.path.basename(path)))

    def remove_checkpoint(self, path):
        super().remove_checkpoint(path)
        self.events.append(("remove", os.path.basename(path)))


def test_removal_goes_through_the_checkpoint_io_after_the_replacement_is_saved(tmp_path):
    train, val = loaders()
    io = Recording()
    cb = ModelCheckpoint(dirpath="ck")
    quiet_trainer(callbacks=[cb], plugins=[io], max_epochs=3).fit(TinyModel(), train, val)
    assert io.events == [
        ("save", "epoch=0-step=8.ckpt"),
        ("save", "epoch=1-step=16.ckpt"),
        ("remove", "epoch=0-step=8.ckpt"),
        ("save", "epoch=2-step=24.ckpt"),
        ("remove", "epoch=1-step=16.ckpt"),
    ]


def test_resume_continues_the_top_k(tmp_path):
    train, val = loaders()
    values = (0.5, 0.3, 0.4, 0.2, 0.6, 0.1)
    cb = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=2)
    quiet_trainer(callbacks=[cb], max_epochs=3).fit(ScriptedModel(values=values), train, val)
    assert sorted(os.listdir("ck")) == ["epoch=1-step=16.ckpt", "epoch=2-step=24.ckpt"]

    model = ScriptedModel(values=values)
    model.n_val = 3
    cb2 = ModelCheckpoint(dirpath="ck", monitor="val_loss", save_top_k=2)
    quiet_trainer(callbacks=[cb2], max_epochs=6).fit(model, train, val, ckpt_path="ck/epoch=2-step=24.ckpt")
    # 0.2 at epoch 3 evicts 0.4 (epoch 2) from the top-k, but that is the file resumed from: it stays on disk.
    assert sorted(os.listdir("ck")) == [
        "epoch=2-step=24.ckpt",
        "epoch=3-step=32.ckpt",
        "epoch=5-step=48.ckpt",
    ]
    assert sorted(os.path.basename(p) for p in cb2.best_k_models) == [
        "epoch=3-step=32.ckpt",
        "epoch=5-step=48.ckpt",
    ]
    assert float(cb2.best_model_score) == pytest.approx(0.1)


def test_changed_dirpath_warns_and_keeps_old_files(tmp_path):
    train, val = loaders()
    quiet_trainer(callbacks=[ModelCheckpoint(dirpath="old")], max_epochs=1).fit(TinyModel(), train, val)
    with pytest.warns(UserWarning, match="checkpoint folder changed"):
        quiet_trainer(callbacks=[ModelCheckpoint(dirpath="new")], max_epochs=2).fit(
            TinyModel(), train, val, ckpt_path="old/epoch=0-step=8.ckpt"
        )
    assert os.listdir("old") == ["epoch=0-step=8.ckpt"]


def test_unwritable_folder_fails_before_the_first_step(tmp_path):
    class CountSteps(TinyModel):
        steps = 0

        def training_step(self, batch, batch_idx):
            CountSteps.steps += 1
            return super().training_step(batch, batch_idx)

    train, val = loaders()
    (tmp_path / "blocker").write_text("a file in the way")
    with pytest.raises(NotADirectoryError, match="blocker"):
        quiet_trainer(callbacks=[ModelCheckpoint(dirpath="blocker/ck")]).fit(CountSteps(), train, val)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):  # root ignores permissions: the file-in-the-way case above still ran
        return
    with pytest.raises(PermissionError, match="ro"):
        quiet_trainer(callbacks=[ModelCheckpoint(dirpath="ro/ck")]).fit(CountSteps(), train, val)
    assert CountSteps.steps == 0


def test_modelcheckpoint_constructor_errors_name_both_arguments():
    with pytest.raises(ValueError, match=r"every_n_train_steps.*every_n_epochs"):
        ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1)
    with pytest.raises(ValueError, match=r"save_top_k.*monitor"):
        ModelCheckpoint(save_top_k=3)


def test_class_attributes_users_know():
    assert ModelCheckpoint.CHECKPOINT_JOIN_CHAR == "-"
    assert ModelCheckpoint.CHECKPOINT_NAME_LAST == "last"
    assert ModelCheckpoint.FILE_EXTENSION == ".ckpt"
    assert ModelCheckpoint.STARTING_VERSION == 1


def test_manual_save_checkpoint_and_load(tmp_path):
    train, val = loaders()
    model = TinyModel()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, train, val)
    trainer.save_checkpoint("example.ckpt")
    new_model = TinyModel.load_from_checkpoint(checkpoint_path="example.ckpt")
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), new_model.state_dict().values())
    )


def test_remote_dirpath_memory_filesystem():
    import fsspec

    train, val = loaders()
    cb = ModelCheckpoint(dirpath="memory://bucket/ck", save_last=True)
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(TinyModel(), train, val)
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls("/bucket/ck", detail=False))
    assert names == ["epoch=1-step=16.ckpt", "last.ckpt"]
    assert TinyModel.load_from_checkpoint("memory://bucket/ck/last.ckpt").hparams.hidden == 16
    fs.rm("/bucket", recursive=True)


def test_early_stopping_state_in_checkpoint(tmp_path):
    train, val = loaders()
    es = sp.EarlyStopping(monitor="val_loss", patience=2)
    trainer = quiet_trainer(callbacks=[es, ModelCheckpoint(dirpath="ck", save_last=True)], max_epochs=10)
    trainer.fit(ScriptedModel(values=(0.5, 0.6, 0.7, 0.8)), train, val)
    assert trainer.current_epoch == 3 and es.stopped_epoch == 2
    state = torch.load("ck/last.ckpt", weights_only=True)["callbacks"][es.state_key]
    assert state["wait_count"] == 2 and float(state["best_score"]) == pytest.approx(0.5)


def test_validate_returns_metrics(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    model = TinyModel()
    trainer.fit(model, train, val)
    out = trainer.validate(model, val, verbose=False)
    expected = sum(F.cross_entropy(model(x), y).item() * len(x) for x, y in val) / 16
    assert out[0]["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_without_version_counter_a_reused_name_records_the_new_score(tmp_path):
    train, val = loaders()
    cb = ModelCheckpoint(
        dirpath="ck", filename="fixed", monitor="val_loss", save_top_k=2, enable_version_counter=False
    )
    quiet_trainer(callbacks=[cb], max_epochs=2).fit(ScriptedModel(values=(0.5, 0.3)), train, val)
    assert os.listdir("ck") == ["fixed.ckpt"]
    assert {os.path.basename(p): round(float(v), 3) for p, v in cb.best_k_models.items()} == {
        "fixed.ckpt": 0.3
    }
    assert float(cb.best_model_score) == pytest.approx(0.3)
