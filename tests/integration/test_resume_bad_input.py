"""Resuming from bad or unusual input: a clear error or warning, and nothing lost."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import savepoint as sp
from helpers import TinyModel, loaders, make_data, quiet_trainer

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_older_format_fixture_resumes_through_the_upgrade_path(tmp_path):
    shutil.copy(FIXTURES / "lightning_format_v0.ckpt", "old.ckpt")
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=3)
    with pytest.warns(UserWarning, match="not at the exact batch"):
        trainer.fit(TinyModel(), train, val, ckpt_path="old.ckpt")
    # the fixture ended epoch 1 at step 16: training resumed at epoch 2
    assert trainer.global_step == 24 and trainer.current_epoch == 3


def test_older_format_fixture_loads_with_load_from_checkpoint():
    model = TinyModel.load_from_checkpoint(FIXTURES / "lightning_format_v0.ckpt")
    ref = torch.load(FIXTURES / "lightning_format_v0.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())


def test_missing_checkpoint_file_is_a_clear_error():
    train, val = loaders()
    with pytest.raises(sp.CheckpointNotFoundError, match=r"nope.ckpt"):
        quiet_trainer().fit(TinyModel(), train, val, ckpt_path="nope.ckpt")


def test_file_that_is_not_a_checkpoint_is_a_clear_error():
    torch.save({"w": torch.ones(2)}, "bare.ckpt")
    train, val = loaders()
    with pytest.raises(sp.NotACheckpointError, match=r"bare.ckpt"):
        quiet_trainer().fit(TinyModel(), train, val, ckpt_path="bare.ckpt")


def test_weights_that_do_not_fit_list_the_keys_and_both_shapes():
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(TinyModel(hidden=16), train, val)
    path = trainer.checkpoint_callback.best_model_path
    with pytest.raises(
        sp.StateMismatchError, match=r"net\.0\.weight: checkpoint \(16, 8\) vs module \(32, 8\)"
    ):
        quiet_trainer(max_epochs=2).fit(TinyModel(hidden=32), train, val, ckpt_path=path)


def test_last_with_nothing_to_resume_warns_and_starts_fresh(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1)
    with pytest.warns(UserWarning, match="training starts from scratch"):
        trainer.fit(TinyModel(), train, val, ckpt_path="last")
    assert trainer.global_step == 8 and trainer.ckpt_path is None


def test_last_with_only_unreadable_files_fails_loudly(tmp_path):
    train, val = loaders()
    os.makedirs("checkpoints")
    Path("checkpoints/corrupt.ckpt").write_bytes(b"not a checkpoint")
    failing = pytest.raises(sp.CheckpointNotFoundError, match="every candidate failed to load")
    with pytest.warns(UserWarning, match="skipping"), failing:
        quiet_trainer().fit(TinyModel(), train, val, ckpt_path="last")


def test_last_skips_a_torn_newest_file_with_a_warning(tmp_path):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="ck", save_top_k=-1)
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), train, val)
    newest = Path("ck/epoch=1-step=16.ckpt")
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    os.rename(newest, "ck/epoch=1-step=16-torn.ckpt")
    os.utime("ck/epoch=1-step=16-torn.ckpt")  # the newest by time
    trainer = quiet_trainer(max_epochs=3, callbacks=[sp.ModelCheckpoint(dirpath="ck", save_top_k=-1)])
    with pytest.warns(UserWarning, match=r"skipping .*torn"):
        trainer.fit(TinyModel(), train, val, ckpt_path="last")
    assert trainer.global_step == 24  # resumed from epoch=0-step=8 (the newest good one)


def test_callback_state_without_a_matching_callback_warns_naming_it():
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, callbacks=[sp.EarlyStopping(monitor="val_loss")])
    trainer.fit(TinyModel(), train, val)
    path = trainer.checkpoint_callback.best_model_path
    with pytest.warns(UserWarning, match="EarlyStopping"):
        quiet_trainer(max_epochs=2).fit(TinyModel(), train, val, ckpt_path=path)


def test_resume_with_a_different_dataset_length_warns_and_continues(tmp_path):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="ck", every_n_train_steps=3, save_top_k=-1)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(TinyModel(), train, val)
    bigger = DataLoader(make_data(96), batch_size=8, shuffle=True)
    trainer = quiet_trainer(max_epochs=1)
    with pytest.warns(UserWarning, match=r"num_batches 8 -> 12.*exact resume is no longer possible"):
        trainer.fit(TinyModel(), bigger, val, ckpt_path="ck/epoch=0-step=3.ckpt")
    assert trainer.global_step == 12  # the rest of the (longer) epoch ran


def test_resume_with_a_different_batch_size_warns(tmp_path):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="ck", every_n_train_steps=3, save_top_k=-1)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(TinyModel(), train, val)
    other = DataLoader(make_data(64), batch_size=4, shuffle=True)
    with pytest.warns(UserWarning, match="batch_size 8 -> 4"):
        quiet_trainer(max_epochs=1).fit(TinyModel(), other, val, ckpt_path="ck/epoch=0-step=3.ckpt")


def test_resume_when_max_epochs_is_already_reached_says_so_and_does_not_train(capsys):
    class Count(TinyModel):
        steps = 0

        def training_step(self, batch, batch_idx):
            Count.steps += 1
            return super().training_step(batch, batch_idx)

    train, val = loaders()
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(TinyModel(), train, val)
    trainer.save_checkpoint("done.ckpt")
    t2 = quiet_trainer(max_epochs=2)
    t2.fit(Count(), train, val, ckpt_path="done.ckpt")
    assert Count.steps == 0 and t2.global_step == 16
    assert "already reached" in capsys.readouterr().out


def test_iterable_dataset_without_state_is_fast_forwarded_with_a_warning(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            data = make_data(64)
            for i in range(64):
                yield data[i]

    loader = DataLoader(Stream(), batch_size=8)
    cb = sp.ModelCheckpoint(dirpath="ck", every_n_train_steps=3, save_top_k=-1)
    quiet_trainer(max_epochs=1, limit_train_batches=8, callbacks=[cb]).fit(TinyModel(), loader)
    with pytest.warns(UserWarning, match="loading and discarding"):
        quiet_trainer(max_epochs=1, limit_train_batches=8).fit(
            TinyModel(), loader, ckpt_path="ck/epoch=0-step=3.ckpt"
        )


class PositionSampler(torch.utils.data.Sampler):
    """A sampler that knows its own position (as torchdata's stateful samplers do)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pos = 0
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()

    def __iter__(self):
        while self.pos < self.n:
            self.pos += 1
            yield self.order[self.pos - 1]
        self.pos = 0

    def __len__(self) -> int:
        return self.n

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def test_stateful_sampler_resumes_through_its_own_state(tmp_path):
    class Seen(TinyModel):
        def __init__(self):
            super().__init__()
            self.first_x = None

        def training_step(self, batch, batch_idx):
            if self.first_x is None:
                self.first_x = batch[0][0].clone()
            return super().training_step(batch, batch_idx)

    data = make_data(64)
    loader = DataLoader(data, batch_size=8, sampler=PositionSampler(64))
    cb = sp.ModelCheckpoint(dirpath="ck", every_n_train_steps=3, save_top_k=-1)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(TinyModel(), loader)
    state = torch.load("ck/epoch=0-step=3.ckpt", weights_only=True)["loops"]["fit_loop"]["data_state"]
    assert state == {"sampler": {"pos": 24}}
    model = Seen()
    resumed_loader = DataLoader(data, batch_size=8, sampler=PositionSampler(64))
    quiet_trainer(max_epochs=1).fit(model, resumed_loader, ckpt_path="ck/epoch=0-step=3.ckpt")
    expected_first = data[PositionSampler(64).order[24]][0]
    assert torch.equal(
        model.first_x, expected_first
    )  # batch 3 of the epoch: neither replayed nor skipped twice
