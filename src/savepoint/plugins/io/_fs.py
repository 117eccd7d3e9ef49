"""Where bytes land: local paths with atomic replace, any fsspec URL with a single put."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARKER = ".sp-tmp-"


def get_fs(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system and the path inside it."""
    fs, inner = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return fs, inner


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def temp_name_for(final: Path) -> Path:
    """A hidden sibling name that no checkpoint glob (``*.ckpt``) matches and that names its writer's pid."""
    return final.with_name(f".{final.name}{TMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folder: Path, active: set[Path] | None = None) -> list[Path]:
    """Remove temporary files a killed writer left in `folder` (those whose process is gone)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or TMP_MARKER not in name:
            continue
        try:
            pid = int(name.rsplit(TMP_MARKER, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        path = Path(entry.path)
        if pid == os.getpid():
            if active is not None and path in active:
                continue
        elif _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def fsync_path(path: Path) -> None:
    """fsync a file's data, or a folder's entries (after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable_dir(path: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail fast: raise a clear error if checkpoints cannot be written into folder `path`."""
    fs, inner = get_fs(path, storage_options)
    if not is_local(fs):
        return
    folder = Path(inner)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(
            f"checkpoint folder {path!r} cannot be created: {str(probe)!r} is a file, not a folder. "
            f"Remove it or choose another `dirpath`/`default_root_dir`."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        mode = stat.filemode(probe.stat().st_mode)
        raise PermissionError(
            f"checkpoint folder {path!r} is not writable ({str(probe)!r} has mode {mode}). "
            f"Fix its permissions or choose another `dirpath`/`default_root_dir`."
        )
