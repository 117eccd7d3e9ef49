"""A save point: every file the checkpoint callbacks save at one moment of training, written once.

Checkpoint callbacks run last in each hook (the Trainer orders them so), and within one hook they all see
the same training state. The Trainer opens a save point around each round of callback hooks; a
ModelCheckpoint that decides to save *plans* its files into it (their names, and the state the callback
will report once they exist) instead of writing them at once. When every callback has run the hook:

1. the checkpoint is assembled once, with every callback's state as it will be after this save point, so
   each file records every file of the save point and a resume from any of them continues every top-k;
2. the first file of each kind (full, weights-only) is saved; every further name becomes a second name of
   it through the strategy's CheckpointIO (a hard link, a server-side copy, or the async writer's snapshot
   written again), made only after the first file committed; an IO that can do none of these gets the
   same checkpoint dict saved again;
3. after each file, what its callback asked for then (removing the file it replaced, a message), in the
   order Lightning does it (a top-k file, the removal of the one it evicted, then ``last.ckpt``); once
   every file is written, each callback commits its bookkeeping.

If the write raises, every callback drops what it planned (its reported paths stay as they were) and the
error propagates. Outside a round of hooks (a stop on a signal, a hook called directly) a callback's save
point is written when its own save ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


class SavePoint:
    """The files planned at one moment, and what to do once they are written (or if they are not)."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self._files: list[tuple[str, bool]] = []  # (path, weights_only), in the order planned
        self._after_file: list[list[Callable[[], None]]] = []  # what to do once each file is written
        self._commits: list[Callable[[], None]] = []  # once every file is written
        self._aborts: list[Callable[[], None]] = []

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self._files]

    def taken(self, path: str) -> bool:
        """Is `path` already planned here? (A second callback saving into the same folder picks another name.)"""
        return any(planned == path for planned, _ in self._files)

    def add(self, path: str, weights_only: bool, written: Callable[[], None] | None = None) -> None:
        """Plan `path`; `written` runs once it is (before the next file of the save point)."""
        if not self.taken(path):
            self._files.append((path, weights_only))
            self._after_file.append([])
        if written is not None:
            self._after_file[self.paths.index(path)].append(written)

    def on_commit(self, fn: Callable[[], None]) -> None:
        self._commits.append(fn)

    def on_abort(self, fn: Callable[[], None]) -> None:
        self._aborts.append(fn)

    def abort(self) -> None:
        aborts = self._aborts
        self._reset()
        for fn in aborts:
            fn()

    def _reset(self) -> None:
        self._files, self._after_file, self._commits, self._aborts = [], [], [], []

    def write(self) -> None:
        """Write the planned files in order (one checkpoint per kind, the other names linked to it), each
        followed by what its planner asked for (removals of the files it replaces), then commit."""
        files, after_file, commits = self._files, self._after_file, self._commits
        if not files and not commits:
            return

        def written(index: int) -> None:
            for fn in after_file[index]:
                fn()

        try:
            self._trainer._save_checkpoint_files(files, written)
        except BaseException:
            self.abort()
            raise
        self._reset()
        for fn in commits:
            fn()


@contextlib.contextmanager
def save_point(trainer: Trainer) -> Iterator[SavePoint]:
    """The save point of the round of hooks in progress, or one written when this block ends."""
    point: SavePoint | None = getattr(trainer, "_save_point", None)
    if point is not None:
        yield point
        return
    point = SavePoint(trainer)
    trainer._save_point = point
    try:
        yield point
    except BaseException:
        point.abort()
        raise
    finally:
        trainer._save_point = None
    point.write()


def run_hooks(trainer: Trainer, callbacks: list[Any], name: str, args: tuple[Any, ...]) -> None:
    """Run hook `name` on each callback inside one save point, then write it. If a hook raises, what
    the callbacks before it planned is still written (a consistent state), and the hook's error propagates."""
    module = trainer._model
    if trainer._save_point is not None:  # a hook run from within another round
        for cb in callbacks:
            getattr(cb, name)(trainer, module, *args)
        return
    point = trainer._save_point = SavePoint(trainer)
    try:
        for cb in callbacks:
            getattr(cb, name)(trainer, module, *args)
    except BaseException:
        trainer._save_point = None
        with contextlib.suppress(Exception):
            point.write()
        raise
    trainer._save_point = None
    point.write()
