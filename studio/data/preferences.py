"""Preference rows, as TRL writes them, to a preference dataset: every answer an example whose prompt is not learned.

    datasets_dir()/<name>/
        train.bin, val.bin            every answer's example (prompt + answer, rendered) end to end
        train.mask, val.mask          one byte per token: 1 on the answer's tokens, the only ones log-probabilities sum
        train.idx, val.idx            int64: the start of every example, then the end
        train.desirable, val.desirable  unpaired rows only: one byte per example, 1 when its label is true
        tokenizer.json, meta.json     as chat examples (studio.data.examples); `row_format` "pairs" or "unpaired"

Paired rows `{prompt, chosen, rejected}` write two examples each, the chosen answer's then the rejected one's;
unpaired (KTO) rows `{prompt, completion, label}` one. Each field is a string or a list of `{role, content}`
messages (conversational); without `prompt`, the prompt is what chosen and rejected share at their start (TRL's
implicit prompt). A string prompt is a user's turn and a string answer the assistant's. Prompt and answer are
rendered with the model's chat template like SFT rows: the prompt's rendering (with the generation prompt) must be
the start of the rendering of prompt and answer together, else the row is refused naming it; prompt text and
answer text are tokenized apart (as TRL does), so the answer's tokens are exactly the learned ones. Rows the
objectives cannot learn from (a field missing, an empty answer, chosen equal to rejected) are skipped and counted,
or refused with data.strict. The last val_fraction of the rows is the validation split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from studio.config import DataConfig
from studio.data.chat import ChatTemplate
from studio.data.examples import split_examples
from studio.data.meta import ANSWERS_PER_ROW, DocumentCounts, RowsWritten
from studio.data.sources import ReadStats, Source
from studio.errors import StudioError

PAIRS, UNPAIRED = "pairs", "unpaired"  # a preference dataset's row_format
PREFERENCE_FORMATS = (PAIRS, UNPAIRED)
SKIPPED = {  # why a row was skipped: its count's key in meta.json, and its words
    "missing_field": "without its fields (prompt, chosen, rejected; or prompt, completion, label)",
    "empty_answer": "with an empty answer",
    "same_answers": "with chosen equal to rejected",
    "overlong": "whose prompt fills the context",
}

Messages = list[dict[str, str]]


@dataclass
class PreferenceRow:
    """A row as messages: its prompt and its answers (chosen and rejected; or one completion and its label)."""

    prompt: Messages
    answers: list[Messages]
    desirable: bool | None = None  # unpaired rows: the label


@dataclass
class PreferenceCounts:
    seen: int = 0
    kept: int = 0
    truncated: int = 0
    characters: int = 0
    skipped: Counter = field(default_factory=Counter)


def holds_preferences(source: Source) -> bool:
    """Whether the source's first row is a preference row."""
    return is_preference_row(source.first_row())


def is_preference_row(record: Any) -> bool:
    """A row with answers to rank: chosen and rejected, or completion and label."""
    fields = set(record) if isinstance(record, dict) else set()
    return {"chosen", "rejected"} <= fields or {"completion", "label"} <= fields


def row_shape(record: dict) -> str:
    """pairs ({chosen, rejected}) or unpaired ({completion, label}), by the fields the row has."""
    return UNPAIRED if "completion" in record and "label" in record else PAIRS


def read_row(record: dict, shape: str, where: str) -> PreferenceRow | str:
    """The row as messages, or why it is skipped (a key of SKIPPED)."""
    fields = ("chosen", "rejected") if shape == PAIRS else ("completion", "label")
    if any(record.get(name) is None for name in fields):
        return "missing_field"
    if shape == UNPAIRED:
        if not isinstance(record["label"], bool):
            raise StudioError(f"{where}: label is {record['label']!r}, not true or false; fix the row")
        prompt, answers = record.get("prompt"), [record["completion"]]
    else:
        prompt, answers = record.get("prompt"), [record["chosen"], record["rejected"]]
        if prompt is None:
            prompt, answers = implicit_prompt(answers[0], answers[1], where)
    if prompt is None:
        return "missing_field"
    answer_messages = [messages(answer, "assistant", where) for answer in answers]
    if any(not "".join(message["content"] for message in answer).strip() for answer in answer_messages):
        return "empty_answer"
    if shape == PAIRS and answer_messages[0] == answer_messages[1]:
        return "same_answers"
    desirable = record["label"] if shape == UNPAIRED else None
    return PreferenceRow(messages(prompt, "user", where), answer_messages, desirable)


def implicit_prompt(chosen: Any, rejected: Any, where: str) -> tuple[Any, list[Any]]:
    """TRL's implicit prompt: what chosen and rejected share at their start (messages, or characters; a shared
    space before the first difference stays with the answers), and the answers after it. A string and a message
    list share nothing, so such a row is refused rather than read as one without a prompt."""
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise StudioError(
            f"{where}: chosen and rejected are one a string, one a message list; without a prompt field both must "
            "be of one kind (their shared start is the prompt); fix the row, or give its prompt"
        )
    at = 0
    while at < min(len(chosen), len(rejected)) and chosen[at] == rejected[at]:
        at += 1
    if isinstance(chosen, str) and at and chosen[at - 1] == " ":
        at -= 1
    return chosen[:at], [chosen[at:], rejected[at:]]


def messages(value: Any, role: str, where: str) -> Messages:
    """A string as one turn of `role`, or a list of {role, content} messages as they are."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise StudioError(f"{where}: a prompt or answer is a string or a list of {{role, content}} messages; fix the row")


@dataclass
class PreferenceEncoder:
    """Rows to examples with the model's tokenizer and chat template, cut to context + 1 tokens."""

    tokenizer: Tokenizer
    template: ChatTemplate
    context: int

    def encode(self, prompt: Messages, answer: Messages, where: str) -> tuple[list[int], list[int], int]:
        """An answer's example: prompt and answer ids, a mask of 1 on the answer's, and its rendered length."""
        try:
            prompt_text = self.template.render(prompt, add_generation_prompt=True)
            whole = self.template.render(prompt + answer)
        except StudioError as error:
            raise StudioError(f"{where}: {error}") from None
        if not whole.startswith(prompt_text):
            raise StudioError(
                f"{where}: the chat template's rendering of the prompt is not the start of the rendering of prompt "
                "and answer, so the answer's tokens cannot be told apart; fix the row's roles or the template"
            )
        prompt_ids = self.tokenizer.encode(prompt_text, add_special_tokens=False).ids
        answer_ids = self.tokenizer.encode(whole[len(prompt_text) :], add_special_tokens=False).ids
        return prompt_ids + answer_ids, [0] * len(prompt_ids) + [1] * len(answer_ids), len(whole)


def preference_examples(
    source: Source, data: DataConfig, encoder: PreferenceEncoder, stats: ReadStats, counts: PreferenceCounts
) -> Iterator[tuple[list[tuple[list[int], list[int]]], bool | None]]:
    """Each usable row's examples (ids and mask of each answer) and its label (unpaired rows); skipped rows are
    counted, or refused with data.strict."""
    limit = encoder.context + 1
    for record, where in source.records(stats, "preference rows"):
        counts.seen += 1
        row = read_row(record, row_shape(record), where)
        examples = [] if isinstance(row, str) else [encoder.encode(row.prompt, a, where) for a in row.answers]
        overlong = any(len(ids) > limit for ids, _, _ in examples)
        if not isinstance(row, str) and (
            any(not any(mask[1:limit]) for _, mask, _ in examples) or (overlong and data.overlong == "drop")
        ):
            row = "overlong"
        if isinstance(row, str):
            if data.strict:
                raise StudioError(f"{where}: a row {SKIPPED[row]}; fix it, or drop --strict to skip such rows")
            counts.skipped[row] += 1
            continue
        counts.kept += 1
        counts.truncated += overlong
        counts.characters += sum(characters for _, _, characters in examples)
        yield [(ids[:limit], mask[:limit]) for ids, mask, _ in examples], row.desirable


def write_preferences(
    folder: Path, source: Source, data: DataConfig, encoder: PreferenceEncoder, dtype: str, stats: ReadStats
) -> RowsWritten:
    """Encode every row and write the train and val splits into folder; returns what meta.json counts of them (the
    row format among them: pairs or unpaired, by the rows' fields)."""
    counts = PreferenceCounts()
    offsets, desirable, shapes = [0], [], set()
    with open(folder / "all.bin", "wb") as ids_file, open(folder / "all.mask", "wb") as mask_file:
        for examples, label in preference_examples(source, data, encoder, stats, counts):
            shapes.add(PAIRS if label is None else UNPAIRED)
            desirable.append(label)
            for ids, mask in examples:
                np.asarray(ids, dtype=dtype).tofile(ids_file)
                np.asarray(mask, dtype=np.uint8).tofile(mask_file)
                offsets.append(offsets[-1] + len(ids))
    if len(shapes) > 1:
        raise StudioError(f"{source.location} mixes paired rows (chosen, rejected) and unpaired ones (completion, "
                          "label); give one kind per dataset")  # fmt: skip
    if counts.kept < 2:
        skipped = ", ".join(f"{n} {SKIPPED[why]}" for why, n in counts.skipped.items())
        raise StudioError(
            f"{counts.kept} usable preference row(s) in {source.location} of {counts.seen}"
            + (f" (skipped: {skipped})" if skipped else "")
            + "; rows are {prompt, chosen, rejected} or {prompt, completion, label}, and a dataset needs at least 2"
        )
    row_format = shapes.pop()
    per_row = ANSWERS_PER_ROW[row_format]
    val_rows = max(1, round(counts.kept * data.val_fraction))
    split_at = (counts.kept - val_rows) * per_row
    all_offsets = np.asarray(offsets, dtype=np.int64)
    split_examples(folder, all_offsets, split_at, np.dtype(dtype).itemsize)
    if row_format == UNPAIRED:
        labels = np.asarray(desirable, dtype=np.uint8)
        labels[:split_at].tofile(folder / "train.desirable")
        labels[split_at:].tofile(folder / "val.desirable")
    examples = {"train": split_at, "val": len(offsets) - 1 - split_at}
    tokens = {"train": int(all_offsets[split_at]), "val": int(all_offsets[-1] - all_offsets[split_at])}
    documents = DocumentCounts(counts.seen, counts.kept, dict(counts.skipped))
    return RowsWritten(row_format, documents, counts.characters, examples, tokens, counts.truncated)
