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
        probe_writable_remote(path)
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


# -- the storage surface's fsspec implementation (CheckpointIO's defaults) -----------------------------------------

COMMIT_NAME = ".metadata"  # a sharded checkpoint folder is committed once DCP wrote this file


def join(folder: str, name: str) -> str:
    """`name` inside `folder`, for a local path or an fsspec URL."""
    if "://" in folder:
        return folder.rstrip("/") + "/" + name
    return os.path.join(folder, name)


def exists(path: str) -> bool:
    """Is the name taken? A local dangling symlink counts: writing there would replace the link."""
    fs, inner = get_fs(path)
    if is_local(fs):
        return os.path.lexists(inner)
    return bool(fs.exists(inner))


def makedirs(path: str) -> None:
    fs, inner = get_fs(path)
    fs.makedirs(inner, exist_ok=True)


def _local_entry(entry: os.DirEntry[str], shown: str, warn: Any) -> tuple[float, int, bool] | None:
    """(mtime, size, is_dir) of one candidate, or None when it is not a checkpoint."""
    try:
        st = entry.stat()  # follows a symlink: a dangling one or a loop raises here
    except OSError as err:
        what = "a symlink loop" if err.errno == errno.ELOOP else "a dangling symlink"
        if entry.is_symlink() and entry.name.endswith(".ckpt"):
            warn(f"skipping {shown!r}: {what} ({err.strerror}), not a checkpoint")
        return None
    if stat.S_ISDIR(st.st_mode):
        commit = os.path.join(entry.path, COMMIT_NAME)
        try:
            return os.stat(commit).st_mtime, st.st_size, True  # committed when DCP wrote .metadata
        except OSError:
            return None  # an interrupted sharded save (or any other folder)
    if not entry.name.endswith(".ckpt"):
        return None
    return st.st_mtime, st.st_size, False


def list_local(folder: str, warn: Any) -> list[tuple[str, float, int, bool]]:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in entries:
        if entry.name.startswith("."):  # temporary files and hidden names are never checkpoints
            continue
        shown = os.path.join(folder, entry.name)
        found = _local_entry(entry, shown, warn)
        if found is not None:
            out.append((shown, *found))
    return out


def _info_mtime(fs: Any, info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "created", "modified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    with contextlib.suppress(Exception):
        return float(fs.modified(info["name"]).timestamp())
    return 0.0


def list_remote(folder: str) -> list[tuple[str, float, int, bool]]:
    fs, inner = get_fs(folder)
    fs.invalidate_cache(inner)  # object stores cache listings; another process's checkpoint must be seen
    try:
        infos = fs.ls(inner, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for info in infos:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or info["name"].rstrip("/") == inner.rstrip("/"):
            continue
        shown = join(folder, name)
        if info.get("type") == "directory":
            commit = info["name"].rstrip("/") + "/" + COMMIT_NAME
            if fs.exists(commit):
                out.append((shown, _info_mtime(fs, fs.info(commit)), 0, True))
        elif name.endswith(".ckpt"):
            out.append((shown, _info_mtime(fs, info), int(info.get("size") or 0), False))
    return out


def list_folders(folder: str) -> list[str]:
    fs, inner = get_fs(folder)
    if is_local(fs):
        try:
            return sorted(os.path.join(folder, e.name) for e in os.scandir(folder) if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs.invalidate_cache(inner)
    try:
        infos = fs.ls(inner, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [i["name"].rstrip("/").rsplit("/", 1)[-1] for i in infos if i.get("type") == "directory"]
    return sorted(join(folder, n) for n in names)


def save_text(text: str, path: str) -> None:
    """Write a small text file atomically (local: temporary file, fsync, rename; elsewhere: one put)."""
    fs, inner = get_fs(path)
    if not is_local(fs):
        fs.pipe_file(inner, text.encode("utf-8"))
        return
    final = Path(inner)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(final)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_text(path: str) -> str:
    fs, inner = get_fs(path)
    with fs.open(inner, "rb") as f:
        return f.read().decode("utf-8")


def probe_writable_remote(path: str) -> None:
    """Write and delete a tiny hidden object under `path`: a read-only bucket fails here, not mid-run."""
    fs, inner = get_fs(path)
    probe = inner.rstrip("/") + f"/.sp-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with contextlib.suppress(Exception):
            fs.makedirs(inner, exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except Exception as err:
        raise PermissionError(
            f"checkpoint folder {path!r} is not writable ({type(err).__name__}: {err}). Check the credentials and "
            f"the bucket, or choose another `dirpath`/`default_root_dir`."
        ) from err
