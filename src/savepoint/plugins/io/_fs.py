"""Where bytes land: local paths with atomic replace, any fsspec URL with a single put."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARKER = ".sp-tmp-"
# A temporary file whose writer cannot be checked from here (another host or PID namespace) is taken for
# abandoned once it has not been written to for this long: a live writer touches it continuously.
STALE_TEMP_AGE_S = 3600.0


def get_fs(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system and the path inside it."""
    fs, inner = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return fs, inner


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def _pid_namespace() -> str:
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def writer_id() -> str:
    """This process's host and PID namespace, as a token safe in a file name (no ``-``)."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
    return f"{host}.{_pid_namespace()}"


_WRITER_ID = writer_id()


def temp_name_for(final: Path) -> Path:
    """A hidden sibling name that no checkpoint glob (``*.ckpt``) matches and that names its writer
    (host and PID namespace, then pid): ``.<name>.sp-tmp-<host>.<pidns>-<pid>-<hex>``."""
    return final.with_name(f".{final.name}{TMP_MARKER}{_WRITER_ID}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(name: str, path: Path, active: set[Path] | None) -> bool:
    """True only when the writer of temporary file `name` is certainly gone."""
    parts = name.rsplit(TMP_MARKER, 1)[1].rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        writer, pid = parts[0], int(parts[1])
        if writer == _WRITER_ID:  # same host, same PID namespace: the pid answers
            if pid == os.getpid():
                return active is not None and path not in active
            return not _pid_alive(pid)
    # Another host or PID namespace (or a name this version did not write): its pid means nothing here.
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_TEMP_AGE_S


def sweep_stale_temps(folder: Path, active: set[Path] | None = None) -> list[Path]:
    """Remove temporary files in `folder` whose writer is certainly gone (see `_abandoned`)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or TMP_MARKER not in name:
            continue
        path = Path(entry.path)
        if not _abandoned(name, path, active):
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


# -- atomic exchange of two names (Linux renameat2) ------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_exchange_ok: bool | None = None  # None: not tried yet; False: this kernel/libc/file system refuses


def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2() if os.name == "posix" else None


def exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically; False (nothing changed) where the system cannot."""
    global _exchange_ok
    if _RENAMEAT2 is None or _exchange_ok is False:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        _exchange_ok = True
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        if _exchange_ok is None and err != errno.EXDEV:
            _exchange_ok = False
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {str(a)!r} <-> {str(b)!r}: {os.strerror(err)}")


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
