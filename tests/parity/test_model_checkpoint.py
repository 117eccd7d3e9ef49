"""ModelCheckpoint decisions compared with Lightning 2.6.6 (issue 10, items 1, 2, 3, 6, 7, 9)."""

from __future__ import annotations

import inspect
import math
import os

import pytest
import torch

import savepoint as sp

from .harness import checkpoint_view, files, fit_with_checkpoint, framework, loaders, module_class, on_both

RISING = (0.1, 0.5, 1.0)


def _view(cb_kwargs, val_values=(), **trainer_kwargs):
    def scenario(fw, root):
        found, view, _ = fit_with_checkpoint(fw, root, cb_kwargs, val_values, **trainer_kwargs)
        return found, view

    return scenario


def test_model_checkpoint_step_save_ranks_on_the_validation_that_follows(tmp_path):
    """Item 1: a step-triggered save due just before validation waits for it and ranks on its value."""
    cb = dict(monitor="val_metric", mode="max", every_n_train_steps=4, save_on_train_epoch_end=False)
    got = on_both(_view(cb, RISING, max_epochs=3), tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert got["savepoint"][1]["best_model_score"] == pytest.approx(1.0)


def test_model_checkpoint_step_save_with_default_epoch_end_ranks_on_fresh_value_unlike_lightning(tmp_path):
    """Item 1, a documented difference: with the default save_on_train_epoch_end Lightning ranks a step
    save due at the last batch on the previous validation's value (0.5); savepoint waits for the fresh one."""
    cb = dict(monitor="val_metric", mode="max", every_n_train_steps=4)
    got = on_both(_view(cb, RISING, max_epochs=3), tmp_path)
    assert got["lightning"][1]["best_model_score"] == pytest.approx(0.5)
    assert got["savepoint"][1]["best_model_score"] == pytest.approx(1.0)
    assert got["savepoint"][0] == got["lightning"][0]


@pytest.mark.parametrize("monitor", [None, "val_metric"])
def test_model_checkpoint_max_steps_inside_an_epoch_still_saves(tmp_path, monitor):
    """Item 2: max_steps ending training mid-epoch leaves the end-of-training checkpoint and last.ckpt."""
    cb = dict(monitor=monitor, mode="max", save_last=True)
    got = on_both(_view(cb, RISING, max_steps=6), tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert "last.ckpt" in got["savepoint"][0]
    last = torch.load(tmp_path / "savepoint" / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6


def test_model_checkpoint_max_steps_checkpoint_resumes_with_last(tmp_path):
    """Item 2: the end-of-training save is what a later ckpt_path="last" resumes."""
    fw = framework("savepoint")
    fit_with_checkpoint(fw, tmp_path, dict(save_last=True), max_steps=6)
    cb = fw.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    trainer = fw.trainer(tmp_path, callbacks=[cb], max_steps=8)
    train, val = loaders()
    trainer.fit(module_class(fw)(), train, val, ckpt_path="last")
    assert os.path.basename(trainer.ckpt_path) == "last.ckpt"
    assert trainer.global_step == 8


@pytest.mark.parametrize(
    "cb",
    [
        dict(save_last=True, every_n_epochs=0),
        dict(save_last=True, every_n_epochs=5),
        dict(save_last=True, save_top_k=0),
        dict(save_last=True, save_top_k=-1, every_n_epochs=2),
    ],
    ids=["every_n_epochs=0", "every_n_epochs>run", "save_top_k=0", "save_top_k=-1"],
)
def test_model_checkpoint_save_last_writes_last_without_a_top_k_save(tmp_path, cb):
    """Item 3: save_last=True writes last.ckpt whatever the top-k schedule."""
    got = on_both(_view(cb, max_epochs=3), tmp_path)
    assert got["savepoint"] == got["lightning"]
    last = torch.load(tmp_path / "savepoint" / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 12  # the final state


@pytest.mark.parametrize("mode", ["min", "max"])
def test_model_checkpoint_nan_score_is_stored_as_the_worst_infinity(tmp_path, mode):
    """Item 6: a NaN monitored value becomes +inf (min) / -inf (max) in best_model_score and current_score."""

    def scenario(fw, root):
        found, view, cb = fit_with_checkpoint(
            fw, root, dict(monitor="val_metric", mode=mode), (math.nan,), max_epochs=1
        )
        return found, view, float(cb.current_score)

    with pytest.warns(UserWarning, match="non-finite"):
        got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert got["savepoint"][1]["best_model_score"] == (math.inf if mode == "min" else -math.inf)


def test_model_checkpoint_without_monitor_has_no_best_k_models(tmp_path):
    """Item 6: monitor=None leaves best_k_models {} and kth_best_model_path ''."""
    got = on_both(_view(dict(monitor=None, save_top_k=-1), max_epochs=2), tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert got["savepoint"][1]["best_k_models"] == {}
    assert got["savepoint"][1]["kth_best_model_path"] == ""


def test_model_checkpoint_never_deletes_the_checkpoint_it_resumed_from(tmp_path):
    """Item 7: resuming into the same folder, the new top-k never removes the file the run started from."""

    def scenario(fw, root):
        cb_kwargs = dict(monitor="val_metric", mode="max", save_top_k=1)
        fit_with_checkpoint(fw, root, cb_kwargs, (0.9,), max_epochs=1)
        (start,) = files(root / "ckpt")
        cb = fw.ModelCheckpoint(dirpath=str(root / "ckpt"), **cb_kwargs)
        trainer = fw.trainer(root, callbacks=[cb], max_epochs=3)
        train, val = loaders()
        trainer.fit(
            module_class(fw)(val_values=(0.95, 1.0)), train, val, ckpt_path=str(root / "ckpt" / start)
        )
        return start, files(root / "ckpt"), checkpoint_view(cb, root / "ckpt")

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    start, found, _ = got["savepoint"]
    assert start in found


@pytest.mark.parametrize("cls", [sp.ModelCheckpoint, sp.Trainer], ids=["ModelCheckpoint", "Trainer"])
def test_model_checkpoint_signature_has_real_annotations(cls):
    """Item 9: tools that read the signature (jsonargparse) get types, not strings."""
    params = inspect.signature(cls).parameters
    for name, param in params.items():
        assert not isinstance(param.annotation, str), f"{name}: {param.annotation!r}"
    assert params["max_steps" if cls is sp.Trainer else "every_n_train_steps"].annotation in (int, int | None)


def test_model_checkpoint_deferred_save_is_made_at_validation_end_unlike_lightning(tmp_path):
    """Item 1, a documented difference: a step save due before the monitored metric exists waits for the next
    validation. Lightning does the same only with save_on_train_epoch_end=False; with the default it drops
    that save (its deferral flag is only read at validation end when saving there)."""

    def scenario(fw, root):
        cb = fw.ModelCheckpoint(dirpath=str(root), monitor="val_loss", every_n_train_steps=3, save_top_k=-1)
        trainer = fw.trainer(root, callbacks=[cb], max_epochs=2, num_sanity_val_steps=0)
        train, val = loaders(n_train=64)
        trainer.fit(module_class(fw)(), train, val)
        return [f for f in files(root) if f.endswith(".ckpt")]

    got = on_both(scenario, tmp_path)
    assert got["lightning"] == ["epoch=1-step=12.ckpt", "epoch=1-step=15.ckpt", "epoch=1-step=9.ckpt"]
    assert got["savepoint"] == ["epoch=0-step=8.ckpt", *got["lightning"]]


@pytest.mark.parametrize("shared_folder", [False, True])
def test_two_model_checkpoints_leave_the_files_lightning_leaves(tmp_path, shared_folder):
    """Several callbacks saving at one save point (written once by savepoint, linked): the same names, the
    same best/last paths as Lightning, which writes each file in full; in one folder the second callback's
    names get Lightning's ``-v1`` suffixes."""

    def scenario(fw, root):
        a_dir = root / "ckpt"
        b_dir = a_dir if shared_folder else root / "all"
        a = fw.ModelCheckpoint(
            dirpath=str(a_dir), monitor="val_metric", mode="max", save_top_k=2, save_last=True
        )
        b = fw.ModelCheckpoint(dirpath=str(b_dir), save_top_k=-1, save_last=True)
        trainer = fw.trainer(root, callbacks=[a, b], max_epochs=4)
        train, val = loaders()
        trainer.fit(module_class(fw)(val_values=(0.3, 0.9, 0.1, 0.5)), train, val)
        return files(a_dir), files(b_dir), checkpoint_view(a, a_dir), checkpoint_view(b, b_dir)

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    if shared_folder:
        assert "last-v1.ckpt" in got["savepoint"][0]
