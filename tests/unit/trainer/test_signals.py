"""`SignalWatcher`: handlers that only record, restored afterwards; signal plugins."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from savepoint.plugins import SLURMEnvironment, StopSignals
from savepoint.trainer.signals import SignalWatcher, split_signal_plugins


@pytest.fixture
def usr1_handler():
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    yield calls
    signal.signal(signal.SIGUSR1, previous)


def test_signal_watcher_records_the_signal_and_chains_the_previous_handler(usr1_handler):
    watcher = SignalWatcher([signal.SIGUSR1])
    watcher.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert watcher.received == signal.SIGUSR1 and usr1_handler == [signal.SIGUSR1]
    watcher.consumed = True
    watcher.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is not watcher._handle


def test_signal_watcher_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    watcher = SignalWatcher()
    watcher.install()
    assert signal.getsignal(signal.SIGTERM) == watcher._handle
    watcher.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_watcher_redelivers_a_signal_nobody_acted_on(usr1_handler):
    watcher = SignalWatcher([signal.SIGUSR1])
    watcher.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    watcher.uninstall()  # not consumed: the previous handler gets it again
    assert usr1_handler == [signal.SIGUSR1, signal.SIGUSR1]


def test_signal_watcher_second_sigint_raises_keyboard_interrupt():
    watcher = SignalWatcher([signal.SIGINT])
    watcher.install()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert not watcher.installed


def test_signal_watcher_leaves_ignored_signals_ignored():
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        watcher = SignalWatcher([signal.SIGUSR2])
        watcher.install()
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN and not watcher.installed
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_signal_watcher_installs_nothing_off_the_main_thread():
    watcher = SignalWatcher()
    thread = threading.Thread(target=watcher.install)
    thread.start()
    thread.join()
    assert not watcher.installed


def test_split_signal_plugins_adds_the_plugin_signals_to_the_defaults():
    rest, signums, plugin = split_signal_plugins([SLURMEnvironment(auto_requeue=False)])
    assert rest is None and signums == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    assert isinstance(plugin, SLURMEnvironment)


def test_split_signal_plugins_rejects_two_signal_plugins():
    with pytest.raises(ValueError, match="at most one"):
        split_signal_plugins([StopSignals(signal.SIGUSR1), StopSignals(signal.SIGUSR2)])


@pytest.mark.parametrize("bad", [signal.SIGKILL, 999, "SIGTERM"])
def test_stop_signals_rejects_what_cannot_be_handled(bad):
    with pytest.raises(ValueError, match="StopSignals"):
        StopSignals(bad)


def test_slurm_environment_requeues_only_for_its_signal_on_rank_zero(monkeypatch, tmp_path):
    log = tmp_path / "calls"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    env = SLURMEnvironment()
    assert env.after_stop(signal.SIGTERM, True) is None
    assert env.after_stop(signal.SIGUSR1, False) is None
    assert env.after_stop(signal.SIGUSR1, True) == "SLURM job 4242 requeued"
    assert log.read_text().split() == ["requeue", "4242"]
