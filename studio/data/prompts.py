"""Prompt rows for GRPO, to a prompts dataset: each row's prompt rendered for the model to answer, and its fields.

    datasets_dir()/<name>/
        train.bin, val.bin            every prompt's ids (rendered with the chat template's generation prompt)
        train.idx, val.idx            int64: the start of every prompt, then the end
        train.mask, val.mask          one byte per token, all 0 (nothing of a prompt is learned; examples' layout)
        train.rows, val.rows          one JSON object per line: the row as read (its extra fields, e.g. `answer`,
                                      are what the reward functions check)
        tokenizer.json, meta.json     as chat examples (studio.data.examples); `row_format` "prompts"

A row is `{prompt, ...}`: the prompt a string (a user's turn) or a list of `{role, content}` messages. Rows
without a prompt, or whose prompt leaves no room in the context for an answer, are skipped and counted, or
refused with data.strict. The last val_fraction of the rows is the validation split.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from studio.config import DataConfig
from studio.data.chat import ChatTemplate
from studio.data.examples import split_examples
from studio.data.meta import DocumentCounts, RowsWritten
from studio.data.preferences import is_preference_row, messages
from studio.data.sources import ReadStats, Source
from studio.errors import StudioError

PROMPTS = "prompts"  # a prompts dataset's row_format
SKIPPED = {"missing_field": "without a prompt", "overlong": "whose prompt fills the context"}


def write_prompts(
    folder: Path, source: Source, data: DataConfig, tokenizer: Tokenizer, template: ChatTemplate, context: int,
    dtype: str, stats: ReadStats,
) -> RowsWritten:  # fmt: skip
    """Encode every row and write the train and val splits into folder; returns what meta.json counts of them."""
    skipped, seen, characters = Counter(), 0, 0
    offsets, rows = [0], []
    with open(folder / "all.bin", "wb") as ids_file:
        for record, where in source.records(stats, "prompt rows"):
            seen += 1
            why = None if isinstance(record, dict) and record.get("prompt") else "missing_field"
            if why is None:
                text = template.render(messages(record["prompt"], "user", where), add_generation_prompt=True)
                ids = tokenizer.encode(text, add_special_tokens=False).ids
                why = "overlong" if len(ids) >= context else None
            if why is not None:
                if data.strict:
                    raise StudioError(f"{where}: a row {SKIPPED[why]}; fix it, or drop --strict to skip such rows")
                skipped[why] += 1
                continue
            characters += len(text)
            np.asarray(ids, dtype=dtype).tofile(ids_file)
            offsets.append(offsets[-1] + len(ids))
            rows.append(json.dumps(record, ensure_ascii=False, default=str))
    if len(rows) < 2:
        raise StudioError(f"{len(rows)} usable prompt row(s) in {source.location} of {seen}; rows are {{prompt, ...}}, "
                          "and a dataset needs at least 2")  # fmt: skip
    np.zeros(offsets[-1], dtype=np.uint8).tofile(folder / "all.mask")
    split_at = len(rows) - max(1, round(len(rows) * data.val_fraction))
    all_offsets = np.asarray(offsets, dtype=np.int64)
    split_examples(folder, all_offsets, split_at, np.dtype(dtype).itemsize)
    (folder / "train.rows").write_text("".join(row + "\n" for row in rows[:split_at]), encoding="utf-8")
    (folder / "val.rows").write_text("".join(row + "\n" for row in rows[split_at:]), encoding="utf-8")
    examples = {"train": split_at, "val": len(rows) - split_at}
    tokens = {"train": int(all_offsets[split_at]), "val": int(all_offsets[-1] - all_offsets[split_at])}
    return RowsWritten(PROMPTS, DocumentCounts(seen, len(rows), dict(skipped)), characters, examples, tokens)


def holds_prompts(source: Source) -> bool:
    """Whether the source's first row is a prompt row: a prompt, and no answers to rank (a preference row's)."""
    record = source.first_row()
    return isinstance(record, dict) and "prompt" in record and not is_preference_row(record)


def read_rows(path: Path) -> list[dict]:
    """A split's rows (`<split>.rows`), as the reward functions get them."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
