"""The loop as users observe it, compared with Lightning 2.6.6 (issue 10, items 15, 16, 17, 18, 24)."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import DataLoader

from .harness import dataset, framework, loaders, module_class, on_both


def _random_validation(fw):
    class RandomVal(module_class(fw)):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            self.log("noise", torch.rand(()))  # draws from the global RNG, in the sanity check too

    return RandomVal


def test_sanity_check_leaves_the_random_streams_untouched(tmp_path):
    """Item 15: the same seed gives the same run (shuffled data, random draws in validation)."""

    def scenario(fw, root):
        torch.manual_seed(7)
        model = _random_validation(fw)()
        train = DataLoader(dataset(32), batch_size=8, shuffle=True)
        val = DataLoader(dataset(8, seed=1), batch_size=8)
        trainer = fw.trainer(root, max_epochs=2, enable_checkpointing=False, num_sanity_val_steps=2)
        trainer.fit(model, train, val)
        return model.state_dict(), torch.rand(3)

    got = on_both(scenario, tmp_path)
    for key, value in got["lightning"][0].items():
        torch.testing.assert_close(got["savepoint"][0][key], value, rtol=0, atol=0)
    torch.testing.assert_close(got["savepoint"][1], got["lightning"][1], rtol=0, atol=0)


def _csv_rows(root):
    (path,) = root.glob("runs/version_*/metrics.csv")
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_metrics_csv_numbers_rows_by_the_step_of_the_logging_batch(tmp_path):
    """Item 16: metrics.csv rows carry the step of the batch that logged, from 0; epoch-end rows share it."""

    def scenario(fw, root):
        torch.manual_seed(0)
        trainer = fw.trainer(
            root, logger=fw.csv_logger(root), max_epochs=2, log_every_n_steps=2, enable_checkpointing=False
        )
        train, val = loaders()
        trainer.fit(module_class(fw)(val_values=(1.0, 2.0)), train, val)
        return _csv_rows(root)

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert [row["step"] for row in got["savepoint"]] == [1, 3, 3, 5, 7, 7]


@pytest.mark.parametrize("argument", ["limit_train_batches", "limit_val_batches"])
def test_limit_fraction_rounding_to_no_batch_is_an_error_naming_the_argument(tmp_path, argument):
    """Item 17: Lightning raises MisconfigurationException; savepoint a ValueError naming the argument."""

    def scenario(fw, root):
        trainer = fw.trainer(root, max_epochs=1, enable_checkpointing=False, **{argument: 0.1})
        train, val = loaders()
        with pytest.raises(Exception, match=argument) as err:
            trainer.fit(module_class(fw)(), train, val)
        return isinstance(err.value, ValueError)

    got = on_both(scenario, tmp_path)
    assert got == {"lightning": False, "savepoint": True}


def test_module_validation_epoch_end_sees_that_epochs_metrics(tmp_path):
    """Item 18: the module's own on_validation_epoch_end reads this epoch's values in callback_metrics and
    logged_metrics."""

    def scenario(fw, root):
        class Reads(module_class(fw)):
            def on_validation_epoch_end(self):
                if not self.trainer.sanity_checking:
                    self.seen.append(
                        (
                            {k: float(v) for k, v in self.trainer.callback_metrics.items()},
                            sorted(self.trainer.logged_metrics),
                        )
                    )
                super().on_validation_epoch_end()

        torch.manual_seed(0)
        model = Reads(val_values=(0.25, 0.75))
        model.seen = []
        trainer = fw.trainer(root, max_epochs=2, logger=fw.csv_logger(root), enable_checkpointing=False)
        train, val = loaders()
        trainer.fit(model, train, val)
        return model.seen

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"]
    assert [seen[0]["val_metric"] for seen in got["savepoint"]] == [0.25, 0.75]


def test_validation_step_set_to_none_disables_validation(tmp_path):
    """Item 24: `model.validation_step = None` skips validation (the sanity check too)."""

    def scenario(fw, root):
        model = module_class(fw)()
        model.validation_step = None
        trainer = fw.trainer(root, max_epochs=1, enable_checkpointing=False)
        train, val = loaders()
        trainer.fit(model, train, val)
        return sorted(trainer.callback_metrics), model.val_runs

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"] == (["train_loss"], 0)


class PicklableModel(framework("savepoint").Module):
    """Module-level so that pickle finds it by name."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


@pytest.mark.parametrize("copy_with", ["pickle", "deepcopy", "torch.save"])
@pytest.mark.parametrize("what", ["module", "trainer"])
def test_trained_module_and_trainer_can_be_copied(tmp_path, copy_with, what):
    """Item 24: nothing a trained module or Trainer holds (locks, writer threads, graphs) prevents a copy."""
    import copy
    import io
    import pickle

    fw = framework("savepoint")
    model = PicklableModel()
    plugins = [fw.pkg.AsyncCheckpointIO()] if what == "trainer" else None
    trainer = fw.trainer(tmp_path, max_epochs=1, plugins=plugins)
    trainer.fit(model, loaders()[0])
    obj = model if what == "module" else trainer
    if copy_with == "pickle":
        clone = pickle.loads(pickle.dumps(obj))
    elif copy_with == "deepcopy":
        clone = copy.deepcopy(obj)
    else:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        clone = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    clone_model = clone if what == "module" else clone.model
    torch.testing.assert_close(clone_model.layer.weight, model.layer.weight)
    if what == "module":
        assert clone._trainer is None  # a copy is detached from the Trainer
