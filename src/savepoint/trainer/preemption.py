"""Stopping on a signal, and saving at an exception, as small pure decisions (no Trainer, no process group).

- `exit_code`: the process exit status a stop on a signal reports (128 + the signal number, the shell's
  convention for "ended by that signal").
- `agreed_signal`: which signal every rank acts on, from the flags the ranks hold at a check.
- `flag_check_due`: whether a check (a collective under DDP) happens after this batch.
- `exception_save_plan`: what an exception-time save may write, given the phase of the step the
  exception interrupted: the state as it is, the state from before the step, or nothing (never a mix).
- `Preempted`: what ``Trainer.fit`` raises after a signal stopped it and the checkpoint was written.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

# Phases of one training batch, in order. A step is "in flight" from the batch fetch to the end of the
# optimizer step; the loop records the phase so an exception-time save knows what the live state mixes.
IDLE = "idle"  # between batches: hooks after the step, validation, epoch boundaries
FORWARD = "forward"  # batch fetched, on_train_batch_start / training_step running; no gradient yet
BACKWARD = "backward"  # backward started: this batch's gradient is (partly) in .grad
OPTIMIZER = "optimizer"  # an optimizer's step() started: parameters may be partly updated
PHASES = (IDLE, FORWARD, BACKWARD, OPTIMIZER)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The exit status of a run stopped by `signum`: 128 + signum (SIGTERM 143, SIGINT 130, SIGUSR1 138)."""
    return 128 + int(signum)


def agreed_signal(flags: Sequence[int]) -> int:
    """The signal every rank stops for: the highest-numbered one any rank received (0: none). Any fixed
    rule works, as long as every rank applies it to the same gathered flags; max is one all-reduce."""
    return max((int(f) for f in flags), default=0)


def flag_check_due(batches_done: int, every: int, world_size: int, local_flag: int) -> bool:
    """Check the flag after this batch? Alone, always (it is a local read). Under DDP the check is a
    collective, so every rank must decide the same from what they share: every `every` batches."""
    if world_size <= 1:
        return local_flag != 0
    return every <= 1 or batches_done % every == 0


@dataclass(frozen=True)
class ExceptionSavePlan:
    """``save``: write a checkpoint. ``rollback``: record the state from before the batch in flight (its
    position, RNG, metrics and the window's earlier gradients) instead of the live one. ``reason``: why
    nothing is written, for the warning."""

    save: bool
    rollback: bool
    reason: str = ""


def exception_save_plan(phase: str, world_size: int, have_window_grads: bool) -> ExceptionSavePlan:
    """What an exception-time save may write, by the phase of the step the exception interrupted.

    `have_window_grads`: the gradients of the window's earlier batches, from before this batch's
    backward, are known (copied when the window had some; trivially when it had none).
    """
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r} must be one of {PHASES}")
    if world_size > 1:
        return ExceptionSavePlan(
            False,
            False,
            "under a multi-process strategy the other ranks may be inside a collective, so an exception-time "
            "save (which needs them) could hang; resume from the last periodic checkpoint",
        )
    if phase == IDLE:
        return ExceptionSavePlan(True, False)
    if phase == FORWARD:
        return ExceptionSavePlan(True, True)
    if phase == BACKWARD:
        if have_window_grads:
            return ExceptionSavePlan(True, True)
        return ExceptionSavePlan(
            False, False, "the batch's gradient is mixed into the window's and the earlier one was not kept"
        )
    return ExceptionSavePlan(
        False,
        False,
        "the exception came from inside an optimizer step, so the parameters may be partly updated",
    )


class Preempted(SystemExit):
    """Raised by ``Trainer.fit`` after a signal (SIGTERM, SIGINT, or one configured with a plugin) stopped
    training at a consistent point and its checkpoint was written.

    A `SystemExit`: uncaught, the process exits with status ``128 + signum`` and no traceback (the message
    was printed). Catch it to do something else: ``except savepoint.Preempted as stop: stop.checkpoint_path``.
    """

    def __init__(self, signum: int, checkpoint_path: str | None, global_step: int) -> None:
        super().__init__(exit_code(signum))
        self.signum = int(signum)
        self.checkpoint_path = checkpoint_path
        self.global_step = global_step

    def __str__(self) -> str:
        where = f"saved to {self.checkpoint_path!r}" if self.checkpoint_path else "no checkpoint saved"
        return (
            f"training stopped by {signal_name(self.signum)} after step {self.global_step} ({where}); "
            f"exit code {self.code}"
        )


class RankFailedError(RuntimeError):
    """Another rank of a multi-process run failed; this rank stopped too (the original error is in the
    failing rank's output)."""
