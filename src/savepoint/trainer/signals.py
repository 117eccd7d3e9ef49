"""Signal handlers installed for the duration of ``fit``: they only record the signal.

The loop reads the record at its next consistent point (after the batch in flight, see `FitLoop`),
saves and raises `Preempted`. The first signal switches that signal to "exit at once": a second SIGTERM
(or SIGUSR1...) ends the process by the signal's default action, a second SIGINT raises
`KeyboardInterrupt` where the program is. Handlers are installed only from the main thread (Python
allows no other) and the previous ones are put back when fit ends; a signal that arrived but was not
acted on (fit was ending anyway) is then delivered again to the previous handler, so nothing is lost.
A handler the user installed is still called (chained); a signal set to be ignored stays ignored.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

from savepoint.plugins.environments import DEFAULT_SIGNALS, StopSignals


class SignalWatcher:
    """Records the first of `signums` received while installed."""

    def __init__(self, signums: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signums = tuple(dict.fromkeys(int(s) for s in signums))
        self.received = 0  # the first signal received, 0 when none
        self.consumed = False  # the loop acted on it (stopped and saved)
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # fit() from a worker thread: Python refuses handlers there; signals keep their defaults
        self.received, self.consumed = 0, False
        for signum in self.signums:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # the launcher asked for this signal to be ignored (nohup, background job)
            self._previous[signum] = previous
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            # A second signal: exit at once, as if no handler were installed.
            self._exit_now(signum, frame)
            return
        self.received = signum
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)  # the user's own handler still runs

    def _exit_now(self, signum: int, frame: Any) -> None:
        self.uninstall(redeliver=False)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def uninstall(self, redeliver: bool = True) -> None:
        """Put the previous handlers back; deliver a received, unacted-on signal to them."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if redeliver and self.received and not self.consumed and self.received in previous:
            self.consumed = True
            os.kill(os.getpid(), self.received)


def split_signal_plugins(plugins: Any) -> tuple[Any, tuple[int, ...], Any]:
    """``Trainer(plugins=...)`` without its signal plugin; the signals to handle; the plugin (or None)."""
    items = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    chosen = [p for p in items if isinstance(p, StopSignals)]
    if len(chosen) > 1:
        raise ValueError(
            f"Trainer(plugins=...) got {len(chosen)} signal plugins ({chosen!r}); pass at most one "
            f"(StopSignals(...) takes several signals)."
        )
    rest = [p for p in items if not isinstance(p, StopSignals)]
    plugin = chosen[0] if chosen else None
    return (rest or None), (plugin.signals if plugin else DEFAULT_SIGNALS), plugin
