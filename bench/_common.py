"""Helpers shared by the benchmarks: timing, medians, resident memory, page-cache flushing."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable


def flush_page_cache() -> None:
    """Write back dirty pages (and drop clean ones where permitted) so runs do not measure each other."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def median_time(
    fn: Callable[[], object], repeat: int = 3, setup: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples resident memory every millisecond while the block runs; `extra` is the peak over the start."""

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def disk_write_rate(folder: str, nbytes: int = 256 << 20) -> float:
    """Bytes per second of a new file written and fsynced in `folder`."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "rate.bin")
    chunk = os.urandom(16 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(nbytes // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - t0
    os.unlink(path)
    return nbytes / elapsed


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*header)
    for row in rows:
        t.add_row(*row)
    Console().print(t)
