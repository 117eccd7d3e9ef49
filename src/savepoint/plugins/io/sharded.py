"""The sharded IO: reading and writing ``torch.distributed.checkpoint`` (DCP) folders safely.

The layout is described in `savepoint.checkpoint.sharded`. Writing: `CRCFileSystemWriter` is DCP's
writer plus a CRC32 of every record it wrote, kept in ``crc32.json`` by the coordinator just before
``.metadata`` (the commit marker). Loading never runs code from the folder: DCP reads ``.metadata`` with
plain ``pickle`` and non-tensor items with ``torch.load(weights_only=False)``; the reader and planner
here replace both with restricted loaders that accept only DCP's own metadata classes and plain data.
Loading a whole checkpoint into one process checks every record's CRC first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import shutil
import zlib
from typing import Any

import torch

from savepoint.checkpoint.errors import CorruptCheckpointError, UnsafeCheckpointError
from savepoint.checkpoint.sharded import COMMIT_FILE, CRC_FILE, META_FILE, unflatten_into

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


@functools.cache
def _writer_class() -> type:
    """DCP's file writer, recording the CRC32 of every record (built on first use, like the reader)."""
    from dataclasses import replace

    from torch.distributed.checkpoint import FileSystemWriter
    from torch.futures import Future

    class CRCFileSystemWriter(FileSystemWriter):
        def write_data(self, plan: Any, planner: Any) -> Any:
            future = super().write_data(plan, planner)
            results = future.wait()
            crcs = _record_crcs(str(self.path), [r.storage_data for r in results])
            out: Future[list[Any]] = Future()
            out.set_result([replace(r, storage_data=(r.storage_data, c)) for r, c in zip(results, crcs)])
            return out

        def finish(self, metadata: Any, results: list[list[Any]]) -> None:
            files: dict[str, dict[str, Any]] = {}
            plain = []
            for rank_results in results:
                plain.append([replace(r, storage_data=r.storage_data[0]) for r in rank_results])
                for r in rank_results:
                    info, crc = r.storage_data
                    entry = files.setdefault(info.relative_path, {"records": []})
                    entry["records"].append([info.offset, info.length, crc])
            for name, entry in files.items():
                entry["records"].sort()
                entry["size"] = os.path.getsize(os.path.join(str(self.path), name))
            _write_json_synced(os.path.join(str(self.path), CRC_FILE), {"version": 1, "files": files})
            super().finish(metadata, plain)

    return CRCFileSystemWriter


def _record_crcs(folder: str, infos: list[Any]) -> list[int]:
    out = []
    handles: dict[str, Any] = {}
    try:
        for info in infos:
            f = handles.get(info.relative_path)
            if f is None:
                f = handles[info.relative_path] = open(os.path.join(folder, info.relative_path), "rb")  # noqa: SIM115
            out.append(crc_of_range(f, info.offset, info.length))
    finally:
        for f in handles.values():
            f.close()
    return out


def crc_of_range(f: Any, offset: int, length: int) -> int:
    """CRC32 of `length` bytes at `offset` (short when the file is; the caller compares)."""
    f.seek(offset)
    crc, left = 0, length
    while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)  # releases the GIL on large buffers
        left -= len(chunk)
    return crc


def _write_json_synced(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def make_writer(path: str) -> Any:
    return _writer_class()(path)


def prepare_folder(path: str) -> None:
    """Create the folder and withdraw an old commit marker: until the new one, it is not a checkpoint."""
    os.makedirs(path, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(path, COMMIT_FILE))


def save_dcp(state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(state, storage_writer=make_writer(path), process_group=process_group)


def load_dcp(state: dict[str, Any], path: str, process_group: Any | None = None) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.load(
        state,
        checkpoint_id=path,
        storage_reader=SafeFileSystemReader(path),
        planner=SafeLoadPlanner(),
        process_group=process_group,
    )


def load_full(path: str, meta: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The whole checkpoint in one process (no process group needed): full tensors, not shards.

    `problems` are what the integrity check found (`verify_sharded`); a damaged folder is refused.
    """
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    if problems:
        raise CorruptCheckpointError(
            f"{path!r} is a damaged sharded checkpoint: {problems[0]}"
            + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
            + ". Run `savepoint verify` on it for the full list, and use an earlier checkpoint.",
            path,
        )
    reader = SafeFileSystemReader(path)
    metadata = reader.read_metadata()
    tensors: dict[str, Any] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            tensors[fqn] = torch.empty(md.size, dtype=md.properties.dtype)
    _load_state_dict(tensors, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=True)
    return unflatten_into(meta, tensors)


# -- leftovers of crashed saves -------------------------------------------------------------------------------


def is_abandoned_candidate(path: str | os.PathLike) -> bool:
    """A sharded folder that never got its commit marker: a ``*.ckpt`` folder without ``.metadata`` that holds
    only what a sharded save writes (``meta.ckpt``, ``*.distcp``, ``crc32.json``, temporaries) or nothing."""
    path = os.fspath(path)
    if "://" in path or not path.endswith(".ckpt") or not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    if COMMIT_FILE in names:
        return False
    return all(n in (META_FILE, CRC_FILE) or n.endswith(".distcp") or n.startswith(".") for n in names)


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
        times = [os.path.getmtime(path)] + [os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)]
        if max(times) < older_than:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
