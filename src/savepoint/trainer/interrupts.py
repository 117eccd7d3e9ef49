"""What ``fit`` does around the loop when it is interrupted: a signal, an exception, another rank's failure.

- Signals (`SignalWatcher`): after each batch the loop calls `FitGuard.check_signal`; when a rank got a
  signal, every rank learns it at the same batch (a max over the ranks' flags), the first
  `ModelCheckpoint` saves there (its file name and ``last.ckpt``), pending async writes are committed,
  a signal plugin may requeue the job, and `Preempted` is raised with exit code ``128 + signum``.
- Exceptions: before the ``on_exception`` callbacks run, the state from before the batch in flight is put
  back when the exception interrupted a step (`preemption.exception_save_plan`); when no consistent
  state exists, ``trainer.can_save_on_exception`` is False and exception-time saves are skipped.
- Failures under a multi-process strategy: the failing rank records its error in the job's store and
  closes its process group, so ranks waiting in a collective fail at once instead of at the timeout;
  they raise `RankFailedError` naming the failing rank.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed

from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.trainer import preemption
from savepoint.trainer.preemption import Preempted, RankFailedError
from savepoint.trainer.signals import SignalWatcher

if TYPE_CHECKING:
    from savepoint.trainer.fit_loop import FitLoop
    from savepoint.trainer.trainer import Trainer


class FitGuard:
    """One per ``fit`` call: ``install`` before training, ``attach`` to the loop, ``close`` at the end."""

    def __init__(self, trainer: Trainer, signums: tuple[int, ...], plugin: Any) -> None:
        self.trainer = trainer
        self.watcher = SignalWatcher(signums)
        self.plugin = plugin
        self.check_every = getattr(plugin, "check_every_n_batches", 1)

    def install(self) -> None:
        self.watcher.install()

    def attach(self, loop: FitLoop) -> None:
        loop.stop_check = self.check_signal
        loop.track_rollback = any(getattr(cb, "saves_on_exception", False) for cb in self.trainer.callbacks)

    def close(self) -> None:
        self.watcher.uninstall()

    # -- signals -------------------------------------------------------------------------------------------

    def check_signal(self) -> None:
        t = self.trainer
        local = self.watcher.received
        batches = t._fit_loop.pos.total_batches
        if not preemption.flag_check_due(batches, self.check_every, t.world_size, local):
            return
        signum = t.strategy.max_across_ranks(local) if t.world_size > 1 else local
        if signum:
            self.stop(signum)

    def stop(self, signum: int) -> None:
        t = self.trainer
        name = preemption.signal_name(signum)
        t._print(f"savepoint: {name} received; stopping after step {t.global_step} to save a checkpoint.")
        path = None
        for cb in t.checkpoint_callbacks:
            save = getattr(cb, "save_on_stop", None)
            if callable(save):
                path = save(t)
                break
        t.strategy.checkpoint_io.teardown()  # the async queue: the checkpoint is committed before exit
        self.watcher.consumed = True
        note = self.plugin.after_stop(signum, t.is_global_zero) if self.plugin is not None else None
        stop = Preempted(signum, path, t.global_step)
        extra = f"; {note}" if note else ""
        t._print(f"savepoint: {stop}{extra}. Resume with fit(..., ckpt_path='last').")
        raise stop

    # -- exceptions ------------------------------------------------------------------------------------------

    def on_exception(self, err: BaseException) -> BaseException:
        """Prepare the state for ``on_exception`` callbacks; returns the exception to report (a peer's
        failure seen as a broken collective becomes `RankFailedError`)."""
        t = self.trainer
        if isinstance(err, Preempted):
            t._exception_save_allowed = True  # every rank stopped at the same consistent point
            return err
        if t.world_size > 1 and not _raised_on_every_rank(err):
            peer = t.strategy.failure_of_other_rank()
            if peer is not None and _is_broken_collective(err):
                t._exception_save_allowed = False
                return RankFailedError(
                    f"rank {peer[0]} failed ({peer[1]}); rank {t.global_rank} stopped too."
                )
            t.strategy.report_failure(f"{type(err).__name__}: {err}")
        loop = t._fit_loop
        plan = preemption.exception_save_plan(loop.step_phase, t.world_size, loop.track_rollback)
        if not loop.started:
            plan = preemption.ExceptionSavePlan(False, False, "training had not started")
        t._exception_save_allowed = plan.save
        if plan.save and plan.rollback:
            loop.rollback_batch_in_flight()
        if not plan.save and any(getattr(cb, "saves_on_exception", False) for cb in t.callbacks):
            warnings.warn(
                f"no checkpoint is saved for this {type(err).__name__}: {plan.reason}.",
                UserWarning,
                stacklevel=3,
            )
        return err

    def after_exception(self, err: BaseException) -> None:
        """After the callbacks: a failing rank closes its process group so no peer waits for it."""
        t = self.trainer
        if t.world_size > 1 and not isinstance(err, Preempted) and not _raised_on_every_rank(err):
            t.strategy.abort()


def _is_broken_collective(err: BaseException) -> bool:
    """A collective failed because a peer went away (as opposed to this rank's own error, kept as it is)."""
    if isinstance(err, torch.distributed.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        marker in text for marker in ("gloo", "Connection closed", "Connection reset", "NCCL", "Broken pipe")
    )


def _raised_on_every_rank(err: BaseException) -> bool:
    # A failed save is broadcast and raised on every rank by the strategy: the ranks are still in step.
    return isinstance(err, CheckpointWriteError | RankFailedError)
