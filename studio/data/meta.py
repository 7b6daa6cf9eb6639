"""A prepared dataset's `meta.json` as one typed object, `DatasetMeta`: what the dataset was prepared from and
with, what preparing counted, and the facts that batches, training, generation and export read.

`studio.data.prepare` builds it (`_dataset_meta`, the one place) and saves it last, when every other file is
written; everything else loads it and reads attributes. Torch- and numpy-free: the studio shows it.

Datasets have one of three layouts, each with its own files and fields beside the common ones: plain text
(`text`), classification rows (`labeled`, studio.data.labeled) and chat or instruction examples (`examples`,
studio.data.examples). A field of one layout is absent from the others' meta.json and reads as its default there;
`special_ids` (an encoder's tokens) is written only when set. Keys this version does not know are ignored.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

from studio.atomic_write import write_atomically

TEXT, LABELED, EXAMPLES = "text", "labeled", "examples"
ANSWERS_PER_ROW = {"pairs": 2, "unpaired": 1}  # a preference dataset's row_format -> examples per row


def _only_in(*layouts: str, **default: Any) -> Any:
    """A field that only datasets of these layouts have: left out of the others' meta.json, read as its default."""
    return field(metadata={"layouts": layouts}, **default)


@dataclass
class DocumentCounts:
    """The source's documents (rows, for row formats): seen, kept, and those dropped, counted by rule."""

    seen: int
    kept: int
    # empty, too_short, too_long, duplicate (text); duplicate, overlong, no_answer (examples); no_label (labeled);
    # missing_field, empty_answer, same_answers, overlong (preference rows); near_duplicate, contaminated (any)
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class CleaningFacts:
    """What the privacy and contamination rules did (data.redact, data.near_dedup, data.decontaminate); what they
    dropped is counted in `documents.dropped` (near_duplicate, contaminated)."""

    redacted: dict[str, int] = field(default_factory=dict)  # placeholders put in, per kind (email, phone ...)
    redactions: list[dict[str, str]] = field(default_factory=list)  # the first ones: kind, where, context
    near_duplicates: list[dict[str, str]] = field(default_factory=list)  # sample pairs: kept, removed, similarity
    contaminated: list[dict[str, str]] = field(default_factory=list)  # the first drops: dropped, matched (a row)
    contaminating_rows: int = 0  # evaluation rows that matched at least one training document


@dataclass
class RowsWritten:
    """What writing rendered rows gave (chat or instruction examples, preference rows, prompt rows): the counts
    and facts meta.json records of them."""

    row_format: str
    documents: DocumentCounts  # rows seen, kept, and skipped by reason
    characters: int  # of the rendered text
    examples: dict[str, int]  # per split
    tokens: dict[str, int]  # per split
    truncated: int = 0
    stop_ids: set[int] = field(default_factory=set)  # end-of-turn tokens besides the model's eos that end an answer


@dataclass
class ChatTokens:
    """The text a chat template writes as bos_token and eos_token."""

    bos: str = ""
    eos: str = ""


@dataclass
class DatasetMeta:
    # what the dataset is: its name, what it was prepared from, and the cache key that finds it again
    name: str
    source: str  # the source as given: a path, a hub dataset's name (ORG/NAME), or a built-in corpus's name
    kind: str  # the source's kind (studio.data.sources): builtin, text, rows, folder, datasets ...
    format: int  # the preparing code's version (prepare.FORMAT)
    key: str  # the cache key: a hash of the format, the content hash and the options
    content_hash: str  # the source files' fingerprint
    options: dict[str, Any]  # the data options that shape the result, as they joined the key
    # what preparing read and counted
    documents: DocumentCounts
    files_read: int
    binary_files_skipped: int
    characters: int  # of the kept text
    bytes_replaced: int  # bytes that were not valid UTF-8
    tokens: dict[str, int]  # per split: train, val
    dtype: str  # of the token files: uint16, or uint32 for vocabularies over 65536
    vocab_size: int
    eot_id: int  # the token that ends every document (a model's eos token when fine-tuning)
    tokenizer_hash: str  # studio.data.tokenizer.tokenizer_hash: a checkpoint records it, generation checks it
    chars_per_token: float
    created: str  # ISO 8601, UTC
    empty_rows: int = 0  # rows whose text is null or empty, skipped (datasets prepared before rows had it lack it)
    cleaning: CleaningFacts = field(default_factory=CleaningFacts)  # redactions, near-duplicate pairs, contamination
    # an encoder's special tokens: pad, cls, sep, mask (text and labeled layouts; None for others)
    special_ids: dict[str, int | None] | None = None  # older versions wrote null ids for text datasets
    # classification rows (studio.data.labeled)
    task: str = _only_in(LABELED, default="lm")  # "classify" for labeled datasets; "lm" for the others
    labels: list[str | int] = _only_in(LABELED, default_factory=list)  # numbers by value, names alphabetically
    class_counts: dict[str, dict[str, int]] = _only_in(LABELED, default_factory=dict)  # per split, per label
    framed: bool = _only_in(LABELED, default=False)  # the tokenizer adds the model's special tokens around texts
    pad_id: int = _only_in(LABELED, default=0)  # what pads a batch of rows
    warnings: list[str] = _only_in(LABELED, default_factory=list)  # e.g. a class absent from validation
    # examples: classification rows, or chat and instruction examples (studio.data.examples)
    examples: dict[str, int] = _only_in(LABELED, EXAMPLES, default_factory=dict)  # per split: train, val
    truncated: int = _only_in(LABELED, EXAMPLES, default=0)  # examples cut to the model's context
    # chat and instruction examples (studio.data.examples)
    row_format: str = _only_in(EXAMPLES, default="")  # alpaca, messages, sharegpt ...; pairs, unpaired (preferences)
    chat_template: str | None = _only_in(EXAMPLES, default=None)  # the template the rows were rendered with
    chat_tokens: ChatTokens = _only_in(EXAMPLES, default_factory=ChatTokens)
    stop_ids: list[int] = _only_in(EXAMPLES, default_factory=list)  # end-of-text and end-of-turn: generation stops

    @property
    def layout(self) -> str:
        """text, labeled or examples: which files the dataset has, and which fields."""
        if self.labels:
            return LABELED
        return EXAMPLES if self.row_format else TEXT

    def held_out(self) -> str:
        """What the validation split holds, in words (prepare's summary, the CLI before a launch, the Data tab)."""
        tokens = self.tokens["val"]
        if not tokens:
            return "nothing: everything trains (data.val_fraction 0, or too few examples to hold any out)"
        if self.examples:
            held, total = self.examples["val"], sum(self.examples.values())
            return f"{held:,} of {total:,} examples ({tokens:,} tokens), never trained on"
        return f"the end of the text: {tokens:,} of {sum(self.tokens.values()):,} tokens, never trained on"

    def preference_rows(self) -> dict[str, int]:
        """A preference dataset's rows per split, train and val (a pair is two examples); {} for other datasets."""
        per_row = ANSWERS_PER_ROW.get(self.row_format)
        return {split: count // per_row for split, count in self.examples.items()} if per_row else {}

    @classmethod
    def load(cls, path: Path) -> DatasetMeta:
        """A meta.json read; a ValueError naming the field when it is not JSON, lacks a field every dataset has or
        holds a value of another type than the field's."""
        document = json.loads(path.read_text(encoding="utf-8"))
        return cls(**_typed_fields(cls, document, path.name))

    @staticmethod
    def recorded_key(path: Path) -> str | None:
        """The cache key a meta.json records, read on its own: a dataset damaged elsewhere is still found by its key
        (and rebuilt). None when the file has no readable key."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        key = document.get("key") if isinstance(document, dict) else None
        return key if isinstance(key, str) else None

    def save(self, path: Path) -> None:
        """meta.json: every field of the dataset's layout (special_ids only when set), in declaration order."""
        layout, values = self.layout, asdict(self)
        document = {
            item.name: values[item.name]
            for item in fields(self)
            if values[item.name] is not None and layout in item.metadata.get("layouts", (layout,))
        }
        write_atomically(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _typed_fields(cls: type, document: Any, where: str) -> dict[str, Any]:
    """The fields of dataclass `cls` in a JSON object, each checked against its annotation (a nested dataclass
    built from its own object); keys `cls` does not know are left out."""
    if not isinstance(document, dict):
        raise ValueError(f"{where} is not a JSON object")
    hints = get_type_hints(cls)
    missing = [
        item.name
        for item in fields(cls)
        if item.name not in document and item.default is MISSING and item.default_factory is MISSING
    ]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    values = {}
    for name, value in document.items():
        hint = hints.get(name)
        if hint is None:
            continue
        if is_dataclass(hint):
            values[name] = hint(**_typed_fields(hint, value, f"{where} {name}"))
        elif _is_of(value, hint):
            values[name] = value
        else:
            raise ValueError(f"{where}: {name} is {json.dumps(value)[:60]}, not of type {_type_name(hint)}")
    return values


def _is_of(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (a bool is not a number, a whole number is a float)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin is UnionType:
        return any(_is_of(value, option) for option in args)
    if origin is dict:
        return isinstance(value, dict) and all(_is_of(k, args[0]) and _is_of(v, args[1]) for k, v in value.items())
    if origin is list:
        return isinstance(value, list) and all(_is_of(item, args[0]) for item in value)
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, int | float) if hint is float else isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) and not get_args(hint) else str(hint).replace("typing.", "")
