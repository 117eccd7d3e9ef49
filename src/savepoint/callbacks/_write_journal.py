"""What ModelCheckpoint reported before each background write, to undo it if the write never lands.

With `AsyncCheckpointIO` a save returns once queued; ModelCheckpoint updates its bookkeeping then (the next
file it writes must record this one). If the write fails, the error surfaces at the next save or at the
end of fit, and the bookkeeping must go back to the state before the first write that did not land.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from savepoint.plugins.io.async_io import AsyncCheckpointIO

_LENGTH = 16  # a failure surfaces at the next save: only the last few writes can still fail


class WriteJournal:
    def __init__(self) -> None:
        self._entries: deque[tuple[str, dict[str, Any]]] = deque(maxlen=_LENGTH)

    def remember(self, io: Any, path: str, state: dict[str, Any]) -> None:
        """Before a write or link of `path` through `io`: the state to restore if it never lands."""
        if isinstance(io, AsyncCheckpointIO):
            self._entries.append((path, state))

    def forget(self, path: str) -> None:
        """The write of `path` raised before it was queued: nothing to undo."""
        if self._entries and self._entries[-1][0] == path:
            self._entries.pop()

    def state_before_failure(self, io: Any) -> dict[str, Any] | None:
        """After every queued write finished: the state before the first one that failed, if any."""
        entries, self._entries = list(self._entries), deque(maxlen=_LENGTH)
        if not entries or not isinstance(io, AsyncCheckpointIO):
            return None
        io.wait()
        mine = {path for path, _ in entries}
        failed = [path for path in io.failed_paths if path in mine]
        before = None
        # The failed writes are the newest ones (an error stops the saves after it): match from the end.
        while entries and failed and entries[-1][0] == failed[-1]:
            before = entries.pop()[1]
            failed.pop()
        return before
