"""Follow one run folder as it grows: torch-free, reads only new bytes, for the studio's dashboard.

`RunWatcher(run_dir).poll()` reads the events appended to events.jsonl since the last poll and the new lines of
trainer.log, and folds them into a History (bounded series: studio.run_folder.history). Opening a watcher starts
from the run's summary and reads what follows it, so a studio started again shows a running run with its whole
history (re-attach), quickly however long. It applies the resume rule of
studio.run_folder.events: a resume from step S drops the points and samples above S and the error shown.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from studio.config import TrainConfig
from studio.epochs import run_dataset_meta, steps_and_epochs
from studio.objectives import Metric, objective_of
from studio.run_folder.history import History, MemoryFacts, Series
from studio.run_folder.layout import TRAINER_LOG, read_config
from studio.run_folder.status import crash_message, run_status

LOG_START_BYTES = 64 * 1024  # on open, the log is read from this far before its end: only the tail is shown


@dataclass
class RunView:
    """What a dashboard shows of a run at one moment: a copy, safe to hand from a worker thread to the UI."""

    name: str
    status: str
    step: int
    max_steps: int
    tokens_seen: int | None
    eta_seconds: float | None
    schedule: str
    series: dict[str, Series]
    samples: list[tuple[int, list[dict[str, str]]]]  # (step, [{"prompt", "text"}]), oldest first
    error: str | None
    log_lines: list[str]
    skipped_lines: int = 0  # lines of events.jsonl that are not events
    device: str | None = None  # where the trainer runs ("cpu", "cuda:0"), from its `running` event
    confusion: tuple[int, list, list[list[int]]] | None = None  # a classifier's latest eval: step, labels, matrix
    memory: MemoryFacts | None = None  # from the `running` event; the measured peaks are series["mem_peak"]
    charted: tuple[Metric, ...] = ()  # the objective's eval metrics drawn beside the loss (studio.objectives)
    train_charted: tuple[Metric, ...] = ()  # and its train events' figures drawn beside it (GRPO's reward)
    length: str = ""  # "300 steps ≈ 960 epochs of 5 examples"; "" when the dataset is gone
    privacy: str = ""  # a private run's privacy spent: "ε 1.23 of 8 at δ 1e-05"; "" when it is not private


class RunWatcher:
    """A run's History (started from its summary, so opening a long run is quick), its log tail and status."""

    def __init__(self, run_dir: Path, log_lines: int = 200):
        self.run_dir = Path(run_dir)
        config = self.config = read_config(self.run_dir)
        self.history = History.load(self.run_dir)
        self.schedule = config.train.schedule
        self.dataset_meta = run_dataset_meta(config)
        self.charted = objective_of(config).charted
        self.train_charted = objective_of(config).train_charted
        self.status = "created"
        self.log_lines: deque[str] = deque(maxlen=log_lines)
        self._log_offset: int | None = None
        self._log_partial = b""
        self._lock = threading.Lock()  # a poll from a worker thread never overlaps another or a view()
        self._unshown = self.history.offset > 0  # what the summary held counts as new at the first poll

    # ---- reading ---------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Fold in what was appended since the last poll; whether anything the dashboard shows changed."""
        with self._lock:
            new_events = self.history.read(self.run_dir)
            new_log = self._read_log()
            status = run_status(self.run_dir, self.history.last_state)
            changed = new_events or new_log or status != self.status or self._unshown
            self.status, self._unshown = status, False
            return changed

    @property
    def series(self) -> dict[str, Series]:
        return self.history.series

    @property
    def samples(self) -> list[tuple[int, list[dict[str, str]]]]:
        return self.history.samples

    @property
    def step(self) -> int:
        return self.history.step

    @property
    def max_steps(self) -> int:
        return self.history.max_steps or self.config.train.max_steps

    def _read_log(self) -> bool:
        path = self.run_dir / TRAINER_LOG
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        if self._log_offset is None:
            self._log_offset = max(0, size - LOG_START_BYTES)
        if size <= self._log_offset:
            return False
        with open(path, "rb") as file:
            file.seek(self._log_offset)
            data = self._log_partial + file.read(size - self._log_offset)
        self._log_offset = size
        complete = data.rfind(b"\n") + 1
        self._log_partial = data[complete:]
        lines = data[:complete].decode("utf-8", errors="replace").splitlines()
        self.log_lines.extend(line.split("\r")[-1] for line in lines)  # progress bars redraw with \r
        return bool(lines)

    # ---- what the dashboard shows -----------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        step_times = self.history.step_times
        if self.status not in ("running", "starting") or len(step_times) < 2:
            return None
        (first_step, first_t), (last_step, last_t) = step_times[0], step_times[-1]
        if last_step <= first_step:
            return None
        return (last_t - first_t) / (last_step - first_step) * max(0, self.max_steps - self.step)

    def _error(self) -> str | None:
        """The trainer's error; for a crashed run, what its events tell of why (status.crash_message)."""
        history = self.history
        if self.status != "crashed" or history.error:
            return history.error
        return crash_message(self.config, history.step, history.memory, history.series["mem_peak"].last())

    def view(self) -> RunView:
        with self._lock:
            tokens = self.series["tokens_seen"].last()
            return RunView(
                name=self.run_dir.name,
                status=self.status,
                step=self.step,
                max_steps=self.max_steps,
                tokens_seen=None if tokens is None else int(tokens),
                eta_seconds=self.eta_seconds(),
                schedule=self.schedule,
                series={name: s.copy() for name, s in self.series.items()},
                samples=list(self.samples),
                error=self._error(),
                log_lines=list(self.log_lines),
                skipped_lines=self.history.skipped_lines,
                length=steps_and_epochs(self.config, self.dataset_meta, self.max_steps) if self.dataset_meta else "",
                device=self.history.device,
                confusion=self.history.confusion,
                memory=self.history.memory,
                charted=self.charted,
                train_charted=self.train_charted,
                privacy=privacy_spent(self.config.train, self.series["epsilon"].last()),
            )


def privacy_spent(train: TrainConfig, epsilon: float | None) -> str:
    """A private run's ε spent so far, its target and δ, as the dashboard and the report show it; "" when the run
    is not private."""
    if not train.private:
        return ""
    target = f" of {train.privacy_epsilon:g}" if train.privacy_epsilon else ""
    return f"ε {'-' if epsilon is None else f'{epsilon:.3g}'}{target} at δ {train.privacy_delta:g}"
