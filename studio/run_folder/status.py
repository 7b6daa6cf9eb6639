"""A run's status and summary, read from its folder: torch-free, for the CLI's `runs` and the studio's tables.

Status comes from the last `status` event plus whether the launched process is still alive, so a killed
trainer reads as `crashed`, never as `running` forever. Summaries fold events.jsonl in as it grows, each run's
from its summary on (studio.run_folder.history), so listing long runs reads little.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from studio.config import RunConfig
from studio.errors import StudioError
from studio.objectives import objective_of
from studio.run_folder.history import History, MemoryFacts, run_scores
from studio.run_folder.layout import CONFIG, EVENTS, PID, list_run_dirs, read_config
from studio.run_folder.lock import is_locked
from studio.sizing.memory_advice import killed_message

FINAL_STATES = ("finished", "stopped", "failed", "cancelled")  # cancelled: a stage whose previous run did not finish
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Linux: new at every boot


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # created, starting, running, finished, stopped, failed, crashed, cancelled; damaged: unreadable
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
    val_scores: str = ""  # its charted eval metrics and eval tasks (history.run_scores); "" for a plain LM

    @property
    def status_line(self) -> str:
        """The status as the runs tables show it: a cancelled stage says why ("cancelled: pre failed")."""
        return f"{self.status}: {self.error}" if self.status == "cancelled" and self.error else self.status


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


class RunSummaries:
    """Every run's summary, each run's events folded in incrementally (a History per run): the studio refreshes
    its runs table every few seconds, and re-reading every run's whole history each time would grow with the runs.

    A history belongs to one events file: it is keyed by the folder and the file's inode, and started over when
    the file is shorter than what was read (a run deleted and made anew under the same name). Histories of
    folders that are no longer listed are dropped at the next listing, so deleting a run needs no bookkeeping.
    The studio asks from several worker threads (the runs table, the playground), so one asks at a time.
    """

    def __init__(self) -> None:
        self._histories: dict[tuple[Path, int], History] = {}
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
            history = self._history(run_dir, events_file)
            history.read(run_dir)
        status = run_status(run_dir, history.last_state)
        if history.error and status in ("failed", "cancelled"):
            reason = history.error
        elif status == "crashed":
            reason = crash_message(config, history.step, history.memory, history.series["mem_peak"].last())
        else:
            reason = None
        created = (run_dir / CONFIG).stat().st_mtime
        return RunInfo(
            name=run_dir.name,
            path=run_dir,
            status=status,
            step=history.step,
            max_steps=config.train.max_steps,
            train_loss=history.series["loss"].last(),
            val_loss=history.series["val_loss"].last(),
            preset=config.preset,
            data=config.data.dataset or config.data.source,
            created=created,
            updated=events_file.stat().st_mtime if events_file.exists() else created,
            error=reason,
            skipped_lines=history.skipped_lines,
            val_scores=run_scores(objective_of(config).charted, history.series),
        )

    def list_runs(self) -> list[RunInfo]:
        run_dirs = list_run_dirs()
        listed = {path.resolve() for path in run_dirs}
        with self._lock:
            self._histories = {key: history for key, history in self._histories.items() if key[0] in listed}
        return sorted((self.summarize(path) for path in run_dirs), key=lambda run: run.created)

    def _history(self, run_dir: Path, events_file: Path) -> History:
        try:
            stat = events_file.stat()
            key, size = (run_dir.resolve(), stat.st_ino), stat.st_size
        except FileNotFoundError:
            key, size = (run_dir.resolve(), -1), 0
        history = self._histories.get(key)
        if history is None or size < history.offset:
            history = self._histories[key] = History.load(run_dir)
        return history


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
