"""One trainer per run: an exclusive lock on the run folder's `lock` file (flock), which the kernel releases when
the last process holding it ends, however it ends.

The launcher takes the lock before it starts a trainer and hands the open file to the child it starts (the
trainer itself, or `accelerate launch`, which outlives its workers), then closes its own copy: from then on the
lock lives exactly as long as the run's processes. A second launch, from any terminal or the studio, finds it
taken. A trainer started by hand (without a launcher) takes the lock itself. Delete holds it while it removes
the folder, so nothing can launch into a folder being deleted.

The run queue (studio.queue.entries) uses the same lock on its own folder: one queue runner at a time, and the runner
waits for the run it launched by waiting for that run's lock (`wait_until_unlocked`): no polling, no delay.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import psutil

from studio.errors import StudioError
from studio.run_folder.layout import LOCK

INHERITED_LOCK = "LLM_STUDIO_RUN_LOCK_FD"  # set by the launcher in the trainer's environment


def try_lock(run_dir: Path) -> int | None:
    """An open descriptor holding the run's lock, or None when another process holds it. The lock is only ever
    taken through a read-write descriptor, and only looked at through read-only ones (`lock_holders`)."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def take_lock(run_dir: Path) -> int:
    """The run's lock, or a StudioError saying that the run is training elsewhere."""
    fd = try_lock(run_dir)
    if fd is None:
        raise StudioError(
            f"run {run_dir.name} is already training (started from another terminal or the studio); "
            f"stop it first with `llm-studio stop {run_dir.name}`"
        )
    return fd


def is_locked(run_dir: Path) -> bool:
    """Whether a process of the run holds its lock (a trainer is alive). Read-only: creates nothing."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: never launched since locks exist, or unreadable
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_holders(folder: Path) -> list[int]:
    """The pids of the processes, other than this one, that hold the folder's lock or may hold it: those with its
    lock file open read-write (a waiter or a looker opens it read-only). Whoever holds a run's lock is its
    trainer, whatever its pid file says. Processes of other users are not seen (nor could they be signalled)."""
    lock_file = str((folder / LOCK).resolve())
    holders = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and any(f.path == lock_file and "+" in f.mode for f in process.open_files()):
                holders.append(process.pid)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return holders


def wait_until_unlocked(folder: Path) -> None:
    """Block until no process holds the folder's lock (returns at once when none does, or it has no lock file)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # granted the moment the holder's last process ends
    finally:
        os.close(fd)


def hold_lock_for_life(run_dir: Path) -> None:
    """In the trainer: keep the lock the launcher handed down, or take it when started by hand. The descriptor
    stays open until the process ends."""
    if INHERITED_LOCK not in os.environ:
        take_lock(run_dir)


def start_holding(command: list[str], env: dict[str, str], folder: Path, log: Path, lock: int) -> subprocess.Popen:
    """Start `command` in `folder` in its own session (a logout or a closed terminal leaves it be), its output
    appended to `log`, handed the descriptor `lock`; the caller then closes its own copy."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            env=env,
            cwd=folder,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(lock,),
        )
