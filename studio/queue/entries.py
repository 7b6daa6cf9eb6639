"""The run queue: runs that start one after another on this machine, with no studio open. Torch-free.

A queued run is a run folder created (checked, its dataset prepared, its name taken) by the same `prepare_run` as
`llm-studio train`, plus an entry in the queue folder saying it waits its turn:

    $LLM_STUDIO_HOME/queue/
        000001.json ...  one waiting run each ({"run": NAME, "queued": unix time, "after": RUN or absent});
                         the number orders them
        lock             held by the queue runner for its life (studio.run_folder.lock): one runner at a time
        current          the name of the run the runner launched last
        paused           present while the queue is held: the runner starts nothing new
        runner.log       the runner's output: one line per run started and ended

The runner (studio.queue.runner) is a detached process, its own session like a run, so it survives the terminal
and a logout; whoever adds an entry (or resumes the queue) starts one when none holds the lock. It launches the
first entry, waits for that run to end, and so on; it exits when the queue is empty or paused. Taking an entry
is removing its file, so a runner and `queue cancel` never both have the same entry.

A stage (`train --after RUN`, `llm-studio pipeline`) is an entry with `after`: at its turn the runner first waits
for RUN to end, then starts the stage only when RUN finished (`stage_blocked` is that rule), from RUN's final
checkpoint; otherwise the stage is cancelled, its folder saying why (`cancel_stage`), and so, in turn, are the
stages after it.

The lock is also how a runner's death is seen: the kernel releases it however the runner ends, so runs waiting in
a queue that is not paused, with no process holding the lock, mean the runner was killed (or the machine
restarted). Whoever looks at the queue (`llm-studio queue`, `runs`, the studio's Runs tab) then starts a new one
and says so (`restart_stalled_runner`): a queue never waits for nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studio.atomic_write import write_atomically
from studio.errors import StudioError
from studio.paths import child_process_env, queue_dir
from studio.run_folder.events import EventWriter
from studio.run_folder.layout import EVENTS, run_path
from studio.run_folder.lock import start_holding, try_lock
from studio.run_folder.status import RunInfo, summarize, trainer_alive
from studio.runs.control import delete_run

CURRENT = "current"
PAUSED = "paused"
RUNNER_LOG = "runner.log"
INHERITED_QUEUE_LOCK = "LLM_STUDIO_QUEUE_LOCK_FD"  # set by whoever starts the runner, in the runner's environment


@dataclass
class Entry:
    path: Path  # the entry's file; removing it takes the entry
    run: str
    queued: float
    after: str | None = None  # a stage: the run whose end it waits for, and whose final checkpoint it starts from


@dataclass
class QueueState:
    waiting: list[Entry]
    current: str | None  # the run the runner launched, while it trains
    paused: bool

    @property
    def empty(self) -> bool:
        return not self.waiting and self.current is None and not self.paused


# ---- entries -------------------------------------------------------------------------------------------------
def waiting_entries() -> list[Entry]:
    """The waiting runs, first in line first; an unreadable entry file is skipped (it is never taken)."""
    entries = []
    for path in sorted(queue_dir().glob("[0-9]*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            after = raw.get("after")
            entries.append(Entry(path, str(raw["run"]), float(raw["queued"]), str(after) if after else None))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return entries


def add_entry(run: str, after: str | None = None) -> int:
    """Put the run (whose folder exists) at the end of the queue, a stage when `after` names the run it follows;
    returns its position, from 1."""
    folder = queue_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entries = waiting_entries()
    number = int(entries[-1].path.stem) + 1 if entries else 1
    content = json.dumps({"run": run, "queued": round(time.time(), 3)} | ({"after": after} if after else {}))
    while True:  # another process may take the same number at the same moment: the file's creation decides
        try:
            write_atomically(folder / f"{number:06d}.json", content, exclusive=True)
        except FileExistsError:
            number += 1
            continue
        return len(entries) + 1


def take_entry(entry: Entry) -> bool:
    """Remove the entry; False when another process (a runner, a cancel) took it first."""
    try:
        entry.path.unlink()
    except FileNotFoundError:
        return False
    return True


def next_entry() -> Entry | None:
    """The run to start next: None while the queue is paused or empty."""
    if is_paused():
        return None
    entries = waiting_entries()
    return entries[0] if entries else None


def stage_blocked(entry: Entry) -> str | None:
    """Why the entry, at its turn (the run it follows has ended), must not start: that run ended other than
    finished ("pre failed", "pre stopped", "sft cancelled"); None when it may start."""
    if entry.after is None:
        return None
    status = summarize(run_path(entry.after)).status
    return None if status == "finished" else f"{entry.after} {status}"


FOLLOWABLE = ("starting", "running", "queued", "finished")  # the states from which a run can still end finished


def runs_to_follow(runs: list[RunInfo]) -> list[str]:
    """The runs a stage may be queued after (the studio's "start after" choice), newest first: those training,
    queued (mark_queued) or finished. A stage after any other run would only be cancelled (stage_blocked)."""
    newest_first = sorted(runs, key=lambda run: run.created, reverse=True)
    return [run.name for run in newest_first if run.status in FOLLOWABLE]


def cancel_stage(run: str, reason: str) -> None:
    """Mark a stage that will never start: its folder stays (its config, for a later `train`), its status reads
    `cancelled` with the reason, and the stages after it are cancelled in turn."""
    events = EventWriter(run_path(run) / EVENTS)
    try:
        events.write("error", 0, message=reason)
        events.write("status", 0, state="cancelled")
    finally:
        events.close()


def current_run() -> str | None:
    """The run the runner launched, while it trains."""
    try:
        name = (queue_dir() / CURRENT).read_text(encoding="utf-8").strip()
        return name if trainer_alive(run_path(name)) else None
    except (OSError, StudioError):
        return None


def queue_state() -> QueueState:
    return QueueState(waiting_entries(), current_run(), is_paused())


def mark_queued(runs: list[RunInfo]) -> list[RunInfo]:
    """The runs with status `queued` for those that wait in the queue (and have not started)."""
    waiting = {entry.run for entry in waiting_entries()}
    return [
        dataclasses.replace(run, status="queued") if run.name in waiting and run.status == "created" else run
        for run in runs
    ]


# ---- what people do --------------------------------------------------------------------------------------------
def enqueue(run: str, after: str | None = None) -> int:
    """Queue a created run (a stage after `after`) and make sure a runner will start it; returns its position."""
    position = add_entry(run, after)
    ensure_runner()
    return position


def cancel(run: str) -> list[str]:
    """Take a waiting run out of the queue and remove its folder (never launched, it holds nothing but its
    config); a run already started is stopped with `llm-studio stop`, not here. The stages waiting after it can
    never start: they are cancelled now, saying why, and so are the stages after them; returns their names."""
    entry = next((entry for entry in waiting_entries() if entry.run == run), None)
    if entry is None or not take_entry(entry):
        if current_run() == run:
            raise StudioError(f"run {run} is not waiting: it is training; stop it with `llm-studio stop {run}`")
        raise StudioError(f"run {run} is not in the queue; `llm-studio queue` lists what waits")
    return remove_run(run, "cancelled")


def remove_run(run: str, how: str = "deleted") -> list[str]:
    """Remove a run's folder (`llm-studio delete`, the Runs tab), taking it out of the queue first if it waits
    there; the stages waiting for it are cancelled now, saying it was `how` (gone, it can neither start them nor,
    at their turn, tell why they will not), and so are the stages after them. Returns their names."""
    for entry in waiting_entries():
        if entry.run == run:
            take_entry(entry)
    delete_run(run_path(run))
    return cancel_stages_after(run, how)


def cancel_stages_after(run: str, how: str) -> list[str]:
    """Cancel the stages waiting for a run that is gone (`how`: cancelled or deleted), and the stages after those
    in turn; their names, in queue order."""
    cancelled = []
    for entry in waiting_entries():
        if entry.after == run and take_entry(entry):
            cancel_stage(entry.run, f"{run} {how}")
            cancelled += [entry.run, *cancel_stages_after(entry.run, "cancelled")]
    return cancelled


def pause() -> None:
    queue_dir().mkdir(parents=True, exist_ok=True)
    (queue_dir() / PAUSED).touch()


def resume() -> None:
    (queue_dir() / PAUSED).unlink(missing_ok=True)
    ensure_runner()


def is_paused() -> bool:
    return (queue_dir() / PAUSED).exists()


# ---- the runner process ----------------------------------------------------------------------------------------
def ensure_runner() -> bool:
    """Start a queue runner unless one holds the queue's lock (or nothing is to start); whether one was started.
    The lock is taken here and handed to the runner (as a launcher hands a run's lock to its trainer), so two
    processes adding at once start one runner."""
    if next_entry() is None:
        return False
    folder = queue_dir()
    lock = try_lock(folder)
    if lock is None:  # a runner is at work; it re-reads the queue before it exits
        return False
    try:
        env = child_process_env() | {INHERITED_QUEUE_LOCK: str(lock)}
        start_holding([sys.executable, "-m", "studio.queue.runner"], env, folder, folder / RUNNER_LOG, lock)
    finally:
        os.close(lock)  # the runner holds it now
    return True


def restart_stalled_runner() -> str | None:
    """For whoever looks at the queue: when runs wait and no runner holds the lock, the runner died (a runner
    leaves only once nothing is left to start); start a new one. The line that says so, or None."""
    if not ensure_runner():
        return None
    return "the queue's runner had stopped (killed?) while runs waited: started a new one, they go on"
