"""Sharded checkpoints: a folder in the ``torch.distributed.checkpoint`` (DCP) layout.

Layout::

    <name>/                 one checkpoint
      meta.ckpt             everything but the sharded tensors (loops, callbacks, hparams...), written
                            by rank 0 with torch.save: loads with weights_only=True
      __<rank>_<n>.distcp   each rank's shards, written in parallel
      .metadata             written last, by the coordinator: the commit marker. A folder without it is
                            not a checkpoint.

Loading never runs code from the folder: DCP reads ``.metadata`` with plain ``pickle`` and non-tensor
items with ``torch.load(weights_only=False)``; savepoint's reader and planner replace both with
restricted loaders that accept only DCP's own metadata classes and plain data.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import shutil
from typing import Any

import torch

from savepoint.checkpoint.errors import CorruptCheckpointError, UnsafeCheckpointError

META_FILE = "meta.ckpt"
COMMIT_FILE = ".metadata"
SHARDED_KEYS = ("state_dict", "optimizer_states")

_ALLOWED_MODULE_PREFIXES = ("torch.distributed.checkpoint.",)
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("enum", "Enum"),
    ("torch.serialization", "_get_layout"),  # rebuilds a torch.layout from its name
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "Path"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata: its own dataclasses, torch dtypes/sizes and builtins; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_MODULE_PREFIXES) or (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(
            getattr(torch, name, None), torch.dtype | torch.layout | torch.memory_format
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in checkpoint metadata")


@functools.cache
def _safe_classes() -> tuple[type, type]:
    """DCP's reader and planner with restricted loading. Built on first use: importing
    ``torch.distributed.checkpoint`` costs about a second, which ``import savepoint`` should not pay."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as f:
                try:
                    metadata = _RestrictedUnpickler(f).load()
                except pickle.UnpicklingError as err:
                    raise UnsafeCheckpointError(
                        f"{str(self.path)!r}: its {COMMIT_FILE} holds objects a checkpoint may not hold ({err}); "
                        f"refused, never executed.",
                        str(self.path),
                    ) from err
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class SafeLoadPlanner(DefaultLoadPlanner):
        """Non-tensor items are loaded weights-only."""

        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeFileSystemReader, SafeLoadPlanner


def SafeFileSystemReader(path: str | os.PathLike) -> Any:
    return _safe_classes()[0](path)


def SafeLoadPlanner() -> Any:
    return _safe_classes()[1]()


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return "://" not in path and os.path.isdir(path) and os.path.isfile(os.path.join(path, COMMIT_FILE))


def is_partial_sharded(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isdir(path) and not os.path.isfile(os.path.join(path, COMMIT_FILE))


def is_abandoned_candidate(path: str | os.PathLike) -> bool:
    """A sharded folder that never got its commit marker: a ``*.ckpt`` folder without ``.metadata`` that holds
    only what a sharded save writes (``meta.ckpt``, ``*.distcp``, their temporaries) or nothing."""
    path = os.fspath(path)
    if "://" in path or not path.endswith(".ckpt") or not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    if COMMIT_FILE in names:
        return False
    return all(n == META_FILE or n.endswith(".distcp") or n.startswith(".") for n in names)


def remove_abandoned(folder: str, older_than: float, keep: str | None = None) -> list[str]:
    """Remove the uncommitted sharded folders in `folder` last written before `older_than` (the start of
    this run: a save of this run is never among them, and a crashed one from before is certainly over).
    Called by rank 0 at a sharded save into `folder`; returns what it removed."""
    removed: list[str] = []
    if "://" in folder or not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if path == keep or not is_abandoned_candidate(path):
            continue
        newest = max(
            [os.path.getmtime(path)] + [os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)]
        )
        if newest < older_than:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read_meta(path: str) -> dict[str, Any]:
    from savepoint.plugins.io.torch_io import load_file

    return load_file(os.path.join(path, META_FILE), map_location="cpu")


def load_sharded_as_full(path: str | os.PathLike) -> dict[str, Any]:
    """The whole checkpoint in one process (no process group needed): full tensors, not shards."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    path = os.fspath(path)
    if not is_sharded_checkpoint(path):
        raise CorruptCheckpointError(
            f"{path!r} is not a committed sharded checkpoint (no {COMMIT_FILE} file): a save that did not finish "
            f"leaves such a folder. Choose another checkpoint.",
            path,
        )
    meta = read_meta(path)
    reader = SafeFileSystemReader(path)
    metadata = reader.read_metadata()
    tensors: dict[str, Any] = {}
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            tensors[fqn] = torch.empty(md.size, dtype=md.properties.dtype)
    _load_state_dict(tensors, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=True)
    return _unflatten_into(meta, tensors)


def _unflatten_into(meta: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Put DCP's flat ``state_dict.<name>`` / ``optimizer_states.<i>.<...>`` tensors back into `meta`."""
    out = dict(meta)
    model: dict[str, Any] = {}
    optimizers: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("state_dict."):
            model[key[len("state_dict.") :]] = value
        elif key.startswith("optimizer_states."):
            rest = key[len("optimizer_states.") :]
            index, _, name = rest.partition(".")
            optimizers.setdefault(int(index), {})[name] = value
    out["state_dict"] = model
    if "optimizer_states" in meta:
        states = []
        for i, template in enumerate(meta["optimizer_states"]):
            states.append(_fill_optimizer(template, optimizers.get(i, {})))
        out["optimizer_states"] = states
    return out


def _fill_optimizer(template: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state saved by parameter name: ``state.<param>.<key>`` tensors, param_groups in meta."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            param, _, name = key[len("state.") :].rpartition(".")
            state.setdefault(param, {})[name] = value
    for param, values in (template.get("state_scalars") or {}).items():
        state.setdefault(param, {}).update(values)
    return {"state": state, "param_groups": template.get("param_groups", [])}


def save_dcp(state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=path, process_group=process_group)


def load_dcp(state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.load(
        state,
        checkpoint_id=path,
        storage_reader=SafeFileSystemReader(path),
        planner=SafeLoadPlanner(),
        process_group=process_group,
    )
