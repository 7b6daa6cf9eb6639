"""The queue runner process (`python -m studio.queue.runner`): starts the queue's runs one after another.

Started detached by studio.queue.entries.ensure_runner, which hands it the queue's lock; it holds the lock while it
works, so there is one runner at a time. For each entry: take it (remove its file), launch the run as
`llm-studio train` does (studio.runs.control.launch), then wait for the run's lock, which the kernel
releases the moment the run's last process ends: the next run starts at once. A run that cannot launch is
logged and passed over. A stage (an entry with `after`) waits for the run it follows to end, then starts from its
final checkpoint, or is cancelled when that run did not finish (entries.stage_blocked). When nothing is left to
start (empty, or paused) the runner lets go of the lock and looks once more, so an entry added meanwhile is never
stranded: its adder either saw the lock held (and this look finds the entry) or took the lock itself (and started a
runner).
"""

from __future__ import annotations

import os
from datetime import datetime

from studio.atomic_write import write_atomically
from studio.errors import StudioError
from studio.paths import queue_dir
from studio.queue.entries import (
    CURRENT,
    INHERITED_QUEUE_LOCK,
    Entry,
    cancel_stage,
    current_run,
    next_entry,
    stage_blocked,
    take_entry,
)
from studio.run_folder.layout import existing_run, run_path
from studio.run_folder.lock import try_lock, wait_until_unlocked
from studio.run_folder.status import summarize
from studio.runs.control import launch
from studio.runs.prepare import start_stage_from


def log(message: str) -> None:
    print(f"{datetime.now().isoformat(sep=' ', timespec='milliseconds')} {message}", flush=True)


def queue_lock() -> int | None:
    """The lock handed down by whoever started this runner, or (started by hand) the lock taken here."""
    inherited = os.environ.pop(INHERITED_QUEUE_LOCK, None)  # popped: the runs launched here must not see it
    return int(inherited) if inherited else try_lock(queue_dir())


def run_queue() -> None:
    lock = queue_lock()
    if lock is None:
        return  # another runner holds the queue
    wait_for_run(current_run())  # a run launched by an earlier runner that was killed: one at a time still
    while True:
        entry = next_entry()
        if entry is not None:
            start_and_wait(entry)
            continue
        os.close(lock)
        if next_entry() is None or (lock := try_lock(queue_dir())) is None:
            log("nothing to start: the runner exits")
            return


def start_and_wait(entry: Entry) -> None:
    """Launch the entry's run and return when it has ended; a run that cannot launch is logged and skipped, a stage
    whose previous run did not finish is cancelled."""
    if entry.after is not None:
        wait_until_unlocked(run_path(entry.after))  # started elsewhere, or by this runner before: it ends first
    if not take_entry(entry):
        return  # cancelled meanwhile
    try:
        run_dir = existing_run(entry.run)
        if reason := stage_blocked(entry):
            cancel_stage(entry.run, reason)
            log(f"run {entry.run} cancelled: {reason}")
            return
        if entry.after is not None:
            start_stage_from(run_dir, entry.after)
        write_atomically(queue_dir() / CURRENT, entry.run + "\n")
        launch(run_dir)
    except (StudioError, OSError) as error:
        log(f"run {entry.run} could not start: {error}")
        return
    log(f"run {entry.run} started")
    wait_for_run(entry.run)


def wait_for_run(name: str | None) -> None:
    if name is None:
        return
    run_dir = run_path(name)
    wait_until_unlocked(run_dir)
    log(f"run {name} ended: {summarize(run_dir).status}")


if __name__ == "__main__":
    run_queue()
