"""What preparing a dataset did, from its meta.json: documents kept and dropped, characters, tokens, vocabulary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from textual.widgets import Static

from studio.formatting import counted
from widgets.label_table import label_table

if TYPE_CHECKING:  # the data package imports numpy and tokenizers, which the studio loads only to prepare
    from studio.data.meta import DatasetMeta

DROP_REASONS = {
    "empty": "empty",
    "too_short": "too short",
    "too_long": "too long",
    "duplicate": "duplicates",
    "overlong": "longer than the context",
    "no_answer": "no answer left",
    "no_label": "no label",
    "missing_field": "missing a field",
    "empty_answer": "an empty answer",
    "same_answers": "chosen = rejected",
    "near_duplicate": "near-duplicates",
    "contaminated": "contaminated",
}
SHOWN = 3  # redactions, near-duplicate pairs and contaminated documents shown of those meta.json keeps


class DatasetFacts(Static):
    def show_meta(self, name: str, meta: DatasetMeta | None) -> None:
        """The facts of a prepared dataset; nothing for None."""
        self.update(facts_table(name, meta) if meta else "")


def facts_table(name: str, meta: DatasetMeta) -> Table:
    documents, tokens = meta.documents, meta.tokens
    dropped = (
        ", ".join(f"{DROP_REASONS.get(rule, rule)} {count:,}" for rule, count in documents.dropped.items() if count)
        or "none"
    )
    tokenizer = meta.options["tokenizer"]
    preference_rows = meta.preference_rows()
    what = "rows" if preference_rows else "examples" if meta.examples else "documents"
    rows = [
        ("dataset", name),
        (what, f"{documents.kept:,} kept of {documents.seen:,} seen"),
        ("dropped", dropped),
        ("characters", f"{meta.characters:,}"),
        ("tokens", f"{tokens['train']:,} train · {tokens['val']:,} val"),
        ("held out", meta.held_out()),
        ("vocabulary", f"{meta.vocab_size:,} ({tokenizer})"),
        ("chars/token", f"{meta.chars_per_token:.2f}"),
        ("bytes replaced", f"{meta.bytes_replaced:,}" + (" (not UTF-8)" if meta.bytes_replaced else "")),
    ]
    if meta.labels:  # classification rows
        counts = meta.class_counts
        classes = ", ".join(
            f"{label} {counts['train'].get(str(label), 0):,}/{counts['val'].get(str(label), 0):,}"
            for label in meta.labels
        )
        rows.insert(2, ("classes", f"{classes} (train/val)"))
        rows.extend(("warning", warning) for warning in meta.warnings)
    elif preference_rows:  # a pair's chosen and rejected answers are two examples: rows are what the user counts
        rows.insert(2, ("format", f"{meta.row_format}, {preference_rows['train']:,} train · "
                                  f"{preference_rows['val']:,} val, {meta.truncated:,} truncated"))  # fmt: skip
    elif meta.examples:
        rows.insert(2, ("format", f"{meta.row_format}, {meta.examples['train']:,} train · "
                                  f"{meta.examples['val']:,} val, {meta.truncated:,} truncated"))  # fmt: skip
    rows.extend(cleaning_rows(meta))
    if meta.empty_rows:
        rows.append(("empty rows", f"{meta.empty_rows:,} skipped (null or empty text)"))
    if meta.binary_files_skipped:
        rows.append(("binary skipped", counted(meta.binary_files_skipped, "file")))
    return label_table(rows)


def cleaning_rows(meta: DatasetMeta) -> list[tuple[str, str]]:
    """What redaction, near-dedup and decontamination did: counts, then the first few of each in context."""
    cleaning, rows = meta.cleaning, []
    if cleaning.redacted:
        rows.append(("redacted", ", ".join(f"{kind} {count:,}" for kind, count in cleaning.redacted.items())))
        rows += [("", f"{shown['where']}: {shown['context']}") for shown in cleaning.redactions[:SHOWN]]
    if cleaning.near_duplicates:
        rows.append(("near-duplicates", f"{meta.documents.dropped.get('near_duplicate', 0):,} removed, e.g."))
        rows += [
            ("", f"{pair['removed']} ≈{pair['similarity']} {pair['kept']}") for pair in cleaning.near_duplicates[:SHOWN]
        ]
    if cleaning.contaminated:
        matched = counted(cleaning.contaminating_rows, "evaluation row")
        rows.append(("contaminated", f"{meta.documents.dropped.get('contaminated', 0):,} removed, matching {matched}"))
        rows += [("", f"{match['dropped']} ~ {match['matched']}") for match in cleaning.contaminated[:SHOWN]]
    return rows
