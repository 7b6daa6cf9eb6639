"""A run's status and summary, read from its folder: torch-free, for the CLI's `runs` and the studio's tables.

Status comes from the last `status` event plus whether the launched process is still alive, so a killed
trainer reads as `crashed`, never as `running` forever. Summaries fold events.jsonl in as it grows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from studio.config import RunConfig
from studio.errors import StudioError
from studio.run_folder.events import read_event_lines, resumed_from, superseded
from studio.run_folder.layout import CONFIG, EVENTS, PID, list_run_dirs, read_config
from studio.run_folder.lock import is_locked
from studio.sizing.memory_advice import killed_message

FINAL_STATES = ("finished", "stopped", "failed")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Linux: new at every boot


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # created, starting, running, finished, stopped, failed, crashed; damaged: unreadable (see error)
    step: int
    max_steps: int
    train_loss: float | None
    val_loss: float | None
    preset: str
    data: str
    created: float
    updated: float
    error: str | None
    skipped_lines: int = 0  # lines of events.jsonl that are not events


@dataclass
class MemoryFacts:
    """What the trainer said about its memory when it started (studio.train.memory): bytes per process."""

    estimate: int | None  # studio.sizing.sizes' estimate, as printed before the launch
    measure: str | None  # what mem_peak counts: `cuda_allocated`, or `rss` above the baseline
    baseline: int | None  # on a CPU: the resident memory of the set-up process, the weights left out

    @classmethod
    def of(cls, running: dict[str, Any]) -> MemoryFacts | None:
        """From a `running` status event; None when it reported no memory."""
        if running.get("mem_estimate") is None:
            return None
        return cls(running["mem_estimate"], running.get("mem_measure"), running.get("mem_baseline"))


def crash_message(config: RunConfig, step: int, memory: MemoryFacts | None, peak: int | None) -> str:
    """Why a crashed run (no error, no final status) ended, as far as its events tell: on a CPU, its process's
    memory against this machine's RAM (studio.sizing.memory_advice.killed_message)."""
    if memory is None or memory.measure != "rss":  # a GPU's tensors say nothing of the host's RAM
        return killed_message(config, step, None, None, psutil.virtual_memory().total)
    expected = None if memory.estimate is None else memory.estimate + (memory.baseline or 0)
    return killed_message(config, step, peak, expected, psutil.virtual_memory().total)


def process_start(pid: int) -> str:
    """When process `pid` started, in a form that does not move with the wall clock: a pid recorded with it is
    known again after a clock step, and never taken for a later process given the same pid. On Linux this boot's
    id and the start in clock ticks since boot (field 22 of /proc/PID/stat; psutil turns it into wall-clock
    seconds from the boot time, which a clock step moves). Elsewhere psutil's create_time, which there is the
    process's own start timestamp. Raises OSError or psutil.Error when there is no such process."""
    if not BOOT_ID.exists():
        return repr(psutil.Process(pid).create_time())
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    fields_after_name = stat.rpartition(")")[2].split()  # the name (field 2) may hold spaces and parentheses
    start_ticks = fields_after_name[22 - 3]
    return f"{BOOT_ID.read_text(encoding='utf-8').strip()}:{start_ticks}"


def trainer_pid(run_dir: Path) -> int | None:
    """The launched process's pid while it is alive (the same pid and start as recorded), else None."""
    try:
        pid_text, started = (run_dir / PID).read_text(encoding="utf-8").split()
        pid = int(pid_text)
        if process_start(pid) == started and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return pid
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def trainer_alive(run_dir: Path) -> bool:
    """Whether a process of the run lives: the recorded one, or any still holding the run's lock (the kernel
    releases it only once the last of them has ended, so a run is never over before its processes are)."""
    return trainer_pid(run_dir) is not None or is_locked(run_dir)


def derive_status(last_state: str | None, alive: bool, launched: bool) -> str:
    """A run's status from its last status event's state and whether its process lives."""
    if alive:
        return "running" if last_state in ("running", "resumed") else "starting"
    if last_state in FINAL_STATES:
        return last_state
    return "crashed" if launched else "created"


def run_status(run_dir: Path, last_state: str | None) -> str:
    """derive_status for a run folder whose newest status event had `last_state`."""
    return derive_status(last_state, trainer_alive(run_dir), (run_dir / PID).exists())


@dataclass
class EventTally:
    """What a run summary needs from events.jsonl, folded in as the file grows: the studio refreshes its runs
    table every few seconds, and re-reading every run's whole history each time would grow with the runs."""

    offset: int = 0
    skipped: int = 0  # lines that were not events
    step: int = 0
    state: str | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # the newest train, eval, error, running events

    def read(self, path: Path) -> None:
        events, self.offset, skipped = read_event_lines(path, self.offset)
        self.skipped += skipped
        for event in events:
            self.fold(event)

    def fold(self, event: dict[str, Any]) -> None:
        kind, step = event.get("kind"), event.get("step", 0)
        if kind == "status":
            self.state = event.get("state")
            if self.state == "running":
                self.last["running"] = event
        resumed = resumed_from(event)
        if resumed is not None:  # blank until the resumed attempt logs again (seconds)
            self.step = resumed
            self.last = {k: e for k, e in self.last.items() if not superseded(e, resumed) and k != "error"}
        if kind in ("train", "eval", "error"):
            self.last[kind] = event
        self.step = max(self.step, step)


class RunSummaries:
    """Every run's summary, each run's events folded in incrementally (an EventTally per run).

    A tally belongs to one events file: it is keyed by the folder and the file's inode, and started over when
    the file is shorter than what was read (a run deleted and made anew under the same name). Tallies of
    folders that are no longer listed are dropped at the next listing, so deleting a run needs no bookkeeping.
    The studio asks from several worker threads (the runs table, the playground), so one asks at a time.
    """

    def __init__(self) -> None:
        self._tallies: dict[tuple[Path, int], EventTally] = {}
        self._lock = threading.Lock()

    def summarize(self, run_dir: Path) -> RunInfo:
        """The run's summary; a run whose folder cannot be read is `damaged`, with the reason as its error."""
        try:
            return self._summarize(run_dir)
        except (StudioError, OSError) as error:
            return damaged_run(run_dir, str(error))

    def _summarize(self, run_dir: Path) -> RunInfo:
        config = read_config(run_dir)
        events_file = run_dir / EVENTS
        with self._lock:
            tally = self._tally(run_dir, events_file)
            tally.read(events_file)
        status = run_status(run_dir, tally.state)
        train, val, error, running = (tally.last.get(kind) for kind in ("train", "eval", "error", "running"))
        if error and status == "failed":
            reason = error.get("message", "the trainer failed")
        elif status == "crashed":
            memory = MemoryFacts.of(running) if running else None
            reason = crash_message(config, tally.step, memory, train.get("mem_peak") if train else None)
        else:
            reason = None
        created = (run_dir / CONFIG).stat().st_mtime
        return RunInfo(
            name=run_dir.name,
            path=run_dir,
            status=status,
            step=tally.step,
            max_steps=config.train.max_steps,
            train_loss=train.get("loss") if train else None,
            val_loss=val.get("val_loss") if val else None,
            preset=config.preset,
            data=config.data.dataset or config.data.source,
            created=created,
            updated=events_file.stat().st_mtime if events_file.exists() else created,
            error=reason,
            skipped_lines=tally.skipped,
        )

    def list_runs(self) -> list[RunInfo]:
        run_dirs = list_run_dirs()
        listed = {path.resolve() for path in run_dirs}
        with self._lock:
            self._tallies = {key: tally for key, tally in self._tallies.items() if key[0] in listed}
        return sorted((self.summarize(path) for path in run_dirs), key=lambda run: run.created)

    def _tally(self, run_dir: Path, events_file: Path) -> EventTally:
        try:
            stat = events_file.stat()
            key, size = (run_dir.resolve(), stat.st_ino), stat.st_size
        except FileNotFoundError:
            key, size = (run_dir.resolve(), -1), 0
        tally = self._tallies.get(key)
        if tally is None or size < tally.offset:
            tally = self._tallies[key] = EventTally()
        return tally


def damaged_run(run_dir: Path, reason: str) -> RunInfo:
    try:
        created = run_dir.stat().st_mtime
    except OSError:
        created = 0.0
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        status="damaged",
        step=0,
        max_steps=0,
        train_loss=None,
        val_loss=None,
        preset="-",
        data="-",
        created=created,
        updated=created,
        error=reason,
    )


_summaries = RunSummaries()  # one per process: the CLI asks once, the studio every few seconds
summarize = _summaries.summarize
list_runs = _summaries.list_runs
