"""The metrics stream of a run: `events.jsonl`, one JSON object per line, appended and flushed per line.

Written by the trainer (rank 0), read by anything: the CLI, the studio, tests. Readers keep a byte offset and
read only new bytes; a torn last line (the writer is mid-line) is left for the next read. Every event has
`t` (unix time), `kind` (one of KINDS) and `step`; docs/ARCHITECTURE.md lists each kind's fields.

The resume rule, which every reader applies: a resume restarts from a checkpoint at step S, so what the
interrupted attempt logged after S is superseded (its metrics, samples and checkpoints), and its error no
longer stands; status and error events stay in the history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

KINDS = ("train", "eval", "checkpoint", "status", "error", "sample")


class EventWriter:
    """Appends events to a run's events.jsonl; every line is flushed so a crash loses at most one line."""

    def __init__(self, path: Path):
        self._file: TextIO = open(path, "a", encoding="utf-8")

    def write(self, kind: str, step: int, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "kind": kind, "step": step, **fields}
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()
        return event

    def close(self) -> None:
        self._file.close()


def read_new_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events from byte `offset` to the last complete line, and the offset to read from next time."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return [], offset
    complete = data.rfind(b"\n") + 1
    events = []
    for line in data[:complete].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line damaged by a crash mid-write: skip it, keep the rest
    return events, offset + complete


def read_events(path: Path) -> list[dict[str, Any]]:
    return read_new_events(path)[0]


def resumed_from(event: dict[str, Any]) -> int | None:
    """The step S a `resumed` status event restarts from; None for any other event (the module's resume rule)."""
    if event.get("kind") == "status" and event.get("state") == "resumed":
        return int(event.get("step", 0))
    return None


def superseded(event: dict[str, Any], resumed_step: int) -> bool:
    """Whether an earlier event is superseded by a resume from `resumed_step` (the module's resume rule)."""
    return event.get("kind") not in ("status", "error") and event.get("step", 0) > resumed_step


def current_history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the run's surviving timeline: the resume rule applied to a whole file."""
    history: list[dict[str, Any]] = []
    for event in events:
        step = resumed_from(event)
        if step is not None:
            history = [e for e in history if not superseded(e, step)]
        history.append(event)
    return history
