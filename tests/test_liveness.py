"""A run's trainer is known while it lives: after a step of the wall clock, and when its pid record is stale, `stop`
still reaches it and the run still reads as running (so nothing launches a second trainer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from studio.paths import child_process_env
from studio.run_folder.layout import LOCK, PID
from studio.run_folder.status import summarize, trainer_alive, trainer_pid
from studio.runs.control import launch, stop_run
from tests.helpers import write_fixture_run

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]  # a stand-in trainer that never reads STOP


@pytest.fixture
def stand_in_run(studio_home, monkeypatch):
    """A run launched as the studio launches one (lock handed down, pid recorded), its trainer a sleeper."""
    monkeypatch.setattr("studio.runs.control.trainer_command", lambda *_: (SLEEPER, child_process_env()))
    run_dir = write_fixture_run("live")
    pid = launch(run_dir)
    yield run_dir, pid
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def has_ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended; its parent (this test) not told yet
    except psutil.NoSuchProcess:
        return True


def step_the_clock(monkeypatch, seconds: float) -> None:
    """What psutil reports after the wall clock was set `seconds` forward: its start times are wall-clock based."""
    create_time, boot_time = psutil.Process.create_time, psutil.boot_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda process: create_time(process) + seconds)
    monkeypatch.setattr(psutil, "boot_time", lambda: boot_time() + seconds)


def test_after_a_clock_step_the_trainer_is_still_known_and_stop_reaches_it(stand_in_run, monkeypatch):
    run_dir, pid = stand_in_run
    step_the_clock(monkeypatch, 5.0)
    (run_dir / LOCK).unlink()  # the lock file gone: the pid record is all that is left
    assert trainer_pid(run_dir) == pid
    assert summarize(run_dir).status in ("running", "starting")  # so resume refuses: no second trainer
    stop_run(run_dir, timeout=0.5)
    assert has_ended(pid)


def test_stop_reaches_whoever_holds_the_lock_when_the_pid_record_is_stale(stand_in_run):
    run_dir, pid = stand_in_run
    ended = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    (run_dir / PID).write_text(f"{ended.stdout.strip()} 0\n", encoding="utf-8")  # a process long gone
    assert trainer_pid(run_dir) is None and trainer_alive(run_dir)
    stop_run(run_dir, timeout=0.5)
    assert has_ended(pid)
    assert not trainer_alive(run_dir)
