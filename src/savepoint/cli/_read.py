"""Reading checkpoints for the commands: the raw dict as written (so "written by" survives the upgrade),
the facts the listings show, and the files of a run folder, local or behind any fsspec URL."""

from __future__ import annotations

import fnmatch
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    FormatVersionError,
    NotACheckpointError,
)
from savepoint.checkpoint.sharded import COMMIT_FILE
from savepoint.hparams import decode, to_plain
from savepoint.plugins.io._fs import get_fs
from savepoint.plugins.io.export import is_export_dir, read_export
from savepoint.plugins.io.torch_io import TorchCheckpointIO, load_file

_SHARD = re.compile(r"__(\d+)_(\d+)\.distcp$")


@dataclass
class Loaded:
    path: str
    kind: str  # file | sharded | export
    raw: dict[str, Any]  # as written, before any upgrade; a sharded folder's tensors are not read


_EXPECTED_TYPES: tuple[tuple[str, type, str], ...] = (
    (fmt.STATE_DICT, dict, "a dict of tensors"),
    (fmt.LOOPS, dict, "a dict with a 'fit_loop' dict"),
    (fmt.CALLBACKS, dict, "a dict keyed by callback state_key"),
    (fmt.OPTIMIZER_STATES, list, "a list of optimizer state dicts"),
    (fmt.LR_SCHEDULERS, list, "a list of scheduler state dicts"),
    (fmt.HYPER_PARAMETERS, dict, "a dict"),
)


def check_layout(raw: dict[str, Any], path: str) -> dict[str, Any]:
    """Refuse, naming the key, a file whose entries have types no checkpoint has: the commands read them."""
    version = raw.get(fmt.FORMAT_VERSION_KEY, 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= fmt.FORMAT_VERSION:
        raise FormatVersionError(
            f"{path!r} has format_version {version!r}; this savepoint reads integer versions 0 to "
            f"{fmt.FORMAT_VERSION}. A newer savepoint may read it (`pip install -U savepoint`); otherwise the file "
            f"was not written by savepoint.",
            path,
        )
    for key, kind, expected in _EXPECTED_TYPES:
        value = raw.get(key)
        if value is not None and not isinstance(value, kind):
            raise NotACheckpointError(
                f"{path!r}: {key!r} holds a {type(value).__name__}, expected {expected}; the file is damaged or "
                f"was not written by savepoint or Lightning.",
                path,
            )
    loops = raw.get(fmt.LOOPS)
    if isinstance(loops, dict) and not isinstance(loops.get(fmt.FIT_LOOP, {}), dict):
        raise NotACheckpointError(
            f"{path!r}: loops['fit_loop'] holds a {type(loops[fmt.FIT_LOOP]).__name__}, expected a dict of "
            f"loop progress; the file is damaged or was not written by savepoint or Lightning.",
            path,
        )
    return raw


def load_raw(path: str) -> Loaded:
    """The checkpoint as written. Sharded folders give their meta file only (no tensor is read)."""
    io = TorchCheckpointIO()
    if io.is_sharded_checkpoint(path):
        meta = io.load_sharded_meta(path)
        return Loaded(path, "sharded", check_layout(fmt.check_is_checkpoint(meta, path), path))
    if is_export_dir(path):
        return Loaded(path, "export", read_export(path))
    fs, inner = get_fs(path)
    if fs.isdir(inner):
        raise NotACheckpointError(
            f"{path!r} is a folder, not a checkpoint: `savepoint ls {path}` lists the checkpoints inside it.",
            path,
        )
    if fs.exists(inner) and fs.size(inner) == 0:
        raise CorruptCheckpointError(
            f"{path!r} is empty (0 bytes): not a checkpoint. A save that was cut off before any byte landed "
            f"leaves such a file with tools that write in place; resume from another checkpoint.",
            path,
        )
    obj = load_file(path, map_location="cpu")
    return Loaded(path, "file", check_layout(fmt.check_is_checkpoint(obj, path), path))


def load_full(path: str) -> dict[str, Any]:
    """Checked and upgraded to the current layout, tensors included (sharded folders assembled)."""
    from savepoint._loading import read_checkpoint

    loaded = load_raw(path)
    if loaded.kind == "sharded":
        return read_checkpoint(path, map_location="cpu")
    return fmt.upgrade_checkpoint(dict(loaded.raw), path)


def written_by(raw: dict[str, Any]) -> str:
    """The tool (and version) that wrote the file; a converted file names both."""
    lightning = raw.get("pytorch-lightning_version") or raw.get("lightning_version")
    savepoint = raw.get(fmt.SAVEPOINT_VERSION)
    if lightning is not None and savepoint is not None:
        return f"lightning {lightning} (converted by savepoint {savepoint})"
    if lightning is not None:
        return f"lightning {lightning}"
    return f"savepoint {savepoint}" if savepoint is not None else "unknown"


def fit_loop(raw: dict[str, Any]) -> dict[str, Any]:
    """Savepoint's loop state, or {} when the file has another tool's (or a malformed) ``loops`` entry."""
    loops = raw.get(fmt.LOOPS)
    state = loops.get(fmt.FIT_LOOP) if isinstance(loops, dict) else None
    return state if isinstance(state, dict) and "exact" in state else {}


def metrics(raw: dict[str, Any]) -> dict[str, Any]:
    stored = fit_loop(raw).get("metrics")
    values = stored.get("callback_metrics") if isinstance(stored, dict) else None
    return {str(k): _number(v) for k, v in (values or {}).items()}


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def model_checkpoints(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored state of each ModelCheckpoint: monitor, score, best path and score."""
    callbacks = raw.get(fmt.CALLBACKS)
    out = []
    for key, state in callbacks.items() if isinstance(callbacks, dict) else ():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            out.append(
                {
                    "monitor": state.get("monitor"),
                    "current_score": _number(state.get("current_score")),
                    "best_model_score": _number(state.get("best_model_score")),
                    "best_model_path": state.get("best_model_path") or None,
                    "last_model_path": state.get("last_model_path") or None,
                }
            )
    return out


def hyperparameters(raw: dict[str, Any], key: str = fmt.HYPER_PARAMETERS) -> dict[str, Any]:
    """As the user wrote them (savepoint's tagged encoding decoded)."""
    stored = raw.get(key)
    return decode(dict(stored)) if isinstance(stored, dict) else {}


def plain(value: Any) -> Any:
    return to_plain(value)


def position(raw: dict[str, Any]) -> dict[str, Any]:
    loop = fit_loop(raw)
    out = {"epoch": raw.get(fmt.EPOCH), "global_step": raw.get(fmt.GLOBAL_STEP)}
    for key in ("phase", "batches_done", "accumulated", "exact"):
        if key in loop:
            out[key] = loop[key]
    return out


def format_name(loaded: Loaded) -> str:
    raw = loaded.raw
    version = fmt.format_version_of(raw) if not isinstance(raw.get(fmt.FORMAT_VERSION_KEY), str) else "?"
    kind = {"file": "file", "sharded": "sharded", "export": "safetensors"}[loaded.kind]
    weights = " weights-only" if fmt.is_weights_only(raw) else ""
    return f"{kind} v{version}{weights}"


def size_of(path: str) -> int | None:
    fs, inner = get_fs(path)
    try:
        if fs.isdir(inner):
            return sum(int(info.get("size") or 0) for info in fs.find(inner, detail=True).values())
        return int(fs.size(inner))
    except OSError:
        return None


def sharded_layout(path: str) -> dict[str, Any]:
    """World size, shard files and bytes of a sharded folder, from its file names and metadata."""
    files = []
    ranks = set()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            files.append({"name": name, "bytes": os.path.getsize(full)})
            match = _SHARD.search(name)
            if match:
                ranks.add(int(match.group(1)))
    return {
        "world_size": len(ranks),
        "shard_files": [f for f in files if f["name"].endswith(".distcp")],
        "other_files": [f for f in files if not f["name"].endswith(".distcp")],
        "bytes": sum(f["bytes"] for f in files),
    }


def tensor_rows(loaded: Loaded, pattern: str | None) -> list[dict[str, Any]]:
    """Name, shape, dtype and bytes of each weight; a sharded folder's come from its metadata."""
    if loaded.kind == "sharded":
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        from savepoint.plugins.io.sharded import SafeFileSystemReader

        metadata = SafeFileSystemReader(loaded.path).read_metadata()
        items = [
            (fqn[len("state_dict.") :], tuple(md.size), md.properties.dtype)
            for fqn, md in metadata.state_dict_metadata.items()
            if fqn.startswith("state_dict.") and isinstance(md, TensorStorageMetadata)
        ]
    else:
        state = loaded.raw.get(fmt.STATE_DICT)
        items = [
            (str(k), tuple(v.shape), v.dtype)
            for k, v in (state.items() if isinstance(state, dict) else ())
            if isinstance(v, torch.Tensor)
        ]
    rows = []
    for name, shape, dtype in items:
        if pattern and not fnmatch.fnmatchcase(name, pattern) and pattern not in name:
            continue
        numel = 1
        for dim in shape:
            numel *= dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        rows.append(
            {
                "name": name,
                "shape": list(shape),
                "dtype": str(dtype).removeprefix("torch."),
                "bytes": numel * itemsize,
            }
        )
    return rows


def find_checkpoints(root: str) -> list[str]:
    """Checkpoint files and sharded folders under `root` (a run or checkpoint folder; local or a URL)."""
    fs, inner = get_fs(root)
    if not fs.exists(inner):
        raise CheckpointNotFoundError(f"no such folder: {root!r}", root)
    if not fs.isdir(inner):
        return [root]
    found: list[str] = []
    entries = fs.find(inner, maxdepth=6, withdirs=True, detail=True)
    sharded = {p.rsplit("/", 1)[0] for p in entries if p.endswith("/" + COMMIT_FILE)}
    for path, info in entries.items():
        name = path.rsplit("/", 1)[-1]
        parent = path.rsplit("/", 1)[0]
        if name.startswith(".") or parent in sharded or any(path.startswith(s + "/") for s in sharded):
            continue
        if (
            path in sharded
            or (info.get("type") == "file" and name.endswith(".ckpt"))
            or (info.get("type") == "directory" and is_export_dir(_url(fs, path)))
        ):
            found.append(_url(fs, path))
    return found


def _url(fs: Any, inner: str) -> str:
    """A path inside `fs` as the user would type it: plain for local files, a URL otherwise."""
    return inner if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(inner)


def verify_problems(path: str) -> list[str]:
    """What `verify` finds wrong with `path` (local files and folders), or each record's CRC32 read
    through fsspec for other URLs; [] when whole."""
    from savepoint.checkpoint.verify import verify_checkpoint

    fs, inner = get_fs(path)
    if isinstance(fs, LocalFileSystem):
        return list(verify_checkpoint(path).problems)
    problems = []
    try:
        with fs.open(inner, "rb") as f, zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                try:
                    with archive.open(info) as record:
                        while record.read(1 << 22):
                            pass
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    problems.append(f"record {info.filename!r}: {err}")
    except (zipfile.BadZipFile, OSError) as err:
        problems.append(f"not a readable zip archive ({err}): torn, truncated, or not a torch.save file")
    return problems
