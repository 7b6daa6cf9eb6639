"""Follow one run folder as it grows: torch-free, reads only new bytes, for the studio's dashboard.

`RunWatcher(run_dir).poll()` reads the events appended to events.jsonl since the last poll and the new lines of
trainer.log, and folds them into in-memory series. Opening a watcher reads from offset 0, so a studio started
again shows a running run with its whole history (re-attach). It applies the resume rule of
studio.run_folder.events: a resume from step S drops the points and samples above S and the error shown.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.objectives import OBJECTIVES, Metric, objective_of
from studio.run_folder.events import read_event_lines, resumed_from
from studio.run_folder.layout import EVENTS, TRAINER_LOG, read_config
from studio.run_folder.status import MemoryFacts, crash_message, run_status

TRAIN_METRICS = (
    "loss",
    "ce_loss",
    "kd_loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "tokens_seen",
    "mfu",
    "mem_allocated",
    "mem_peak",
)
# the validation loss, and what each objective charts beside it (a classifier's accuracy and macro-F1)
EVAL_METRICS = ("val_loss", *dict.fromkeys(m.key for o in OBJECTIVES.values() for m in o.eval_metrics if m.chart_label))
RATE_WINDOW = 10  # train events used to estimate seconds per step (for the ETA)
LOG_START_BYTES = 64 * 1024  # on open, the log is read from this far before its end: only the tail is shown


@dataclass
class Series:
    """One metric against the step: parallel lists, steps increasing within the surviving timeline."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float) -> None:
        self.steps.append(step)
        self.values.append(value)

    def drop_after(self, step: int) -> None:
        keep = next((i for i, s in enumerate(self.steps) if s > step), len(self.steps))
        del self.steps[keep:], self.values[keep:]

    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    def copy(self) -> Series:
        return Series(list(self.steps), list(self.values))


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


class RunWatcher:
    def __init__(self, run_dir: Path, log_lines: int = 200):
        self.run_dir = Path(run_dir)
        config = self.config = read_config(self.run_dir)
        self.max_steps = config.train.max_steps
        self.schedule = config.train.schedule
        self.charted = tuple(metric for metric in objective_of(config).eval_metrics if metric.chart_label)
        self.series: dict[str, Series] = {name: Series() for name in TRAIN_METRICS + EVAL_METRICS}
        self.samples: list[tuple[int, list[dict[str, str]]]] = []
        self.confusion: tuple[int, list, list[list[int]]] | None = None  # a classifier's latest (step, labels, matrix)
        self.last_state: str | None = None  # of the newest status event
        self.step = 0
        self.error: str | None = None
        self.status = "created"
        self.log_lines: deque[str] = deque(maxlen=log_lines)
        self._step_times: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW)
        self._events_offset = 0
        self.skipped_lines = 0
        self.device: str | None = None
        self.memory: MemoryFacts | None = None
        self._log_offset: int | None = None
        self._log_partial = b""
        self._lock = threading.Lock()  # a poll from a worker thread never overlaps another or a view()

    # ---- reading ---------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Fold in what was appended since the last poll; whether anything the dashboard shows changed."""
        with self._lock:
            events, self._events_offset, skipped = read_event_lines(self.run_dir / EVENTS, self._events_offset)
            self.skipped_lines += skipped
            for event in events:
                self._apply(event)
            new_log = self._read_log()
            status = run_status(self.run_dir, self.last_state)
            changed = bool(events or new_log) or status != self.status
            self.status = status
            return changed

    def _apply(self, event: dict[str, Any]) -> None:
        kind, step = event.get("kind"), int(event.get("step", 0))
        if kind == "status":
            self._apply_status(event, step)
        elif kind == "train":
            for name in TRAIN_METRICS:
                if event.get(name) is not None:
                    self.series[name].add(step, event[name])
            if "t" in event:
                self._step_times.append((step, float(event["t"])))
        elif kind == "eval" and event.get("val_loss") is not None:
            for name in EVAL_METRICS:
                if event.get(name) is not None:
                    self.series[name].add(step, event[name])
            if event.get("val_confusion") and event.get("val_labels"):
                self.confusion = (step, list(event["val_labels"]), event["val_confusion"])
        elif kind == "sample":
            self.samples.append((step, list(event.get("samples", []))))
        elif kind == "error":
            self.error = str(event.get("message", "the trainer failed; see trainer.log"))
        self.step = max(self.step, step)

    def _apply_status(self, event: dict[str, Any], step: int) -> None:
        state = self.last_state = event.get("state")
        if resumed_from(event) is not None:
            for series in self.series.values():
                series.drop_after(step)
            self.samples = [sample for sample in self.samples if sample[0] <= step]
            if self.confusion and self.confusion[0] > step:
                self.confusion = None
            self._step_times.clear()
            self.error = None
            self.step = step
        if state == "running" and event.get("max_steps"):
            self.max_steps = int(event["max_steps"])
        if state == "running" and event.get("device"):
            self.device = event["device"]
        if state == "running" and event.get("mem_estimate") is not None:
            self.memory = MemoryFacts.of(event)

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
        if self.status not in ("running", "starting") or len(self._step_times) < 2:
            return None
        (first_step, first_t), (last_step, last_t) = self._step_times[0], self._step_times[-1]
        if last_step <= first_step:
            return None
        return (last_t - first_t) / (last_step - first_step) * max(0, self.max_steps - self.step)

    def _error(self) -> str | None:
        """The trainer's error; for a crashed run, what its events tell of why (status.crash_message)."""
        if self.status != "crashed" or self.error:
            return self.error
        return crash_message(self.config, self.step, self.memory, self.series["mem_peak"].last())

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
                skipped_lines=self.skipped_lines,
                device=self.device,
                confusion=self.confusion,
                memory=self.memory,
                charted=self.charted,
            )
