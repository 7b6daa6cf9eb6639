"""A task file's rows, read and checked before any model is loaded. Torch-free.

Two kinds of task, told apart by the first row's fields (every row must then be of that kind):
- **multiple choice**: a context, its choices and the gold one, in the shapes the common benchmarks are published in:
  `{context|question|query|ctx|goal, choices|endings, gold|label|answer|answerKey}`, ARC's
  `{question, choices: {text: [...], label: ["A", ...]}, answerKey: "B"}`, HellaSwag's `{ctx, endings, label: "2"}`,
  MMLU's `{question, choices, answer: 1}`, PIQA's `{goal, sol1, sol2, label}`. The gold is an index (an int, or
  digits), or one of the choices' labels (ARC's), or a letter A, B, ... for the choice at that place;
- **generation**: a prompt and its reference: `{prompt|question|input|instruction, reference|answer|target|output}`.
  A GSM8K reference (`... #### 72`) is its part after `####`, as GSM8K is scored.

Any file the studio reads rows from (jsonl, json, csv, parquet, datasets folders, compressed) is a task file. A row
that cannot be scored (no context, choices missing, a gold out of range, an empty reference) is refused in one line
naming it: a task with rows left out would score a different task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.config import DataConfig
from studio.data.sources import ReadStats, open_source
from studio.errors import StudioError

CONTEXT_FIELDS = ("context", "question", "query", "ctx", "goal")
CHOICE_FIELDS = ("choices", "endings")
NUMBERED_CHOICES = ("sol1", "sol2", "sol3", "sol4")  # PIQA's
GOLD_FIELDS = ("gold", "label", "answer", "answerKey")
PROMPT_FIELDS = ("prompt", "question", "input", "instruction")
REFERENCE_FIELDS = ("reference", "answer", "target", "output")
GSM8K_MARK = "####"


@dataclass(frozen=True)
class ChoiceRow:
    context: str
    choices: tuple[str, ...]
    gold: int
    where: str  # the file and line, for messages and per-row predictions


@dataclass(frozen=True)
class GenerationRow:
    prompt: str
    reference: str
    where: str


@dataclass(frozen=True)
class Task:
    name: str  # the file's stem
    kind: str  # "multiple_choice" or "generation"
    rows: tuple[ChoiceRow, ...] | tuple[GenerationRow, ...]


def read_task(file: str) -> Task:
    """Every row of the task file, of one kind; one line naming the first row that cannot be scored."""
    records = list(open_source(file, DataConfig(strict=True)).records(ReadStats(), "task rows"))
    if not records:
        raise StudioError(f"{file}: no rows; a task file holds one row per question")
    read = choice_row if _is_choice(records[0][0]) else generation_row
    rows = tuple(read(record, where) for record, where in records)
    kind = "multiple_choice" if isinstance(rows[0], ChoiceRow) else "generation"
    return Task(Path(file).name.split(".")[0], kind, rows)


def _is_choice(record: dict) -> bool:
    return any(name in record for name in (*CHOICE_FIELDS, NUMBERED_CHOICES[0]))


def _first(record: dict, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if record.get(name) not in (None, "")), None)


def choice_row(record: dict, where: str) -> ChoiceRow:
    context_field = _first(record, CONTEXT_FIELDS)
    if context_field is None or not str(record[context_field]).strip():
        raise StudioError(f"{where}: an empty context; give each row one of {', '.join(CONTEXT_FIELDS)}")
    choices, labels = _choices(record, where)
    return ChoiceRow(str(record[context_field]), choices, _gold(record, choices, labels, where), where)


def _choices(record: dict, where: str) -> tuple[tuple[str, ...], list[str]]:
    """The choices' texts, and their labels when the row names them (ARC's A, B, ...)."""
    field = _first(record, CHOICE_FIELDS)
    value = record.get(field) if field else [record[name] for name in NUMBERED_CHOICES if name in record]
    labels: list[str] = []
    if isinstance(value, dict):  # ARC: {"text": [...], "label": [...]}
        labels = [str(label) for label in value.get("label") or []]
        value = value.get("text")
    if not isinstance(value, list) or len(value) < 2 or any(not str(choice).strip() for choice in value):
        raise StudioError(f"{where}: choices missing; give a list of two or more non-empty texts in `choices`")
    return tuple(str(choice) for choice in value), labels


def _gold(record: dict, choices: tuple[str, ...], labels: list[str], where: str) -> int:
    """The gold choice's index: an index, one of the row's labels, or a letter for the choice at that place."""
    field = _first(record, GOLD_FIELDS)
    value = record.get(field) if field else None
    text = str(value).strip() if value is not None else ""
    if text in labels:
        index = labels.index(text)
    elif text.lstrip("-").isdigit():
        index = int(text)
    elif len(text) == 1 and text.isalpha():
        index = ord(text.upper()) - ord("A")
    else:
        raise StudioError(f"{where}: no gold answer; give `gold` as the right choice's index (0 first)")
    if not 0 <= index < len(choices):
        raise StudioError(f"{where}: gold index {text} is out of range for {len(choices)} choices")
    return index


def generation_row(record: dict, where: str) -> GenerationRow:
    prompt_field, reference_field = _first(record, PROMPT_FIELDS), _first(record, REFERENCE_FIELDS)
    if prompt_field is None or not str(record[prompt_field]).strip():
        raise StudioError(f"{where}: an empty prompt; give each row one of {', '.join(PROMPT_FIELDS)} (or choices)")
    if reference_field is None:
        raise StudioError(f"{where}: no reference; give each row one of {', '.join(REFERENCE_FIELDS)}")
    reference = str(record[reference_field])
    if GSM8K_MARK in reference:
        reference = reference.split(GSM8K_MARK)[-1]
    if not reference.strip():
        raise StudioError(f"{where}: an empty reference")
    return GenerationRow(str(record[prompt_field]), reference.strip(), where)
