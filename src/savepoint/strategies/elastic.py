"""The process group of a multi-process run, built so that restarts and failures behave.

- Restarts: ``torchrun --max-restarts`` starts a new attempt of every worker against the same store (the
  agent's, which outlives the workers). Keys left by the previous attempt (the gloo mesh addresses, a
  half-finished barrier) made restarted workers hang or fail to connect, so every key this run writes
  lives under a prefix naming the attempt (``TORCHELASTIC_RESTART_COUNT``).
- Failures: a rank that fails records ``rank<TAB>error`` under `FAILED_KEY`. Closing its process group
  does not free peers blocked in a collective with it (gloo keeps the connections while the DDP module
  holds the group), so each rank runs a `FailureWatchdog`: a thread that polls the key and, when another
  rank failed and this rank's main thread did not notice within `GRACE_S` (it is stuck in a
  collective), prints ``rank N failed`` and ends the process with exit code 1. A rank whose collective
  breaks first reads the key itself and raises `RankFailedError` naming the failing rank.
- Exit: a process group savepoint made is destroyed at interpreter exit (``atexit``), unless the script
  destroyed it first, so its gloo threads and store are closed in order while the interpreter is whole
  rather than by destructors during its shutdown (rarely, a rank aborted there with "terminate called
  without an active exception" after its work was done).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from datetime import timedelta
from typing import Any

import torch.distributed as dist

FAILED_KEY = "savepoint/failed"


def attempt_prefix() -> str:
    return f"savepoint/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"


def init_process_group(backend: str, timeout: timedelta) -> Any:
    """``init_process_group`` from the torchrun-style environment, on a store prefixed by the attempt."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"])
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    base = dist.TCPStore(
        host,
        port,
        world_size=world,
        is_master=rank == 0 and not agent_hosts_store,
        timeout=timeout,
        multi_tenant=True,
    )
    store = dist.PrefixStore(attempt_prefix(), base)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
    atexit.unregister(_destroy_at_exit)  # once, however many times a group is made
    atexit.register(_destroy_at_exit)
    return store


def _destroy_at_exit() -> None:
    """On the main thread (no new thread may start this late in the interpreter's exit)."""
    if dist.is_available() and dist.is_initialized():
        _destroy()


def report_failure(store: Any, rank: int, message: str) -> None:
    """Best effort: the store may already be gone (its host rank failed)."""
    if store is None:
        return
    try:
        store.set(FAILED_KEY, f"{rank}\t{message[:500]}")
    except Exception:
        pass


def failure_of_other_rank(store: Any, rank: int) -> tuple[int, str] | None:
    """The failure another rank recorded, if any (never blocks)."""
    if store is None:
        return None
    try:
        if not store.check([FAILED_KEY]):
            return None
        failed_rank, _, message = store.get(FAILED_KEY).decode().partition("\t")
    except Exception:
        return None
    return (int(failed_rank), message) if int(failed_rank) != rank else None


def abort_process_group(wait_s: float = 5.0) -> None:
    """Close this rank's process group so peers blocked in a collective with it fail now. Bounded: a
    destroy stuck behind a pending collective is left to the process exit."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    thread = threading.Thread(target=_destroy, name="savepoint-abort", daemon=True)
    thread.start()
    thread.join(wait_s)


def _destroy() -> None:
    try:
        dist.destroy_process_group()
    except Exception:
        pass


class FailureWatchdog:
    """Ends this process when another rank recorded a failure and the main thread is stuck."""

    POLL_S = 0.5
    GRACE_S = 3.0

    def __init__(self, store: Any, rank: int) -> None:
        self.store = store
        self.rank = rank
        self.noticed = threading.Event()  # the main thread is handling a failure itself
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="savepoint-failure-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.POLL_S * 4)

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            try:
                failed = self.store.check([FAILED_KEY])
            except Exception:
                return
            if not failed:
                continue
            peer = failure_of_other_rank(self.store, self.rank)
            if peer is None or self.noticed.wait(self.GRACE_S) or self._stop.is_set():
                return
            print(
                f"savepoint: rank {peer[0]} failed ({peer[1]}); rank {self.rank} exits.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)
