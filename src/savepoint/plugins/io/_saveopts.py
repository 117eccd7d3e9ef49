"""``torch.save``'s record CRCs and storage alignment, set for one thread's saves only.

torch reads both from a process-wide config (``torch.utils.serialization.config.save``): whether to
compute CRCs when it makes its zip writer, and the storage alignment then and again when it writes the
archive's ``.storage_alignment`` record, after the pickle. Set globally for a background save, they would
change the files every other thread writes meanwhile: a user's ``torch.save`` without CRCs, or one padded
to an alignment its ``.storage_alignment`` record does not state. So savepoint wraps, once, the two
functions torch reads the config through: a thread inside `torch_save_options` sees its own values, every
other thread the config's. On a torch without one of these functions that option is not applied (torch
then computes CRCs in line, or aligns records to its default), which changes speed, never the file's
validity: `supported` says which apply.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

# torch.serialization's function -> the option it reads
_READERS = {"get_crc32_options": "crc32", "_get_storage_alignment": "storage_alignment"}

_local = threading.local()
_install_lock = threading.Lock()
_supported: frozenset[str] | None = None


def _install() -> frozenset[str]:
    global _supported
    with _install_lock:
        if _supported is None:
            import torch.serialization as ts

            found = set()
            for name, option in _READERS.items():
                original = getattr(ts, name, None)
                if not callable(original):
                    continue
                if getattr(original, "_savepoint_option", None) != option:
                    setattr(ts, name, _per_thread(original, option))
                found.add(option)
            _supported = frozenset(found)
    return _supported


def _per_thread(original, option: str):
    @functools.wraps(original)
    def read():
        value = getattr(_local, option, None)
        return original() if value is None else value

    read._savepoint_option = option  # type: ignore[attr-defined]
    return read


def supported() -> frozenset[str]:
    """The options this torch lets `torch_save_options` set: a subset of {"crc32", "storage_alignment"}."""
    return _install()


@contextlib.contextmanager
def torch_save_options(*, crc32: bool | None = None, storage_alignment: int | None = None) -> Iterator[None]:
    """``torch.save`` calls made by this thread inside the context compute record CRCs or not (`crc32`) and
    align each storage's data in the archive to `storage_alignment` bytes; None keeps what applies already
    (an enclosing context's value, else torch's config). Other threads are not affected."""
    _install()
    previous = {option: getattr(_local, option, None) for option in _READERS.values()}
    for option, value in (("crc32", crc32), ("storage_alignment", storage_alignment)):
        if value is not None:
            setattr(_local, option, value)
    try:
        yield
    finally:
        for option, value in previous.items():
            setattr(_local, option, value)
