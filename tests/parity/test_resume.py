"""Resuming compared with Lightning 2.6.6 (issue 10, items 12, 13, 14)."""

from __future__ import annotations

import pytest
import torch

import savepoint as sp

from .harness import fit_with_checkpoint, framework, loaders, module_class, on_both


def _recorder(fw):
    class Recorder(fw.Callback):
        def __init__(self):
            self.events = []

        def _lr(self, trainer):
            return round(trainer.optimizers[0].param_groups[0]["lr"], 6)

        def on_fit_start(self, trainer, pl_module):
            self.events.append(
                ("on_fit_start", trainer.current_epoch, trainer.global_step, self._lr(trainer))
            )

        def on_train_start(self, trainer, pl_module):
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            state = (trainer.current_epoch, trainer.global_step, self._lr(trainer), scheduler.last_epoch)
            self.events.append(("on_train_start", *state))

        def on_train_epoch_start(self, trainer, pl_module):
            self.events.append(("on_train_epoch_start", trainer.current_epoch, trainer.global_step))

    return Recorder()


def test_resume_from_epoch_end_starts_at_the_next_epoch(tmp_path):
    """Item 12: after a checkpoint of epoch 0, on_train_start sees epoch 1 and the restored step; optimizer and
    scheduler states are restored; the resumed run ends with the same weights on both frameworks."""

    def scenario(fw, root):
        torch.manual_seed(0)
        fit_with_checkpoint(fw, root, dict(save_top_k=-1), scheduler=True, max_epochs=2)
        recorder = _recorder(fw)
        torch.manual_seed(1)
        trainer = fw.trainer(root, callbacks=[recorder], max_epochs=3, enable_checkpointing=False)
        model = module_class(fw)(scheduler=True)
        train, val = loaders()
        trainer.fit(model, train, val, ckpt_path=str(root / "ckpt" / "epoch=0-step=4.ckpt"))
        return recorder.events, model.state_dict()

    with pytest.warns(UserWarning):  # neither run has the ModelCheckpoint that wrote the file
        got = on_both(scenario, tmp_path)
    assert got["savepoint"][0] == got["lightning"][0]
    assert got["savepoint"][0][1] == ("on_train_start", 1, 4, 0.05, 1)
    for key, value in got["lightning"][1].items():
        torch.testing.assert_close(got["savepoint"][1][key], value, rtol=0, atol=0)


def _finetune_module(fw):
    base = module_class(fw)

    class FineTune(base):
        """Trains the head only; `Unfreeze` adds the backbone as a second parameter group."""

        def configure_optimizers(self):
            return torch.optim.SGD(self.net[2].parameters(), lr=0.1, momentum=0.9)

    class Unfreeze(fw.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.optimizers[0].add_param_group({"params": list(pl_module.net[0].parameters()), "lr": 0.01})

    return FineTune, Unfreeze


def test_resume_restores_parameter_groups_added_in_on_fit_start(tmp_path):
    """Item 13: optimizers are created, on_fit_start runs, then their state is restored."""

    def scenario(fw, root):
        FineTune, Unfreeze = _finetune_module(fw)
        torch.manual_seed(0)
        cb = fw.ModelCheckpoint(dirpath=str(root / "ckpt"))
        train, val = loaders()
        fw.trainer(root, callbacks=[Unfreeze(), cb], max_epochs=1).fit(FineTune(), train, val)
        saved = torch.load(cb.best_model_path, weights_only=True)["optimizer_states"][0]
        resumed = fw.trainer(root, callbacks=[Unfreeze()], max_epochs=1, enable_checkpointing=False)
        resumed.fit(FineTune(), train, val, ckpt_path=cb.best_model_path)
        groups = resumed.optimizers[0].state_dict()["param_groups"]
        return [(len(g["params"]), g["lr"]) for g in groups], len(saved["state"])

    with pytest.warns(UserWarning):
        got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert got["savepoint"] == ([(2, 0.1), (2, 0.01)], 4)


def test_resume_parameter_group_mismatch_names_the_file(tmp_path):
    """Item 13: a checkpoint with another set of parameter groups is a StateMismatchError naming the file."""
    fw = framework("savepoint")
    FineTune, Unfreeze = _finetune_module(fw)
    cb = fw.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"))
    train, val = loaders()
    fw.trainer(tmp_path, callbacks=[Unfreeze(), cb], max_epochs=1).fit(FineTune(), train, val)
    trainer = fw.trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    with pytest.raises(sp.StateMismatchError, match=r"2 parameter group\(s\).*the optimizer 1") as err:
        trainer.fit(FineTune(), train, val, ckpt_path=cb.best_model_path)
    assert cb.best_model_path in str(err.value)
    assert err.value.path == cb.best_model_path


def test_resume_without_loop_state_starts_at_the_next_epoch_unlike_lightning(tmp_path):
    """Item 14, a documented difference: a checkpoint without loop state resumes at the epoch boundary after its
    `epoch`, keeping its `global_step`, with a warning. Lightning silently restarts at epoch 0, step 0."""

    def scenario(fw, root):
        cb = dict(every_n_train_steps=2, save_top_k=-1)
        fit_with_checkpoint(fw, root, cb, scheduler=True, max_epochs=1)
        checkpoint = torch.load(root / "ckpt" / "epoch=0-step=2.ckpt", weights_only=True)
        del checkpoint["loops"]
        torch.save(checkpoint, root / "no_loops.ckpt")
        recorder = _recorder(fw)
        trainer = fw.trainer(root, callbacks=[recorder], max_epochs=2, enable_checkpointing=False)
        train, val = loaders()
        trainer.fit(module_class(fw)(scheduler=True), train, val, ckpt_path=str(root / "no_loops.ckpt"))
        return [e[:3] for e in recorder.events if e[0] == "on_train_start"], trainer.global_step

    with pytest.warns(UserWarning, match="resumes at the start of epoch 1"):
        got = on_both(scenario, tmp_path)
    assert got["lightning"] == ([("on_train_start", 0, 0)], 8)
    assert got["savepoint"] == ([("on_train_start", 1, 2)], 6)
