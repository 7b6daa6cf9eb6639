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

from studio.objectives import OBJECTIVES, PREFERENCE_METRICS, objective_of_eval

KINDS = ("train", "eval", "checkpoint", "status", "error", "sample", "note")
NUMBER = (int, float)
FIELD_TYPES = {  # every field an event may carry, and its type; a field of another type is dropped when read
    "t": NUMBER, "state": str, "max_steps": int, "world_size": int, "device": str, "params": int,
    "trainable_params": int, "mem_estimate": int, "mem_measure": str, "mem_baseline": int,
    "checkpoint": str, "tokens_seen": int, "train_seconds": NUMBER,
    "loss": NUMBER, "ce_loss": NUMBER, "kd_loss": NUMBER,
    "lr": NUMBER, "grad_norm": NUMBER, "tokens_per_s": NUMBER, "mfu": NUMBER,
    "mem_allocated": int, "mem_reserved": int, "mem_peak": int,
    "val_loss": NUMBER, "val_ppl": NUMBER, "val_acc": NUMBER,
    "val_precision": NUMBER, "val_recall": NUMBER, "val_f1": NUMBER, "val_f1_per_class": list, "val_confusion": list,
    "val_labels": list,
    "samples": list, "path": str, "message": str,
    "tasks": dict, "tasks_s": NUMBER,  # eval tasks: {task: {acc: ..., acc_norm: ...}}, and the seconds they took
    # GRPO's train fields (studio.train.objectives.grpo): the rewards, per function too, and where the time went
    "reward": NUMBER, "reward_std": NUMBER, "rewards": dict, "completion_len": NUMBER, "kl": NUMBER,
    "clip_fraction": NUMBER, "generation_s": NUMBER, "update_s": NUMBER, "val_rewards": dict,
    # differentially private training (studio.train.privacy): ε spent so far (train), the run's DP facts (status)
    "epsilon": NUMBER, "noise_multiplier": NUMBER, "sample_rate": NUMBER, "delta": NUMBER, "max_grad_norm": NUMBER,
    # every objective's eval figures, as its spec lists them (the preference objectives' pair accuracy, margin, ...)
    **{metric.key: NUMBER for objective in OBJECTIVES.values() for metric in objective.eval_metrics},
    # a preference run's train events: its eval figures over the steps since the last (reward_chosen, margin, ...)
    **{metric.key.removeprefix("val_"): NUMBER for metric in PREFERENCE_METRICS},
}  # fmt: skip


class EventWriter:
    """Appends events to a run's events.jsonl; every line is flushed so a crash loses at most one line. With
    `echo` (the trainer's stderr, which is trainer.log), each event is also written there as the line people read."""

    def __init__(self, path: Path, echo: TextIO | None = None):
        self._file: TextIO = open(path, "a+", encoding="utf-8")
        self._echo = echo
        if self._file.tell() and not _ends_with_newline(path):  # a writer killed mid-line: start a new one
            self._file.write("\n")

    def write(self, kind: str, step: int, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "kind": kind, "step": step, **fields}
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()
        line = format_event(event) if self._echo is not None else None
        if line is not None:
            print(line, file=self._echo, flush=True)
        return event

    def close(self) -> None:
        self._file.close()


def format_event(event: dict) -> str | None:
    """One line for an event as read (studio.run_folder.events: any field may be missing, none is mistyped)."""
    kind, step = event.get("kind"), event.get("step")

    def number(name: str, spec: str, scale: float = 1.0) -> str:
        return "-" if event.get(name) is None else format(scale * event[name], spec)

    if kind == "train":
        norm = f" grad_norm {number('grad_norm', '.3f')}" if event.get("grad_norm") is not None else ""
        mfu = f" mfu {number('mfu', '.1f', 100)}%" if event.get("mfu") is not None else ""
        reward = ""
        if event.get("reward") is not None:  # GRPO: the reward, and generation's seconds beside the update's
            reward = (f"  reward {number('reward', '.3f')} ± {number('reward_std', '.3f')}  "
                      f"gen {number('generation_s', '.1f')}s update {number('update_s', '.1f')}s")  # fmt: skip
        spent = f"  ε {number('epsilon', '.3g')}" if event.get("epsilon") is not None else ""  # a private run's
        return (
            f"step {step:>6}  loss {number('loss', '.4f')}  lr {number('lr', '.2e')}{norm}  "
            f"{number('tokens_per_s', ',.0f')} tok/s{mfu}{reward}{spent}"
        )
    if kind == "eval":
        metrics = [metric.format(event) for metric in objective_of_eval(event).eval_metrics if metric.key in event]
        return f"step {step:>6}  " + "  ".join(metrics + task_scores_text(event.get("tasks") or {}))
    if kind == "sample":
        first = event["samples"][0] if event.get("samples") else None
        return f"step {step:>6}  sample {first['prompt'] + first['text']!r}"[:160] if first else None
    if kind == "error":
        return f"step {step:>6}  error: {event.get('message', '(no message)')}"
    if kind == "note":
        return f"step {step:>6}  note: {event.get('message', '(no message)')}"
    if kind == "status":
        return f"step {step:>6}  {event.get('state', '(no state)')}"
    if kind == "checkpoint":
        return f"step {step:>6}  checkpoint {event.get('path', '')}"
    return None


def task_scores_text(tasks: dict[str, dict]) -> list[str]:
    """Each eval task's scores as the eval line shows them ("meals acc 0.917 acc_norm 0.833")."""
    return [
        " ".join([name, *(f"{score} {value:.3f}" for score, value in scores.items() if isinstance(value, int | float))])
        for name, scores in tasks.items()
        if isinstance(scores, dict)
    ]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, 2)
        return file.read(1) == b"\n"


def read_event_lines(path: Path, offset: int = 0, limit: int = -1) -> tuple[list[dict[str, Any]], int, int]:
    """Events from byte `offset` to the last complete line, the offset to read from next time, and how many
    complete lines were skipped for not being events (damaged by a crash, or written by something else).
    With a `limit`, about that many bytes are read (at least one whole line): call again for the rest."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read(limit)
            if limit >= 0 and len(data) == limit and b"\n" not in data:  # one line longer than the limit
                data += file.readline()
    except (FileNotFoundError, IsADirectoryError):
        return [], offset, 0
    complete = data.rfind(b"\n") + 1
    events, skipped = [], 0
    for line in data[:complete].split(b"\n"):
        event = parse_event(line)
        if event is None:
            skipped += bool(line.strip())
        else:
            events.append(event)
    return events, offset + complete, skipped


def parse_event(line: bytes) -> dict[str, Any] | None:
    """The event on one line: a JSON object with a known kind and a whole step, its fields of the wrong type
    dropped (so a reader may trust what is there); None for anything else."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(raw, dict) and raw.get("kind") in KINDS and _is(raw.get("step"), int) and raw["step"] >= 0):
        return None
    event = {"kind": raw["kind"], "step": raw["step"]}
    event.update((key, value) for key, value in raw.items() if key in FIELD_TYPES and _is(value, FIELD_TYPES[key]))
    if "samples" in event:
        event["samples"] = [item for item in event["samples"] if _is_sample(item)]
    return event


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _is_sample(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("text"), str)


def read_new_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """read_event_lines without the count of skipped lines."""
    events, offset, _ = read_event_lines(path, offset)
    return events, offset


def read_events(path: Path) -> list[dict[str, Any]]:
    return read_new_events(path)[0]


def resumed_from(event: dict[str, Any]) -> int | None:
    """The step S a `resumed` status event restarts from; None for any other event (the module's resume rule)."""
    if event.get("kind") == "status" and event.get("state") == "resumed":
        return event["step"]
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
