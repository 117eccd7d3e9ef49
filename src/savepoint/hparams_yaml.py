"""Hyperparameters to and from YAML, without losing their types: ``save_hparams_to_yaml`` /
``load_hparams_from_yaml`` (importable from ``savepoint.core.saving`` too, the module path users know).

Primitives, lists and dicts are written as plain YAML, so a file stays readable and editable by hand. The
other types savepoint stores (``argparse.Namespace``, paths, ``Enum`` members, dataclasses, tuples, sets,
frozensets, ``torch.dtype``/``torch.device``, tensors) are written as the small tagged mappings that
checkpoints use (see ``savepoint.hparams``) and rebuilt on load. Loading uses ``yaml.safe_load``: a file never
constructs arbitrary objects, and an ``Enum`` or dataclass comes back only when its class is already imported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from savepoint.hparams import TAG, UnstorableHyperparameter, decode, encode


def _to_yaml_safe(value: Any) -> Any:
    """`encode`'s output with tensors (which YAML cannot hold) as tagged lists."""
    if isinstance(value, torch.Tensor):
        return {TAG: "tensor", "dtype": str(value.dtype).removeprefix("torch."), "data": value.tolist()}
    if isinstance(value, Mapping):
        return {k: _to_yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_yaml_safe(v) for v in value]
    return value


def _from_yaml_safe(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_yaml_safe(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get(TAG) == "tensor":
        dtype = getattr(torch, str(value.get("dtype")), None)
        return torch.tensor(value["data"], dtype=dtype if isinstance(dtype, torch.dtype) else None)
    return {k: _from_yaml_safe(v) for k, v in value.items()}


def save_hparams_to_yaml(
    config_yaml: str | os.PathLike, hparams: Mapping[str, Any] | Any, use_omegaconf: bool = True
) -> None:
    """Write `hparams` (a mapping or an ``argparse.Namespace``) to `config_yaml`; values that cannot be stored
    (an ``nn.Module``, a function) are left out with a warning naming them. ``use_omegaconf`` is accepted for
    compatibility; OmegaConf is never used."""
    import yaml

    if not isinstance(hparams, Mapping):
        if not hasattr(hparams, "__dict__"):
            raise TypeError(
                f"save_hparams_to_yaml(hparams=...) expects a dict or an argparse.Namespace, got "
                f"{type(hparams).__name__}."
            )
        hparams = vars(hparams)
    out: dict[str, Any] = {}
    for name, value in hparams.items():
        try:
            out[name] = _to_yaml_safe(encode(value, name))
        except UnstorableHyperparameter as err:
            warnings.warn(f"save_hparams_to_yaml: {name!r} is left out ({err}).", UserWarning, stacklevel=2)
    folder = os.path.dirname(os.fspath(config_yaml))
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{os.fspath(config_yaml)}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(out, f, sort_keys=False)
    os.replace(tmp, config_yaml)  # a reader never sees half a file


def load_hparams_from_yaml(config_yaml: str | os.PathLike, use_omegaconf: bool = True) -> dict[str, Any]:
    """Read what `save_hparams_to_yaml` wrote (or any YAML mapping); a missing file warns and gives ``{}``.
    ``use_omegaconf`` is accepted for compatibility; a plain dict is returned."""
    if not os.path.exists(config_yaml):
        warnings.warn(f"hparams file {os.fspath(config_yaml)!r} does not exist.", UserWarning, stacklevel=2)
        return {}
    with open(config_yaml) as f:
        return hparams_from_text(f.read())


def hparams_from_text(text: str) -> Any:
    """Parse YAML text written by `save_hparams_to_yaml` (or any YAML), rebuilding the tagged types."""
    import yaml

    data = yaml.safe_load(text)
    return {} if data is None else decode(_from_yaml_safe(data))
