"""The preferences the playground records: two panels answered the same prompt, the user said which answer is
better, and the pair becomes a row of `$LLM_STUDIO_HOME/preferences/playground.jsonl` as TRL writes preference rows
(`{prompt, chosen, rejected}`, conversational when the playground chats), so `--data` and the Data tab take the file
as it is (studio.data.preferences reads it) and a DPO-family run learns from it. Each row also names the run and
checkpoint that wrote each answer (`chosen_model`, `rejected_model`: extra fields, which the reader passes over).

A tie is not written: the DPO family learns only from a strict preference, TRL's rows have no way to say "equal",
and a tie written as a pair would teach whichever answer landed in `chosen`.

Rows are appended, one line per choice, by studio.atomic_write's `append_line` (one write under an exclusive lock:
the line lands whole even when two studios record at once). Torch-free: the studio's process records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.atomic_write import append_line
from studio.errors import StudioError
from studio.paths import studio_home

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Answer:
    """One panel's finished answer: what it was asked, what it said, and which checkpoint said it."""

    prompt: str | Messages  # a completion's prompt, or (chat) the conversation up to the user's turn
    text: str
    run: str
    checkpoint: int | str  # a step, or "latest"


def preferences_file() -> Path:
    return studio_home() / "preferences" / "playground.jsonl"


def preference_row(chosen: Answer, rejected: Answer) -> dict[str, Any]:
    """The TRL row of a choice: a chat's answers as assistant turns, a completion's as text."""
    if chosen.prompt != rejected.prompt:
        raise StudioError("the two panels answered different prompts; ask both the same one (n starts a new chat)")

    def answer(text: str) -> str | Messages:
        return [{"role": "assistant", "content": text}] if isinstance(chosen.prompt, list) else text

    return {
        "prompt": chosen.prompt,
        "chosen": answer(chosen.text),
        "rejected": answer(rejected.text),
        "chosen_model": {"run": chosen.run, "checkpoint": chosen.checkpoint},
        "rejected_model": {"run": rejected.run, "checkpoint": rejected.checkpoint},
    }


def record_preference(chosen: Answer, rejected: Answer, path: Path | None = None) -> Path:
    """Append the choice's row to the preference file (preferences_file() unless given); returns the file."""
    path = path or preferences_file()
    append_line(path, json.dumps(preference_row(chosen, rejected), ensure_ascii=False))
    return path
