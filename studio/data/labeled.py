"""Rows of text and label to a classification dataset: token ids, where each example starts, and its label.

    datasets_dir()/<name>/
        train.bin, val.bin        the examples' token ids end to end (uint16 or uint32)
        train.idx, val.idx        int64: the start of every example in the .bin, then the end
        train.labels, val.labels  int64: each example's label, an index into meta.json's `labels`
        tokenizer.json, meta.json

A row (of any row file studio.data.sources reads: jsonl, json, csv, tsv, parquet, a datasets folder) has the text
(`data.text_field`), optionally a second text read as a pair (`data.text_pair_field`), and the label
(`data.label_field`, a string or a whole number). Rows whose label is missing or null, or whose text is null or
empty, are skipped and counted (refused with `data.strict`). The validation split is `data.val_file`'s
rows when given, else the rows' own `split` field where they have one, else a stratified holdout: the last
val_fraction of each class.

An encoder's text is framed by its tokenizer as `[CLS] text [SEP]` (pairs `[CLS] a [SEP] b [SEP]`), and the
classifier reads [CLS]; a Hugging Face tokenizer adds what its model expects; a studio decoder or recurrent model
reads its state at the text's last token, where it has seen all of it (as Hugging Face's decoder classifiers do,
at the last token that is not padding).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from studio.config import DataConfig
from studio.data.sources import ReadStats, Source, row_text
from studio.errors import StudioError

VALIDATION_SPLITS = ("val", "validation", "dev", "test")


@dataclass
class LabeledRow:
    text: str
    pair: str | None
    label: str | int
    split: str | None  # "train", "val", or None: the holdout decides


@dataclass
class LabeledCounts:
    """What writing the splits counted, for meta.json (studio.data.meta)."""

    examples: dict[str, int] = field(default_factory=dict)  # per split
    tokens: dict[str, int] = field(default_factory=dict)  # per split
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per split, per label as text
    truncated: int = 0  # examples cut to the context


@dataclass
class LabeledRows:
    rows: list[LabeledRow] = field(default_factory=list)
    skipped: int = 0  # rows without a label


def read_labeled_rows(source: Source, data: DataConfig, stats: ReadStats) -> LabeledRows:
    """Every row with a label and text; a row without its text field is an error naming it, one without a label
    is skipped (counted in `skipped`), one whose text is null or empty too (counted in stats.empty_rows)."""
    found = LabeledRows()
    for record, where in source.records(stats, "classification rows"):
        label = record.get(data.label_field)
        if label is None:
            if data.strict:
                raise StudioError(f"{where} has no {data.label_field!r}; label it, or drop --strict to skip it")
            found.skipped += 1
            continue
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise StudioError(f"{where}: the label {label!r} is not a string or a whole number; fix the row")
        text = row_text(record, data.text_field, where, data.strict, stats)
        pair = (
            row_text(record, data.text_pair_field, where, data.strict, stats, "--text-pair-field")
            if data.text_pair_field
            else None
        )
        if text is None or (data.text_pair_field and pair is None):
            continue
        split = record.get("split")
        split = None if split is None else ("val" if str(split).lower() in VALIDATION_SPLITS else "train")
        found.rows.append(LabeledRow(text, pair, label, split))
    return found


def label_names(rows: list[LabeledRow], where: str, at_least: int = 2) -> list[str | int]:
    """The classes, in order (numbers by value, names alphabetically); at least two to train a classifier (held-out
    rows that judge one may hold a single class)."""
    if not rows:
        raise StudioError(
            f"{where}: no row has a label; classification rows need one (name its field with --label-field)"
        )
    names = {row.label for row in rows}
    if all(isinstance(name, int) for name in names):
        ordered: list[str | int] = sorted(names)
    else:  # names; whole numbers written as text (a csv's labels) in their numeric order, "2" before "10"
        texts = {str(name) for name in names}
        numeric = all(text.lstrip("-").isdigit() for text in texts)
        ordered = sorted(texts, key=int) if numeric else sorted(texts)
    if len(ordered) < at_least:
        raise StudioError(
            f"{where} has one class only ({ordered[0]!r}); a classifier needs rows of at least two labels"
        )
    return ordered


def split_rows(rows: list[LabeledRow], labels: list[str | int], val_fraction: float) -> tuple[list, list]:
    """(train, val): the rows' own split fields where any row has one, else the last val_fraction of each class."""
    if any(row.split for row in rows):
        return [row for row in rows if row.split != "val"], [row for row in rows if row.split == "val"]
    by_class: dict[str | int, list[LabeledRow]] = {label: [] for label in labels}
    for row in rows:
        by_class[_key(row.label, labels)].append(row)
    held = set()
    for members in by_class.values():
        count = math.ceil(len(members) * val_fraction) if len(members) > 1 else 0
        held.update(id(row) for row in members[len(members) - count :])
    return [row for row in rows if id(row) not in held], [row for row in rows if id(row) in held]


def _key(label: str | int, labels: list[str | int]) -> str | int:
    return label if isinstance(labels[0], int) else str(label)


def write_labeled(
    folder: Path,
    splits: dict[str, list[LabeledRow]],
    labels: list[str | int],
    tokenizer: Tokenizer,
    framed: bool,
    context: int,
    dtype: str,
) -> LabeledCounts:
    """Encode and write each split, cut to the context; returns what it counted. `framed`: the tokenizer's
    post-processor adds the model's special tokens ([CLS] ... [SEP], a BOS)."""
    index = {label: position for position, label in enumerate(labels)}
    counts = LabeledCounts()
    for split, rows in splits.items():
        offsets, ids_file = [0], open(folder / f"{split}.bin", "wb")
        with ids_file:
            for row in rows:
                ids = encode_labeled(tokenizer, row.text, row.pair, framed)
                if len(ids) > context:
                    ids = ids[:context]
                    counts.truncated += 1
                np.asarray(ids, dtype=dtype).tofile(ids_file)
                offsets.append(offsets[-1] + len(ids))
        np.asarray(offsets, dtype=np.int64).tofile(folder / f"{split}.idx")
        np.asarray([index[_key(row.label, labels)] for row in rows], dtype=np.int64).tofile(folder / f"{split}.labels")
        counts.examples[split] = len(rows)
        counts.tokens[split] = offsets[-1]
        counts.class_counts[split] = dict(Counter(str(_key(row.label, labels)) for row in rows))
    return counts


def encode_labeled(tokenizer: Tokenizer, text: str, pair: str | None, framed: bool) -> list[int]:
    """A text (and pair) as its classifier reads it: framed by the tokenizer's special tokens, or as it is (a
    studio decoder's pair joined by a line break)."""
    if framed:
        return tokenizer.encode(text, pair, add_special_tokens=True).ids
    return tokenizer.encode(text if pair is None else f"{text}\n{pair}", add_special_tokens=False).ids
