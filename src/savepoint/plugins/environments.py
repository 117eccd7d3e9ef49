"""Plugins that say which signals stop training, and what to do once it stopped (``Trainer(plugins=[...])``).

Without one, the Trainer stops on SIGTERM and SIGINT. ``StopSignals(signal.SIGUSR1)`` adds a signal;
``SLURMEnvironment()`` adds SLURM's warning signal (``#SBATCH --signal=USR1@90``) and, once the checkpoint
is written, asks SLURM to requeue the job (``scontrol requeue $SLURM_JOB_ID``, from global rank 0), so the
next attempt resumes with ``fit(ckpt_path="last")``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

DEFAULT_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Stop training at the next consistent point on any of `signals` (besides SIGTERM and SIGINT).

    Under several processes the ranks agree on the stop with one all-reduce of an int per batch;
    ``check_every_n_batches`` spaces those out (the stop then comes up to that many batches later).
    """

    def __init__(self, *signals: int | signal.Signals, check_every_n_batches: int = 1) -> None:
        if (
            isinstance(check_every_n_batches, bool)
            or not isinstance(check_every_n_batches, int)
            or check_every_n_batches < 1
        ):
            raise ValueError(
                f"StopSignals(check_every_n_batches={check_every_n_batches!r}) must be an int >= 1."
            )
        self.check_every_n_batches = check_every_n_batches
        for s in signals:
            if isinstance(s, bool) or not isinstance(s, int) or s not in set(signal.valid_signals()):
                raise ValueError(f"StopSignals({s!r}): not a signal number; pass e.g. signal.SIGUSR1.")
            if s in (signal.SIGKILL, signal.SIGSTOP):
                raise ValueError(f"StopSignals({signal.Signals(s).name}): this signal cannot be handled.")
        self._extra = tuple(int(s) for s in signals)

    @property
    def signals(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys((*DEFAULT_SIGNALS, *self._extra)))

    def after_stop(self, signum: int, is_global_zero: bool) -> str | None:
        """Called on every rank after the stop checkpoint is written; returns a line for the exit message."""
        return None


class SLURMEnvironment(StopSignals):
    """SLURM: stop on `requeue_signal` (SIGUSR1 by default) and, with `auto_requeue`, requeue the job."""

    def __init__(
        self,
        auto_requeue: bool = True,
        requeue_signal: int | signal.Signals | None = None,
        check_every_n_batches: int = 1,
    ) -> None:
        requeue_signal = signal.SIGUSR1 if requeue_signal is None else requeue_signal
        super().__init__(requeue_signal, check_every_n_batches=check_every_n_batches)
        self.auto_requeue = auto_requeue
        self.requeue_signal = signal.Signals(requeue_signal)

    @staticmethod
    def detect() -> bool:
        return "SLURM_JOB_ID" in os.environ

    def after_stop(self, signum: int, is_global_zero: bool) -> str | None:
        if not self.auto_requeue or signum != self.requeue_signal or not is_global_zero:
            return None
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_ARRAY_TASK_ID") and os.environ.get("SLURM_ARRAY_JOB_ID"):
            job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        scontrol = shutil.which("scontrol")
        if not job_id or scontrol is None:
            return "not requeued: no SLURM job id or no scontrol on PATH"
        result = subprocess.run([scontrol, "requeue", job_id], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            return f"requeue of SLURM job {job_id} failed: {result.stderr.strip() or result.returncode}"
        return f"SLURM job {job_id} requeued"
