"""Evaluation rows kept out of training (`data.decontaminate`): a training document or row that shares a run of
`data.decontaminate_ngram` words (13 by default, as GPT-3's and the Llama papers' checks do) with a row of the
evaluation files is dropped, and the row it matched named.

An evaluation file is a task file (studio.tasks.rows), or any rows or text the studio reads: a row's text is all
its strings, a text file one document. Words are runs of letters and digits, lowercased, so spacing, punctuation
and case do not hide a match. The evaluation side is held in memory (each n-gram's hash and the row it came from:
evaluation sets are small); the training side streams through, a document's last n-1 words carried from one piece
to the next.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from studio.config import DataConfig
from studio.data.sources import ReadStats, Source, open_source
from studio.errors import StudioError

WORD = re.compile(r"\w+")


def row_strings(value, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every string in a row (nested messages included), except those under the keys in `skip`."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in skip:
                yield from row_strings(item, skip)
    elif isinstance(value, list):
        for item in value:
            yield from row_strings(item, skip)


def evaluation_source(file: str) -> Source:
    """An evaluation file of data.decontaminate, or one line saying it is not there."""
    path = Path(file).expanduser()
    if not path.exists():
        raise StudioError(
            f"data.decontaminate: no such file {file}; give evaluation files (task files, .jsonl rows or text)"
        )
    return open_source(str(path), DataConfig())


class EvaluationNgrams:
    """The n-grams of the evaluation files' rows, each with the first row it came from."""

    def __init__(self, files: list[str], size: int) -> None:
        self.size = size
        self.rows: list[str] = []  # each evaluation row's name: `file row N`
        self.ngrams: dict[int, int] = {}  # an n-gram's hash -> the index of its first row
        for file in files:
            self._read(file)

    def _read(self, file: str) -> None:
        source, path = evaluation_source(file), Path(file)
        if any(found.has_rows for found in source.files):
            for number, (record, _) in enumerate(source.records(ReadStats(), "evaluation rows"), 1):
                self._add(f"{path.name} row {number}", "\n".join(row_strings(record)))
        else:
            for number, chunks in enumerate(source.documents(ReadStats()), 1):
                self._add(f"{path.name} document {number}", "".join(chunks))

    def _add(self, name: str, text: str) -> None:
        words = WORD.findall(text.lower())
        index = len(self.rows)
        self.rows.append(name)
        for start in range(len(words) - self.size + 1):
            self.ngrams.setdefault(hash(tuple(words[start : start + self.size])), index)


class Matcher:
    """One training document's words as it streams in pieces; `match` is the first evaluation row it shares an
    n-gram with, or None."""

    def __init__(self, evaluation: EvaluationNgrams) -> None:
        self.evaluation = evaluation
        self.carried: list[str] = []
        self.match: str | None = None

    def feed(self, text: str) -> None:
        if self.match is not None:
            return
        size, ngrams = self.evaluation.size, self.evaluation.ngrams
        words = self.carried + WORD.findall(text.lower())
        for start in range(len(words) - size + 1):
            row = ngrams.get(hash(tuple(words[start : start + size])))
            if row is not None:
                self.match = self.evaluation.rows[row]
                return
        self.carried = words[-(size - 1) :] if size > 1 else []
