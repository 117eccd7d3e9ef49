import argparse
import dataclasses
import enum
import io
import pathlib
import sys
import types

import pytest
import torch
from torch import nn

import savepoint as sp
from savepoint.hparams import AttributeDict, decode, encode, encode_hparams


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


@dataclasses.dataclass
class Opt:
    depth: int
    name: str = "x"


def _roundtrip_through_file(value):
    buf = io.BytesIO()
    torch.save({"v": encode(value)}, buf)
    buf.seek(0)
    return decode(torch.load(buf, weights_only=True)["v"], frozenset({__name__}))


@pytest.mark.parametrize(
    "value",
    [
        argparse.Namespace(lr=0.1, layers=[1, 2]),
        pathlib.Path("/data/train"),
        pathlib.PurePosixPath("a/b"),
        Color.BLUE,
        Opt(depth=3, name="deep"),
        (1, "two", 3.0),
        {1, 2, 3},
        frozenset({"a"}),
        {"nested": {"t": (1, 2), "p": pathlib.Path("x")}},
        torch.float16,
        torch.device("cpu"),
    ],
)
def test_hparams_encoding_roundtrips_through_a_weights_only_file(value):
    assert _roundtrip_through_file(value) == value


def test_hparams_decode_never_imports_a_module_the_file_names():
    tagged = {"__savepoint_type__": "enum", "module": "os.never_imported_mod", "qualname": "E", "name": "A"}
    with pytest.warns(UserWarning, match="not imported"):
        assert decode(tagged) == "A"


def test_hparams_unstorable_value_is_skipped_with_a_warning_naming_ignore():
    with pytest.warns(UserWarning, match=r"ignore=\['encoder'\]"):
        out = encode_hparams({"encoder": nn.Linear(2, 2), "lr": 0.1}, "Model")
    assert out == {"lr": 0.1}


def test_attribute_dict_reads_keys_as_attributes():
    d = AttributeDict(lr=0.1)
    assert d.lr == 0.1
    with pytest.raises(AttributeError, match="no hyperparameter named 'missing'"):
        _ = d.missing


class _All(sp.TrainingModule):
    def __init__(self, a, b=2, *args, c=3, **kwargs):
        super().__init__()
        self.save_hyperparameters()


class _Some(sp.TrainingModule):
    def __init__(self, a, b, encoder=None):
        super().__init__()
        self.save_hyperparameters("a", ignore=["encoder"])


class _Ignore(sp.TrainingModule):
    def __init__(self, encoder, decoder, lr=0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder"])


class _Namespace(sp.TrainingModule):
    def __init__(self, hparams):
        super().__init__()
        self.save_hyperparameters(hparams)


def test_save_hyperparameters_captures_every_init_argument_and_kwargs():
    m = _All(1, c=5, extra="e")
    assert dict(m.hparams) == {"a": 1, "b": 2, "c": 5, "extra": "e"}


def test_save_hyperparameters_by_name():
    assert dict(_Some(1, 2).hparams) == {"a": 1}


def test_save_hyperparameters_ignore_leaves_modules_out():
    m = _Ignore(nn.Linear(1, 1), nn.Linear(1, 1), lr=0.5)
    assert dict(m.hparams) == {"lr": 0.5}


def test_save_hyperparameters_single_namespace_argument_is_the_hparams():
    m = _Namespace(argparse.Namespace(lr=0.01, depth=4))
    assert m.hparams.lr == 0.01 and m.hparams.depth == 4
    assert m._hparams_name == "hparams"


def test_save_hyperparameters_rejects_unknown_names():
    class Bad(sp.TrainingModule):
        def __init__(self, a):
            super().__init__()
            self.save_hyperparameters("zzz")

    with pytest.raises(ValueError, match="zzz"):
        Bad(1)


def test_assigning_hparams_is_deprecated_but_works():
    class Old(sp.TrainingModule):
        def __init__(self, hparams):
            super().__init__()
            self.hparams = hparams

    with pytest.warns(DeprecationWarning, match="save_hyperparameters"):
        m = Old(argparse.Namespace(lr=0.3))
    assert m.hparams.lr == 0.3 and m._hparams_name == "hparams"


# -- dataclass hyperparameters: rebuilt only for registered classes or those beside the loaded class -----------


class _WithOpt(sp.TrainingModule):
    def __init__(self, opt=None, width: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.lin = nn.Linear(1, 1)


def _foreign_dataclass(monkeypatch):
    """A dataclass of another module, imported (in sys.modules) but neither registered nor the loaded class's."""
    module = types.ModuleType("some_imported_lib")
    cls = dataclasses.make_dataclass(
        "Config", [("depth", int)], namespace={"__module__": "some_imported_lib"}
    )
    cls.__module__ = "some_imported_lib"
    module.Config = cls
    monkeypatch.setitem(sys.modules, "some_imported_lib", module)
    monkeypatch.setattr(sp.hparams, "_REGISTERED", {})
    return cls


def _saved(tmp_path, opt):
    path = tmp_path / "m.ckpt"
    model = _WithOpt(opt)
    sp.TorchCheckpointIO().save_checkpoint(
        {"state_dict": model.state_dict(), "hyper_parameters": encode_hparams(model.hparams, "m")}, str(path)
    )
    return path


def test_hparams_dataclass_defined_beside_the_loaded_class_is_rebuilt(tmp_path):
    assert _WithOpt.load_from_checkpoint(_saved(tmp_path, Opt(depth=2))).hparams.opt == Opt(depth=2)


def test_hparams_dataclass_of_another_module_comes_back_as_a_dict_with_a_warning(tmp_path, monkeypatch):
    config = _foreign_dataclass(monkeypatch)
    path = _saved(tmp_path, config(depth=4))
    with pytest.warns(
        UserWarning, match=r"some_imported_lib.Config is returned as a dict.*register_hparams_class"
    ):
        assert _WithOpt.load_from_checkpoint(path).hparams.opt == {"depth": 4}


def test_hparams_registered_dataclass_is_rebuilt(tmp_path, monkeypatch):
    config = _foreign_dataclass(monkeypatch)
    path = _saved(tmp_path, config(depth=4))
    assert sp.register_hparams_class(config) is config
    assert _WithOpt.load_from_checkpoint(path).hparams.opt == config(depth=4)


def test_hparams_register_refuses_what_is_not_a_dataclass_type():
    with pytest.raises(TypeError, match="takes a dataclass type, got 3"):
        sp.register_hparams_class(3)


def test_hparams_dataclass_imported_into_the_loaded_class_module_is_not_rebuilt(monkeypatch):
    config = _foreign_dataclass(monkeypatch)
    monkeypatch.setattr(sys.modules[__name__], "ImportedConfig", config, raising=False)
    tagged = {
        "__savepoint_type__": "dataclass",
        "module": __name__,
        "qualname": "ImportedConfig",
        "fields": {"depth": 1},
    }
    with pytest.warns(UserWarning, match="returned as a dict"):
        assert decode(tagged, frozenset({__name__})) == {"depth": 1}
