"""Spare files: rewrite a checkpoint name's previous file in place, then swap it in atomically.

Writing a new file on ext4 ran at 0.33-0.47 GB/s here while rewriting an existing file in place ran at
1.5-1.9 GB/s (block allocation is the difference). For a name that is saved over and over (`last.ckpt`),
`TorchCheckpointIO` keeps the previous file as a *spare* in ``<dirpath>/.savepoint-spare/<name>.spare``,
rewrites it in place, fsyncs it and exchanges it with the checkpoint in one ``renameat2(RENAME_EXCHANGE)``:
a crash leaves the old checkpoint or the new one, and the spare (torn or stale) is never a checkpoint (it
lives in a hidden folder, without the ``.ckpt`` extension). A spare is rewritten only while this process
holds an exclusive ``flock`` on it and it has a single name (never the inode of a hard-linked checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from savepoint.plugins.io._fs import sweep_stale_temps, temp_name_for

try:
    import fcntl
except ImportError:  # not POSIX: no spares, every save writes a new file
    fcntl = None  # type: ignore[assignment]

SPARE_DIR = ".savepoint-spare"
SPARE_SUFFIX = ".spare"


def spare_dir(final: Path) -> Path:
    return final.parent / SPARE_DIR


def spare_path(final: Path) -> Path:
    return spare_dir(final) / (final.name + SPARE_SUFFIX)


def open_spare(final: Path) -> BinaryIO | None:
    """The spare of `final`, open for rewriting and locked; None when there is none usable."""
    if fcntl is None:
        return None
    path = spare_path(final)
    try:
        f = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed by the caller after the exchange
    except OSError:
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return f  # type: ignore[return-value]
        if st.st_nlink > 1:  # another name shares these bytes (a linked checkpoint): drop our name only
            with contextlib.suppress(OSError):
                os.unlink(path)
    except OSError:
        pass  # locked by another writer, or no flock here: write a new file instead
    f.close()
    return None


def aside_name(final: Path) -> Path:
    """A temporary name in the spare folder for bytes on their way out (swept like any temporary)."""
    folder = spare_dir(final)
    folder.mkdir(exist_ok=True)
    return temp_name_for(folder / final.name)


def retire(old: Path, final: Path) -> Path | None:
    """`old` holds `final`'s previous bytes: keep them as its spare, or return a name to unlink later."""
    try:
        single = os.lstat(old).st_nlink == 1 and not os.path.islink(old)
    except OSError:
        return None
    if not single:
        os.unlink(old)  # a name of a linked checkpoint: dropping it frees nothing
        return None
    slot = spare_path(final)
    spare_dir(final).mkdir(exist_ok=True)
    if not os.path.lexists(slot):
        os.rename(old, slot)
        return None
    aside = aside_name(final)
    os.rename(old, aside)
    return aside


def remove_spare(final: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(spare_path(final))
    with contextlib.suppress(OSError):
        spare_dir(final).rmdir()  # only when empty


def sweep_spares(folder: Path) -> None:
    """Remove what killed writers left in `folder`'s spare folder: their temporaries, and spares of
    checkpoints that no longer exist (unless another writer holds one)."""
    spares = folder / SPARE_DIR
    if fcntl is None or not spares.is_dir():
        return
    sweep_stale_temps(spares)
    for entry in os.scandir(spares):
        if not entry.name.endswith(SPARE_SUFFIX):
            continue
        if os.path.lexists(folder / entry.name[: -len(SPARE_SUFFIX)]):
            continue
        with contextlib.suppress(OSError), open(entry.path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
