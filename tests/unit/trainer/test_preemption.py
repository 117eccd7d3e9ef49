"""The stop and exception-save decisions, without a Trainer."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from savepoint.trainer import preemption
from savepoint.trainer.preemption import Preempted


def test_exit_code_is_128_plus_the_signal_number():
    assert preemption.exit_code(signal.SIGTERM) == 143
    assert preemption.exit_code(signal.SIGINT) == 130


@given(st.lists(st.integers(0, 64), min_size=1, max_size=8))
def test_agreed_signal_is_the_same_whatever_the_rank_order(flags):
    assert preemption.agreed_signal(flags) == preemption.agreed_signal(list(reversed(flags)))
    assert (preemption.agreed_signal(flags) == 0) == (not any(flags))


def test_flag_check_due_alone_only_reads_the_flag():
    assert not preemption.flag_check_due(7, 1, 1, 0)
    assert preemption.flag_check_due(7, 1, 1, signal.SIGTERM)


@given(st.integers(0, 1000), st.integers(1, 10), st.integers(0, 64))
def test_flag_check_due_under_ddp_does_not_depend_on_the_local_flag(batches, every, flag):
    # every rank must enter the collective at the same batches, whether or not it got a signal
    assert preemption.flag_check_due(batches, every, 2, flag) == preemption.flag_check_due(
        batches, every, 2, 0
    )


@pytest.mark.parametrize(
    ("phase", "grads", "save", "rollback"),
    [
        (preemption.IDLE, False, True, False),
        (preemption.FORWARD, False, True, True),
        (preemption.BACKWARD, True, True, True),
        (preemption.BACKWARD, False, False, False),
        (preemption.OPTIMIZER, True, False, False),
    ],
)
def test_exception_save_plan_never_saves_a_mix(phase, grads, save, rollback):
    plan = preemption.exception_save_plan(phase, 1, grads)
    assert (plan.save, plan.rollback) == (save, rollback)
    assert plan.save or plan.reason


def test_exception_save_plan_under_several_processes_saves_nothing():
    plan = preemption.exception_save_plan(preemption.IDLE, 2, True)
    assert not plan.save and "collective" in plan.reason


def test_exception_save_plan_rejects_an_unknown_phase():
    with pytest.raises(ValueError, match="'nowhere'"):
        preemption.exception_save_plan("nowhere", 1, True)


def test_preempted_is_a_system_exit_with_the_signal_exit_code():
    stop = Preempted(signal.SIGTERM, "/ck/last.ckpt", 12)
    assert isinstance(stop, SystemExit) and stop.code == 143
    assert str(stop) == "training stopped by SIGTERM after step 12 (saved to '/ck/last.ckpt'); exit code 143"
