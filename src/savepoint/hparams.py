"""Hyperparameters: capture from ``__init__`` and a safe encoding for checkpoints.

A checkpoint must load with ``torch.load(weights_only=True)``, so only tensors, numbers, strings, bools,
None, lists, tuples and dicts may be pickled. Other common hyperparameter types are stored as small
tagged dicts and rebuilt on load. An ``Enum`` is rebuilt only when its class is already imported; a file
never makes savepoint import a module. A dataclass is rebuilt (its ``__init__`` runs) only when its class
was registered with `register_hparams_class` or is defined in the module of the class being loaded:
a file cannot make savepoint construct an arbitrary dataclass that happens to be imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import pathlib
import sys
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from types import FrameType
from typing import Any

import torch

TAG = "__savepoint_type__"
_PRIMITIVES = (bool, int, float, str, type(None))


class AttributeDict(dict):
    """A dict whose keys read and write as attributes: ``hparams.lr == hparams["lr"]``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"no hyperparameter named {key!r}; stored: {sorted(self)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        del self[key]


_REGISTERED: dict[tuple[str, str], type] = {}


def register_hparams_class(cls: type) -> type:
    """Allow `load_from_checkpoint` to rebuild dataclass hyperparameters of type `cls`.

    Dataclasses defined in the same module as the module or datamodule class being loaded are rebuilt
    without registration; any other one comes back as a dict of its fields (with a warning) unless
    registered. Usable as a decorator::

        @savepoint.register_hparams_class
        @dataclass
        class OptimConfig:
            lr: float = 1e-3
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_hparams_class() takes a dataclass type, got {cls!r}")
    _REGISTERED[_qualified(cls)] = cls
    return cls


class UnstorableHyperparameter(Exception):
    """Raised inside encoding for a value that has no safe representation."""


def _qualified(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _lookup_imported(module: str, qualname: str) -> Any | None:
    """The object `module.qualname` if that module is already imported; never imports."""
    obj: Any = sys.modules.get(module)
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def encode(value: Any, where: str = "hparams") -> Any:
    """Turn `value` into something `torch.load(weights_only=True)` accepts, or raise `UnstorableHyperparameter`."""
    if isinstance(value, enum.Enum):
        module, qualname = _qualified(type(value))
        return {TAG: "enum", "module": module, "qualname": qualname, "name": value.name}
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, torch.dtype):
        return {TAG: "dtype", "name": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {TAG: "device", "name": str(value)}
    if isinstance(value, argparse.Namespace):
        return {TAG: "namespace", "value": encode(vars(value), where)}
    if isinstance(value, pathlib.PurePath):
        kind = "windows" if isinstance(value, pathlib.PureWindowsPath) else "posix"
        return {
            TAG: "path",
            "value": str(value),
            "flavour": kind,
            "pure": not isinstance(value, pathlib.Path),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        module, qualname = _qualified(type(value))
        fields = {
            f.name: encode(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)
        }
        return {TAG: "dataclass", "module": module, "qualname": qualname, "fields": fields}
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, set | frozenset):
        items = [encode(v, f"{where}{{}}") for v in value]
        return {TAG: "frozenset" if isinstance(value, frozenset) else "set", "items": items}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if not isinstance(k, _PRIMITIVES):
                raise UnstorableHyperparameter(f"{where} has a key of type {type(k).__name__}: {k!r}")
            out[k] = encode(v, f"{where}[{k!r}]")
        return out
    raise UnstorableHyperparameter(f"{where} is a {type(value).__module__}.{type(value).__qualname__}")


def decode(value: Any, trusted_modules: frozenset[str] = frozenset()) -> Any:
    """Inverse of `encode`. Enums come back only if their class is already imported; dataclasses only if
    registered (`register_hparams_class`) or defined in one of `trusted_modules` (and imported)."""

    def again(v: Any) -> Any:
        return decode(v, trusted_modules)

    if isinstance(value, list):
        return [again(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: again(v) for k, v in value.items()}
    if tag == "namespace":
        return argparse.Namespace(**again(value["value"]))
    if tag == "path":
        if value.get("flavour") == "windows":
            return pathlib.PureWindowsPath(value["value"])
        return pathlib.PurePosixPath(value["value"]) if value.get("pure") else pathlib.Path(value["value"])
    if tag == "tuple":
        return tuple(again(v) for v in value["items"])
    if tag == "set":
        return {again(v) for v in value["items"]}
    if tag == "frozenset":
        return frozenset(again(v) for v in value["items"])
    if tag == "dtype":
        dtype = getattr(torch, value["name"], None)
        return dtype if isinstance(dtype, torch.dtype) else value["name"]
    if tag == "device":
        return torch.device(value["name"])
    if tag == "enum":
        cls = _lookup_imported(value["module"], value["qualname"])
        if isinstance(cls, type) and issubclass(cls, enum.Enum) and value["name"] in cls.__members__:
            return cls[value["name"]]
        warnings.warn(
            f"hyperparameter enum {value['module']}.{value['qualname']}.{value['name']} is returned as the string "
            f"{value['name']!r}: its class is not imported (savepoint never imports modules a file names). "
            f"Import {value['module']!r} before loading to get the enum member.",
            stacklevel=3,
        )
        return value["name"]
    if tag == "dataclass":
        return _decode_dataclass(value, {k: again(v) for k, v in value["fields"].items()}, trusted_modules)
    return {k: again(v) for k, v in value.items()}


def _decode_dataclass(value: dict[str, Any], fields: dict[str, Any], trusted_modules: frozenset[str]) -> Any:
    key = (value["module"], value["qualname"])
    cls = _REGISTERED.get(key)
    if cls is None and value["module"] in trusted_modules:
        cls = _lookup_imported(*key)
        if getattr(cls, "__module__", None) != value["module"]:
            cls = None  # imported into that module from elsewhere, not defined there
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        init_fields = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in fields.items() if k in init_fields})
        for k, v in fields.items():
            if k not in init_fields:
                object.__setattr__(obj, k, v)
        return obj
    warnings.warn(
        f"hyperparameter dataclass {value['module']}.{value['qualname']} is returned as a dict of its fields: "
        f"savepoint rebuilds only dataclasses defined in the module of the class being loaded or registered "
        f"with `savepoint.register_hparams_class` (and imported). Register it before loading to get the object.",
        stacklevel=4,
    )
    return fields


def to_plain(value: Any) -> Any:
    """A YAML-friendly form for ``hparams.yaml``: containers of primitives only."""
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, argparse.Namespace):
        return to_plain(vars(value))
    if isinstance(value, pathlib.PurePath | torch.dtype | torch.device):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    return repr(value)


def encode_hparams(hparams: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Encode each hyperparameter; skip (with a warning) those that cannot be stored safely."""
    out: dict[str, Any] = {}
    for name, value in hparams.items():
        try:
            out[name] = encode(value, name)
        except UnstorableHyperparameter as err:
            warnings.warn(
                f"{owner}: hyperparameter {name!r} is not stored in checkpoints ({err}); only primitives, "
                f"containers, Namespace, paths, Enum members and dataclasses are. List it in "
                f"`save_hyperparameters(ignore=[{name!r}])` and pass it to `load_from_checkpoint({name}=...)`.",
                UserWarning,
                stacklevel=4,
            )
    return out


def _init_frames(obj: object, start: FrameType | None) -> list[FrameType]:
    """The ``__init__`` frames of `obj` on the stack, innermost (a parent class) first."""
    frames = []
    frame = start
    while frame is not None:
        code = frame.f_code
        # The instance is __init__'s first argument, whatever it is called (`self`, `obj`...).
        first = code.co_varnames[0] if code.co_argcount else None
        if code.co_name == "__init__" and first is not None and frame.f_locals.get(first) is obj:
            frames.append(frame)
        elif frames:
            break
        frame = frame.f_back
    return frames


def _init_args_of(frame: FrameType) -> dict[str, Any]:
    """The named arguments of the ``__init__`` running in `frame`, with ``**kwargs`` merged in."""
    code = frame.f_code
    local_vars = frame.f_locals
    n_args = code.co_argcount + code.co_kwonlyargcount
    names = list(code.co_varnames[:n_args])
    args: dict[str, Any] = {}
    for name in names[1:]:  # names[0] is self
        if name in local_vars:
            args[name] = local_vars[name]
    has_varargs = bool(code.co_flags & inspect.CO_VARARGS)
    idx = n_args + (1 if has_varargs else 0)
    if code.co_flags & inspect.CO_VARKEYWORDS:
        kw_name = code.co_varnames[idx]
        args.update(local_vars.get(kw_name, {}) or {})
    return args


def collect_init_args(obj: object, caller: FrameType | None) -> dict[str, Any]:
    """Arguments passed to the ``__init__`` chain of `obj`; a subclass's values win over its parents'."""
    collected: dict[str, Any] = {}
    for frame in _init_frames(obj, caller):
        args = _init_args_of(frame)
        for k, v in args.items():
            collected.setdefault(k, v)
    return collected


class HyperparametersMixin:
    """``save_hyperparameters`` and ``hparams`` for `TrainingModule` and `DataModule`."""

    _hparams: AttributeDict
    _hparams_name: str | None
    _hparams_initial: AttributeDict

    def _init_hparams(self) -> None:
        object.__setattr__(self, "_hparams", AttributeDict())
        object.__setattr__(self, "_hparams_name", None)
        object.__setattr__(self, "_hparams_initial", AttributeDict())

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Iterable[str] | str | None = None,
        frame: FrameType | None = None,
        logger: bool = True,
    ) -> None:
        """Record ``__init__`` arguments as ``self.hparams`` and in every checkpoint.

        - no arguments: every ``__init__`` argument (``**kwargs`` included);
        - names (``save_hyperparameters("lr", "layers")``): only those;
        - one dict or ``Namespace``: that object (the older ``hparams`` style of document 004);
        - ``ignore=``: arguments left out, e.g. modules passed in; give them to ``load_from_checkpoint``.
        """
        if not hasattr(self, "_hparams"):
            self._init_hparams()
        ignore_set = {ignore} if isinstance(ignore, str) else set(ignore or ())
        caller = frame if frame is not None else inspect.currentframe().f_back  # type: ignore[union-attr]
        init_args = collect_init_args(self, caller)
        name: str | None = None
        if len(args) == 1 and not isinstance(args[0], str):
            chosen = args[0]
            name = next((k for k, v in init_args.items() if v is chosen), None)
            if isinstance(chosen, argparse.Namespace):
                values = dict(vars(chosen))
            elif isinstance(chosen, Mapping):
                values = dict(chosen)
            else:
                raise ValueError(
                    f"save_hyperparameters({chosen!r}): a {type(chosen).__name__} is not a hyperparameter source; "
                    f"pass argument names (str), a dict or an argparse.Namespace, or nothing for every argument."
                )
        elif args:
            unknown = [a for a in args if a not in init_args]
            if unknown:
                raise ValueError(
                    f"save_hyperparameters() got {unknown!r}, which are not arguments of "
                    f"{type(self).__name__}.__init__ (arguments: {sorted(init_args)})."
                )
            values = {a: init_args[a] for a in args}
        else:
            values = dict(init_args)
            # A single Namespace/dict argument (document 004's `hparams`) is the hyperparameters themselves.
            if len(values) == 1:
                ((only_name, only_value),) = values.items()
                if (
                    isinstance(only_value, argparse.Namespace | MutableMapping)
                    and only_name not in ignore_set
                ):
                    name = only_name
                    values = dict(
                        vars(only_value) if isinstance(only_value, argparse.Namespace) else only_value
                    )
        for key in ignore_set:
            values.pop(key, None)
            self._hparams.pop(key, None)  # a subclass can leave out what its base class saved
        for key, value in values.items():
            if isinstance(value, torch.nn.Module):
                warnings.warn(
                    f"{type(self).__name__}: hyperparameter {key!r} is an nn.Module, whose weights are already in "
                    f"the checkpoint's state_dict. Leave it out with `self.save_hyperparameters(ignore=[{key!r}])` "
                    f"and pass it to `load_from_checkpoint({key}=...)`.",
                    UserWarning,
                    stacklevel=2,
                )
        object.__setattr__(self, "_hparams_name", name)
        self._hparams.update(values)
        object.__setattr__(self, "_hparams_initial", AttributeDict(self._hparams))
        object.__setattr__(self, "_log_hyperparams", logger)

    @property
    def hparams(self) -> AttributeDict:
        if not hasattr(self, "_hparams"):
            self._init_hparams()
        return self._hparams

    @hparams.setter
    def hparams(self, value: Any) -> None:
        warnings.warn(
            "Assigning `self.hparams = ...` is deprecated; call `self.save_hyperparameters(hparams)` in "
            "`__init__` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        if not hasattr(self, "_hparams"):
            self._init_hparams()
        frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        args = collect_init_args(self, frame)
        name = next((k for k, v in args.items() if v is value), None)
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        if not isinstance(value, Mapping):
            raise TypeError(f"hparams must be a dict or argparse.Namespace, got {type(value).__name__}")
        self._hparams.clear()
        self._hparams.update(value)
        object.__setattr__(self, "_hparams_name", name)
        object.__setattr__(self, "_hparams_initial", AttributeDict(self._hparams))

    @property
    def hparams_initial(self) -> AttributeDict:
        if not hasattr(self, "_hparams_initial"):
            self._init_hparams()
        return AttributeDict(self._hparams_initial)
