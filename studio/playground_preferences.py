"""The preferences the playground records: two panels answered the same prompt, the user said which answer is
better, and the pair becomes a row of `$LLM_STUDIO_HOME/preferences/playground.jsonl` as TRL writes preference rows
(`{prompt, chosen, rejected}`, conversational when the playground chats), so `--data` and the Data tab take the file
as it is (studio.data.preferences reads it) and a DPO-family run learns from it. Each row also names the run and
checkpoint that wrote each answer (`chosen_model`, `rejected_model`: extra fields, which the reader passes over).

A tie is not written: the DPO family learns only from a strict preference, TRL's rows have no way to say "equal",
and a tie written as a pair would teach whichever answer landed in `chosen`.

Rows are appended, one line per choice, in a single write to a file opened for appending, under an exclusive lock
on it: the line lands whole at the end even when two studios record at once (a rewrite through studio.atomic_write
would lose the other's line), and the look at the file's last byte (a line a crash cut short) never sees another
studio's line half written (it then began a needless blank line). Torch-free: the studio's process records.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    line = json.dumps(preference_row(chosen, rejected), ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        if os.fstat(fd).st_size and _last_byte(path) != b"\n":  # a line cut short by a crash stays a line apart
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1)
