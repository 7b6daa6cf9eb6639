"""What a run's events.jsonl adds up to, in memory that stays flat however long the run: torch-free.

`History` folds events in as the file grows (the resume rule of studio.run_folder.events applied): bounded
series of every metric, the newest samples, a classifier's latest confusion matrix, the newest status, the
trainer's error, its device and memory facts. The runs table (studio.run_folder.status) and the dashboard
(studio.run_folder.watch) both read a run through it.

A million train events are 200 MB of JSON and seconds to parse, so the fold is kept beside the events
(`events.summary.json`, written atomically by whichever reader got far enough past the saved one, the trainer
included when it ends): a reader starts from it and parses only what was appended since. The summary names the
bytes it covers (the file's inode, the offset, the bytes just before it); a file replaced or cut is read again
from the start. It is a cache: losing it costs one full read.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio.atomic_write import write_atomically
from studio.objectives import OBJECTIVES, Metric, scores_line
from studio.run_folder.events import read_event_lines, resumed_from
from studio.run_folder.layout import EVENTS, EVENTS_SUMMARY

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
    "epsilon",  # a private run's privacy spent so far (studio.train.privacy)
    *dict.fromkeys(metric.key for objective in OBJECTIVES.values() for metric in objective.train_charted),
)
# the validation loss, and what each objective charts beside it (a classifier's accuracy and macro-F1)
EVAL_METRICS = ("val_loss", *dict.fromkeys(m.key for o in OBJECTIVES.values() for m in o.eval_metrics if m.chart_label))
TASK_SERIES = "task:"  # eval tasks' scores: a series per task and score, `task:NAME:acc`, made as they come
TASK_HEADLINES = ("acc", "exact_match")  # what a task is judged by at a glance: multiple choice's, generation's
RATE_WINDOW = 10  # train events used to estimate seconds per step (for the ETA)
SERIES_POINTS = 1000  # the most points a series holds: a chart draws a few hundred, a report one polyline
SAMPLES_KEPT = 50  # the newest sample events kept
READ_BYTES = 4 << 20  # events.jsonl is parsed this much at a time
SUMMARY_EVERY_BYTES = 1 << 20  # the summary is written again once this much more has been read
SUMMARY_AT_CHECKPOINT_BYTES = 4 << 20  # the trainer brings the summary up to date at a checkpoint past this
SUMMARY_FORMAT = 2  # 2: the train series the objectives chart (GRPO's reward); a summary of 1 has none, read again
FINGERPRINT_BYTES = 64  # the bytes before the summary's offset it keeps, to know the file it covers


@dataclass
class Series:
    """One metric against the step: parallel lists, steps increasing within the surviving timeline.

    Bounded: past SERIES_POINTS points it keeps the first point, the steps that are multiples of `stride`
    (doubled until the points fit) and the newest point, so a chart of a million steps holds a thousand.
    """

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    stride: int = 1

    def add(self, step: int, value: float) -> None:
        if len(self.steps) > 1 and self.steps[-1] % self.stride:  # kept only for being the newest
            del self.steps[-1], self.values[-1]
        self.steps.append(step)
        self.values.append(value)
        while len(self.steps) > SERIES_POINTS:
            self.stride *= 2
            last = len(self.steps) - 1
            kept = [i for i, s in enumerate(self.steps) if i in (0, last) or s % self.stride == 0]
            self.steps, self.values = [self.steps[i] for i in kept], [self.values[i] for i in kept]

    def drop_after(self, step: int) -> None:
        keep = next((i for i, s in enumerate(self.steps) if s > step), len(self.steps))
        del self.steps[keep:], self.values[keep:]

    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    def copy(self) -> Series:
        return Series(list(self.steps), list(self.values), self.stride)


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


class History:
    """The fold of one run's events.jsonl up to `offset` (see the module's docstring)."""

    def __init__(self) -> None:
        self.offset = 0  # bytes of events.jsonl folded in
        self.skipped_lines = 0  # lines that are not events
        self.series: dict[str, Series] = {name: Series() for name in TRAIN_METRICS + EVAL_METRICS}
        self.samples: list[tuple[int, list[dict[str, str]]]] = []  # (step, [{"prompt", "text"}]), oldest first
        self.confusion: tuple[int, list, list[list[int]]] | None = None  # a classifier's latest (step, labels, matrix)
        self.last_state: str | None = None  # of the newest status event
        self.step = 0
        self.error: str | None = None
        self.step_times: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW)
        self.device: str | None = None  # where the trainer runs ("cpu", "cuda:0"), from its `running` event
        self.memory: MemoryFacts | None = None  # from the `running` event
        self.max_steps: int | None = None  # from the `running` event (a resume may change the config's)

    @classmethod
    def load(cls, run_dir: Path) -> History:
        """The run's history as far as its summary covers it; an empty one without a summary that fits."""
        history = cls()
        try:
            saved = json.loads((run_dir / EVENTS_SUMMARY).read_text(encoding="utf-8"))
            if saved.get("format") == SUMMARY_FORMAT and saved["fingerprint"] == _fingerprint(run_dir, saved["offset"]):
                history._restore(saved)
        except (OSError, ValueError, KeyError, TypeError):  # no summary, or not one this version wrote
            return cls()
        return history

    def read(self, run_dir: Path) -> bool:
        """Fold in the events appended since the last read, a few MB at a time; whether there were any."""
        start = self.offset
        while True:
            events, offset, skipped = read_event_lines(run_dir / EVENTS, self.offset, READ_BYTES)
            if offset == self.offset:
                break
            self.offset, self.skipped_lines = offset, self.skipped_lines + skipped
            for event in events:
                self.apply(event)
        if self.offset - start >= SUMMARY_EVERY_BYTES:
            self.save(run_dir)
        return self.offset > start

    def apply(self, event: dict[str, Any]) -> None:
        kind, step = event.get("kind"), int(event.get("step", 0))
        if kind == "status":
            self._apply_status(event, step)
        elif kind == "train":
            for name in TRAIN_METRICS:
                if event.get(name) is not None:
                    self.series[name].add(step, event[name])
            if "t" in event:
                self.step_times.append((step, float(event["t"])))
        elif kind == "eval":
            for name in EVAL_METRICS:
                if event.get(name) is not None:
                    self.series[name].add(step, event[name])
            for task, scores in (event.get("tasks") or {}).items():
                for score, value in scores.items() if isinstance(scores, dict) else ():
                    if isinstance(value, int | float):
                        self.series.setdefault(f"{TASK_SERIES}{task}:{score}", Series()).add(step, value)
            if event.get("val_confusion") and event.get("val_labels"):
                self.confusion = (step, list(event["val_labels"]), event["val_confusion"])
        elif kind == "sample":
            self.samples = [*self.samples[1 - SAMPLES_KEPT :], (step, list(event.get("samples", [])))]
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
            self.step_times.clear()
            self.error = None
            self.step = step
        if state == "running" and event.get("max_steps"):
            self.max_steps = int(event["max_steps"])
        if state == "running" and event.get("device"):
            self.device = event["device"]
        if state == "running" and event.get("mem_estimate") is not None:
            self.memory = MemoryFacts.of(event)

    # ---- the summary beside the events --------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        """Write the summary (atomically, as every file of the home); a folder that cannot be written keeps its
        old summary (it is a cache)."""
        try:
            write_atomically(run_dir / EVENTS_SUMMARY, json.dumps(self._summary(run_dir)))
        except OSError:
            pass

    def _summary(self, run_dir: Path) -> dict[str, Any]:
        return {
            "format": SUMMARY_FORMAT,
            "offset": self.offset,
            "fingerprint": _fingerprint(run_dir, self.offset),
            "skipped_lines": self.skipped_lines,
            "series": {name: [s.steps, s.values, s.stride] for name, s in self.series.items()},
            "samples": self.samples,
            "confusion": self.confusion,
            "last_state": self.last_state,
            "step": self.step,
            "error": self.error,
            "step_times": list(self.step_times),
            "device": self.device,
            "memory": None if self.memory is None else asdict(self.memory),
            "max_steps": self.max_steps,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.offset, self.skipped_lines = int(saved["offset"]), int(saved["skipped_lines"])
        for name, (steps, values, stride) in saved["series"].items():
            if name in self.series or name.startswith(TASK_SERIES):
                self.series[name] = Series(list(steps), list(values), int(stride))
        self.samples = [(int(step), list(items)) for step, items in saved["samples"]]
        confusion = saved["confusion"]
        self.confusion = None if confusion is None else (int(confusion[0]), confusion[1], confusion[2])
        self.last_state, self.step, self.error = saved["last_state"], int(saved["step"]), saved["error"]
        self.step_times.extend((int(step), float(t)) for step, t in saved["step_times"])
        self.device, self.max_steps = saved["device"], saved["max_steps"]
        self.memory = None if saved["memory"] is None else MemoryFacts(**saved["memory"])


def task_headlines(series: dict[str, Series]) -> list[tuple[str, str, str]]:
    """(series name, task, score) of each eval task's headline score, in the order the tasks came."""
    found = []
    for name in series:
        if name.startswith(TASK_SERIES):
            task, _, score = name.removeprefix(TASK_SERIES).rpartition(":")
            if score in TASK_HEADLINES:
                found.append((name, task, score))
    return found


def run_scores(charted: tuple[Metric, ...], series: dict[str, Series]) -> str:
    """A run's scores in one line, as the runs table, the sweep table and the report show them: its objective's
    charted eval metrics' last values, then each eval task's headline score, last and best."""
    parts = [scores_line(charted, {metric.key: series[metric.key].last() for metric in charted})]
    for name, task, score in task_headlines(series):
        parts.append(f"{task} {score} {series[name].last():.3f} (best {max(series[name].values):.3f})")
    return " · ".join(part for part in parts if part)


def update_summary(run_dir: Path, at_least: int = 0) -> None:
    """Bring the run's summary up to the end of its events when that adds `at_least` bytes to it (the trainer: at
    each checkpoint once a few MB more were written, so a killed run's first reader parses little; and when it
    ends)."""
    history = History.load(run_dir)
    if (run_dir / EVENTS).stat().st_size - history.offset >= max(at_least, 1):
        history.read(run_dir)
        history.save(run_dir)


def _fingerprint(run_dir: Path, offset: int) -> list:
    """What identifies the first `offset` bytes of events.jsonl: its inode and the bytes just before offset."""
    path = run_dir / EVENTS
    with open(path, "rb") as file:
        file.seek(max(0, offset - FINGERPRINT_BYTES))
        tail = file.read(min(offset, FINGERPRINT_BYTES))
    return [os.stat(path).st_ino, tail.decode("latin-1")]
