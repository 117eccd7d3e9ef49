"""load_from_checkpoint and hyperparameters compared with Lightning 2.6.6 (issue 10, items 19 to 23)."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import pathlib
import warnings

import pytest
import torch
from torch import nn

from savepoint import register_hparams_class

from .harness import framework, loaders, module_class, on_both


def _trained(fw, root):
    """A checkpoint of the tiny module (lr=0.25) and the class that wrote it."""
    cls = module_class(fw)
    trainer = fw.trainer(root, max_epochs=1, enable_checkpointing=False)
    trainer.fit(cls(lr=0.25), loaders()[0])
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt", cls


def _with_extra_layer(cls, strict_loading=None):
    class Wider(cls):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.register_buffer("extra", torch.zeros(2))  # a key the checkpoint lacks; no new parameter
            if strict_loading is not None:
                self.strict_loading = strict_loading

    return Wider


def test_load_from_checkpoint_strict_none_follows_strict_loading(tmp_path):
    """Item 19: strict=None is the default (strict), and the module's strict_loading=False loosens it."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        with pytest.raises(Exception, match="extra"):
            _with_extra_layer(cls).load_from_checkpoint(path, strict=None)
        with pytest.warns(UserWarning, match="extra"):
            loose = _with_extra_layer(cls, strict_loading=False).load_from_checkpoint(path)
        return float(loose.hparams.lr), loose.strict_loading

    assert on_both(scenario, tmp_path) == {"lightning": (0.25, False), "savepoint": (0.25, False)}


def test_load_from_checkpoint_strict_conflicting_with_strict_loading_is_reported(tmp_path):
    """Item 19: strict=True against strict_loading=False is a ValueError naming both."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        with pytest.raises(ValueError, match="strict_loading") as err:
            _with_extra_layer(cls, strict_loading=False).load_from_checkpoint(path, strict=True)
        return "strict=True" in str(err.value)

    assert on_both(scenario, tmp_path) == {"lightning": True, "savepoint": True}


def test_fit_ckpt_path_honours_strict_loading(tmp_path):
    """Item 19: fit(ckpt_path=) loads the weights with the module's strict_loading."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        trainer = fw.trainer(root, max_epochs=2, enable_checkpointing=False)
        trainer.fit(_with_extra_layer(cls, strict_loading=False)(lr=0.25), loaders()[0], ckpt_path=str(path))
        return trainer.global_step

    assert on_both(scenario, tmp_path) == {"lightning": 8, "savepoint": 8}


def test_load_from_checkpoint_accepts_weights_only_and_ignores_unknown_keywords(tmp_path):
    """Item 20: weights_only= is accepted; a keyword __init__ does not take is ignored (savepoint warns)."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = cls.load_from_checkpoint(path, weights_only=True, hidden=32)
        warned = any("hidden" in str(w.message) for w in caught)
        return float(model.hparams.lr), warned, model.net[0].weight.sum().item() != 0

    got = on_both(scenario, tmp_path)
    assert got["lightning"] == (0.25, False, True)
    assert got["savepoint"] == (0.25, True, True)


def test_datamodule_load_from_checkpoint_builds_defaults_without_stored_hparams(tmp_path):
    """Item 21: map_location= is accepted; no datamodule hyperparameters in the file -> its defaults."""

    def scenario(fw, root):
        class Data(fw.DataModule):
            def __init__(self, batch_size: int = 8):
                super().__init__()
                self.batch_size = batch_size

            def train_dataloader(self):
                return loaders(batch_size=self.batch_size)[0]

        trainer = fw.trainer(root, max_epochs=1, enable_checkpointing=False)
        trainer.fit(module_class(fw)(), datamodule=Data(batch_size=16))
        trainer.save_checkpoint(root / "model.ckpt")
        dm = Data.load_from_checkpoint(root / "model.ckpt", map_location="cpu")
        return dm.batch_size

    assert on_both(scenario, tmp_path) == {"lightning": 8, "savepoint": 8}


def test_load_from_checkpoint_missing_hparams_file_warns_and_keeps_stored_hparams_unlike_lightning(tmp_path):
    """Item 22, a documented difference: a missing hparams_file warns on both; Lightning then builds the module
    from empty hyperparameters (its defaults), savepoint from those stored in the checkpoint."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        with pytest.warns(Warning, match="missing.yaml"):  # Lightning: a RuntimeWarning "Missing Tags"
            model = cls.load_from_checkpoint(path, hparams_file=root / "missing.yaml")
        return float(model.hparams.lr)

    assert on_both(scenario, tmp_path) == {"lightning": 0.1, "savepoint": 0.25}


def test_hparams_capture_follows_lightning_rules(tmp_path):
    """Item 22: an __init__ whose first parameter is not `self`; a subclass ignoring a key its base saved;
    an nn.Module hyperparameter warns; save_hyperparameters(5) is a ValueError."""

    def scenario(fw, root):
        class NotSelf(fw.Module):
            def __init__(obj, a: int = 1):
                super().__init__()
                obj.save_hyperparameters()

        class Base(fw.Module):
            def __init__(self, a: int = 1, b: int = 2):
                super().__init__()
                self.save_hyperparameters()

        class Sub(Base):
            def __init__(self, a: int = 1, b: int = 2, c: int = 3):
                super().__init__(a, b)
                self.save_hyperparameters(ignore=["b"])

        class WithModule(fw.Module):
            def __init__(self, encoder: nn.Module):
                super().__init__()
                self.save_hyperparameters()

        class Five(fw.Module):
            def __init__(self):
                super().__init__()
                self.save_hyperparameters(5)

        with pytest.warns(UserWarning, match="nn.Module"):
            WithModule(nn.Linear(1, 1))
        with pytest.raises(ValueError):
            Five()
        return dict(NotSelf(a=5).hparams), dict(Sub().hparams)

    got = on_both(scenario, tmp_path)
    assert got["savepoint"] == got["lightning"] == ({"a": 5}, {"a": 1, "c": 3})


def test_load_from_checkpoint_not_self_init_and_empty_state_dict(tmp_path):
    """Item 22: __init__(obj, ...) loads; an empty state_dict loads with a warning."""

    def scenario(fw, root):
        class Empty(fw.Module):
            def __init__(obj, a: int = 1):
                super().__init__()
                obj.save_hyperparameters()

        checkpoint = {"state_dict": {}, "hyper_parameters": {"a": 7}, "epoch": 0, "global_step": 0}
        checkpoint["pytorch-lightning_version"] = "2.6.6"  # a file of the layout users know
        torch.save(checkpoint, root / "empty.ckpt")
        with pytest.warns(UserWarning, match="no parameters"):
            model = Empty.load_from_checkpoint(root / "empty.ckpt")
        return model.hparams.a

    assert on_both(scenario, tmp_path) == {"lightning": 7, "savepoint": 7}


def test_load_from_checkpoint_reads_legacy_module_arguments(tmp_path):
    """Item 22: old files stored hyperparameters under `module_arguments`."""

    def scenario(fw, root):
        path, cls = _trained(fw, root)
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["module_arguments"] = {"lr": 0.75}
        for key in ("hyper_parameters", "hparams_name", "format_version", "savepoint_version"):
            checkpoint.pop(key, None)
        torch.save(checkpoint, root / "legacy.ckpt")
        return float(cls.load_from_checkpoint(root / "legacy.ckpt").hparams.lr)

    assert on_both(scenario, tmp_path) == {"lightning": 0.75, "savepoint": 0.75}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@register_hparams_class  # a dataclass read back from YAML is rebuilt only when registered
@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.99)


RICH_HPARAMS = {
    "lr": 0.1,
    "layers": [16, 8],
    "nested": {"a": 1, "b": None},
    "ns": argparse.Namespace(depth=3, act="relu"),
    "path": pathlib.Path("/data/train"),
    "pure": pathlib.PurePosixPath("rel/dir"),
    "color": Color.BLUE,
    "optim": Optim(),
    "shape": (3, 4),
    "tags": {"x", "y"},
    "frozen": frozenset({1, 2}),
    "dtype": torch.bfloat16,
    "device": torch.device("cpu"),
    "weights": torch.tensor([0.5, 2.0]),
}


def test_save_hparams_to_yaml_round_trips_every_stored_type(tmp_path):
    """Item 23: `savepoint.core.saving` round-trips what savepoint stores: Namespace, paths, enums, dataclasses,
    tuples, sets, dtypes, devices, tensors."""
    from savepoint.core.saving import load_hparams_from_yaml, save_hparams_to_yaml

    save_hparams_to_yaml(tmp_path / "hparams.yaml", RICH_HPARAMS)
    loaded = load_hparams_from_yaml(tmp_path / "hparams.yaml")
    weights = loaded.pop("weights")
    expected = {k: v for k, v in RICH_HPARAMS.items() if k != "weights"}
    assert loaded == expected
    torch.testing.assert_close(weights, RICH_HPARAMS["weights"])
    assert type(loaded["path"]) is type(RICH_HPARAMS["path"])
    assert isinstance(loaded["ns"], argparse.Namespace)


def test_hparams_yaml_of_plain_values_reads_the_same_on_both(tmp_path):
    """Item 23: for plain values each framework reads the other's file."""
    plain = {"lr": 0.1, "layers": [16, 8], "nested": {"a": 1, "b": None}, "name": "net"}
    from lightning.pytorch.core.saving import load_hparams_from_yaml as pl_load
    from lightning.pytorch.core.saving import save_hparams_to_yaml as pl_save

    from savepoint.core.saving import load_hparams_from_yaml, save_hparams_to_yaml

    save_hparams_to_yaml(tmp_path / "sp.yaml", plain)
    pl_save(tmp_path / "pl.yaml", plain)
    assert pl_load(tmp_path / "sp.yaml") == plain
    assert load_hparams_from_yaml(tmp_path / "pl.yaml") == plain


def test_core_package_exports_the_names_users_import():
    """Item 23: `from savepoint.core import LightningModule` works like Lightning's `lightning.pytorch.core`."""
    import savepoint
    from savepoint.core import DataModule, LightningDataModule, LightningModule, TrainingModule

    assert LightningModule is TrainingModule is savepoint.TrainingModule
    assert LightningDataModule is DataModule is savepoint.DataModule
    assert framework("savepoint").Module is LightningModule
