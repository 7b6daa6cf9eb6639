"""Preparing a dataset: a source becomes `tokenizer.json`, `train.bin`, `val.bin` and `meta.json`.

    datasets_dir()/<name>/
        tokenizer.json   Hugging Face tokenizers format
        train.bin        flat token ids (uint16, or uint32 for vocabularies over 65536), EOT after each document
        val.bin          the tail of the cleaned corpus: the last val_fraction of its characters
        meta.json        source, content hash, options, counts, dtype, vocabulary size (studio.data.meta)

The source is read in passes, never whole: (0) hash it, for the cache key; (1) scan: clean every
document and decide which to keep; (2) BPE only: train the tokenizer on the kept documents;
(3) encode the kept documents piece by piece, appending ids to the files as they come. Memory
stays flat however large the corpus. A dataset is built in a hidden temporary folder and moved
into place when complete, so an interrupted prepare leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from studio.config import DataConfig
from studio.data.chat import ChatTemplate
from studio.data.clean import CleaningRules, Scan, kept_documents, scan
from studio.data.contamination import evaluation_source
from studio.data.examples import RowEncoder, chat_template_for, source_format, write_examples
from studio.data.labeled import label_names, read_labeled_rows, split_rows, write_labeled
from studio.data.meta import EXAMPLES, LABELED, TEXT, ChatTokens, DatasetMeta, DocumentCounts
from studio.data.preferences import PREFERENCE_FORMATS, UNPAIRED, PreferenceEncoder, write_preferences
from studio.data.prompts import PROMPTS, write_prompts
from studio.data.sources import COMPRESSIONS, ReadStats, Source, open_source
from studio.data.tokenizer import (
    ENCODER_TOKENS,
    EOT,
    MASK,
    PAD,
    BpeEncoder,
    add_encoder_tokens,
    encoder_for,
    load_tokenizer,
    tokenizer_hash,
    train_bpe,
    train_char,
)
from studio.errors import StudioError
from studio.objectives import Objective
from studio.paths import TEMPORARY_PREFIX, check_name, datasets_dir, is_name

FORMAT = 2  # bump when cleaning or the file layout changes, so old caches are not reused
SPLITS = ("train", "val")
TOKEN_DTYPES = ("uint16", "uint32")  # token_dtype's choices
MIN_SPLIT_TOKENS = 8

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PretrainedTokenizer:
    """A tokenizer to use as is instead of training one: fine-tuning keeps the model's vocabulary."""

    path: Path  # its tokenizer.json
    eot_token: str  # the token that ends every document (the model's eos token)
    chat_template: str | None = None  # the model's own; chat data falls back to the studio's default
    bos_token: str = ""  # what templates write as bos_token
    pad_token: str = ""  # what pads its batches, when it names one
    frames_text: bool = False  # a Hugging Face tokenizer: its post-processor adds what its model expects
    folder: Path | None = None  # the Hugging Face folder it is the tokenizer of, for messages (else its file's)


@dataclass(frozen=True)
class Purpose:
    """What a dataset is prepared for beyond the data options (each joins the cache key when it matters)."""

    pretrained: PretrainedTokenizer | None = None  # fine-tuning: the model's tokenizer, not a new one
    context: int = 0  # the model's context, which examples are cut to
    encoder: bool = False  # an encoder's special tokens: [PAD] [CLS] [SEP] [MASK]
    task: str = "lm"  # or "classify": rows of text and label; "preference": preference rows (studio.data.preferences);
    # "prompts": prompt rows to answer (studio.data.prompts)
    held_out: bool = False  # rows to judge a trained classifier by: one split of them all, one class is enough

    @classmethod
    def of(cls, objective: Objective, pretrained: PretrainedTokenizer | None, context: int, held_out: bool = False):
        """What a model of `objective` learns from: labeled rows (a classifier), text with [MASK] (a masked LM),
        preference rows (the preference objectives), prompt rows (GRPO)."""
        masked = objective.predicts == "fill-mask"
        task = {"labeled": "classify", "preferences": "preference", "prompts": "prompts"}.get(objective.dataset, "lm")
        return cls(pretrained, context, masked, task, held_out)


@dataclass
class Dataset:
    name: str
    path: Path
    meta: DatasetMeta

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    @property
    def eot_id(self) -> int:
        return self.meta.eot_id

    @property
    def dtype(self) -> str:
        return self.meta.dtype

    @property
    def has_examples(self) -> bool:
        """Examples (chat, instruction or classification rows, with their offsets), not plain text."""
        return bool(self.meta.examples)

    @property
    def has_validation(self) -> bool:
        """Whether anything was held out (data.val_fraction 0, or a small example set, holds nothing out)."""
        return self.meta.tokens["val"] > 0

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    def bin_path(self, split: str) -> Path:
        """The token file of a split: `train` or `val`."""
        return self.path / f"{split}.bin"


# ---- finding datasets ---------------------------------------------------------------------------
def open_dataset(name: str) -> Dataset:
    path = datasets_dir() / name
    if not _is_dataset(name):
        raise StudioError(f"no prepared dataset named {name!r} in {datasets_dir()}; prepare it first")
    try:
        meta = DatasetMeta.load(path / "meta.json")
        _check_files(path, meta)
    except (OSError, ValueError, TypeError) as error:
        raise StudioError(
            f"dataset {name!r} is damaged ({error}); prepare its source again to rebuild it, or delete {path}"
        ) from None
    return Dataset(name, path, meta)


def _check_files(folder: Path, meta: DatasetMeta) -> None:
    """The files of the dataset's layout, each of the size meta.json's counts give it, and the examples' offsets
    rising from 0 to their split's end; a ValueError names the first that is not. Cheap: sizes, and one vectorised
    pass over the offsets and labels, never over the tokens."""
    if meta.dtype not in TOKEN_DTYPES:
        raise ValueError(f"meta.json: dtype is {meta.dtype!r}, not one of {', '.join(TOKEN_DTYPES)}")
    if not (folder / "tokenizer.json").is_file():
        raise ValueError("tokenizer.json is missing")
    _check_split_counts(meta.tokens, "tokens")
    if meta.layout != TEXT:
        _check_split_counts(meta.examples, "examples")
    for split in SPLITS:
        tokens = meta.tokens[split]
        _check_size(folder / f"{split}.bin", tokens * np.dtype(meta.dtype).itemsize, f"{tokens:,} {meta.dtype} ids")
        if meta.layout == EXAMPLES:
            _check_size(folder / f"{split}.mask", tokens, f"a byte for each of {tokens:,} tokens")
        if meta.layout != TEXT:
            examples = meta.examples[split]
            _check_size(folder / f"{split}.idx", (examples + 1) * 8, f"{examples + 1:,} int64 offsets")
            _check_offsets(folder / f"{split}.idx", tokens)
        if meta.row_format == UNPAIRED:
            _check_size(folder / f"{split}.desirable", examples, f"a byte for each of {examples:,} examples")
        if meta.layout == LABELED:
            _check_size(folder / f"{split}.labels", examples * 8, f"{examples:,} int64 labels")
            _check_labels(folder / f"{split}.labels", len(meta.labels))


def _check_split_counts(counts: dict[str, int], field: str) -> None:
    if set(counts) != set(SPLITS) or min(counts.values()) < 0:
        raise ValueError(f"meta.json: {field} is {counts}, not a count of at least 0 for each of {', '.join(SPLITS)}")


def _check_size(path: Path, expected: int, what: str) -> None:
    size = path.stat().st_size  # a missing file is an OSError naming it
    if size != expected:
        raise ValueError(f"{path.name} has {size:,} bytes, not the {expected:,} of {what} that meta.json counts")


def _check_offsets(path: Path, tokens: int) -> None:
    """Where each example starts: from 0, never backwards, ending at the split's last token."""
    offsets = np.fromfile(path, dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != tokens:
        raise ValueError(f"{path.name} runs from {offsets[0]:,} to {offsets[-1]:,}, not from 0 to {tokens:,}")
    backwards = np.flatnonzero(np.diff(offsets) < 0)
    if len(backwards):
        raise ValueError(f"{path.name}: example {backwards[0] + 1:,} starts before example {backwards[0]:,}")


def _check_labels(path: Path, classes: int) -> None:
    labels = np.fromfile(path, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{path.name} holds label indices outside 0..{classes - 1} (meta.json has {classes} labels)")


@dataclass
class DamagedDataset:
    """A prepared dataset that does not open (its meta.json truncated, a file missing): listed, never raised."""

    name: str
    path: Path
    reason: str  # open_dataset's one line: what is wrong and how to rebuild it


def list_datasets() -> list[Dataset | DamagedDataset]:
    """The home's prepared datasets by name; one that does not open is listed as damaged, with its reason, so
    one damaged folder never hides the others."""
    root = datasets_dir()
    names = sorted(path.name for path in root.iterdir()) if root.is_dir() else []
    return [_listed(name) for name in names if _is_dataset(name)]


def _listed(name: str) -> Dataset | DamagedDataset:
    try:
        return open_dataset(name)
    except StudioError as error:
        return DamagedDataset(name, datasets_dir() / name, str(error))


def resolve_dataset(data: DataConfig, progress: Progress | None = None, purpose: Purpose = Purpose()) -> Dataset:
    """The dataset `data.source` names if it is a prepared one (of the purpose's kind, and with a pretrained
    model, tokenized by that very tokenizer), else the source prepared (or cached)."""
    pretrained, encoder = purpose.pretrained, purpose.encoder
    if _is_dataset(data.source):
        dataset = open_dataset(data.source)
        if (dataset.meta.task == "classify") != (purpose.task == "classify"):
            raise StudioError(
                f"dataset {data.source!r} was prepared for another task than train.task {purpose.task}; "
                "give its source instead"
            )
        if (dataset.meta.row_format in PREFERENCE_FORMATS) != (purpose.task == "preference"):
            raise StudioError(
                f"dataset {data.source!r} holds {'preference' if purpose.task != 'preference' else 'other'} rows; "
                "a preference objective (train.objective) learns from preference rows, the others from the rest"
            )
        if (dataset.meta.row_format == PROMPTS) != (purpose.task == "prompts"):
            raise StudioError(
                f"dataset {data.source!r} holds {'prompt' if purpose.task != 'prompts' else 'other'} rows; "
                "train.objective grpo learns from prompt rows ({prompt, ...}), the others from the rest"
            )
        if pretrained and dataset.meta.tokenizer_hash != tokenizer_hash(load_tokenizer(pretrained.path)):
            raise StudioError(
                f"dataset {data.source!r} was tokenized with another tokenizer than the model's; "
                "give its source text instead, to tokenize it with the model's tokenizer"
            )
        if encoder and (dataset.meta.special_ids or {}).get("mask") is None:  # older versions wrote them all null
            raise StudioError(
                f"dataset {data.source!r} has no [MASK] token: an encoder needs its source prepared for it; "
                "give the source text instead"
            )
        return dataset
    return prepare_dataset(data, progress=progress, purpose=purpose)


def _is_dataset(name: str) -> bool:
    # temporary build folders start with a dot, so they never match
    return is_name(name) and (datasets_dir() / name / "meta.json").is_file()


# ---- preparing ----------------------------------------------------------------------------------
def prepare_dataset(
    data: DataConfig, name: str | None = None, progress: Progress | None = None, purpose: Purpose = Purpose()
) -> Dataset:
    """Clean, tokenize and store `data.source`; the same source and options again is a cache hit.

    `purpose.pretrained`: encode with this tokenizer instead of training one (data.tokenizer and data.vocab_size
    are then ignored; the tokenizer's hash and end-of-text token join the cache key). Chat and instruction
    rows (studio.data.examples) need it, and the `context` their examples are cut to. Classification rows
    (`purpose.task`, studio.data.labeled) are text and label."""
    progress = progress or _no_progress
    if name is not None:
        check_name(name, "dataset")
    source = open_source(data.source, data)
    row_format, options, fingerprint, key = _cache_key(source, data, purpose, progress)
    recorded = _recorded_with(key, name)
    cached = _intact(recorded) if recorded else None
    if cached:
        progress("cached", 1, 1)
        return cached
    name = recorded or name or _free_name(_default_name(source, data, options), key)
    identity = {
        "name": name,
        "source": source.location,
        "kind": source.kind,
        "format": FORMAT,
        "key": key,
        "content_hash": fingerprint,
        "options": options,
    }
    return _build(source, data, identity, progress, purpose, row_format, replacing=recorded is not None)


def find_prepared(data: DataConfig, purpose: Purpose = Purpose()) -> Dataset | None:
    """The dataset `data.source` names, or the one that preparing it with these options would reuse (intact), or
    None; builds nothing. Reads the whole source once, to hash it, as preparing does."""
    if _is_dataset(data.source):
        return _intact(data.source)
    source = open_source(data.source, data)
    recorded = _recorded_with(_cache_key(source, data, purpose, _no_progress)[3], None)
    return _intact(recorded) if recorded else None


def _cache_key(
    source: Source, data: DataConfig, purpose: Purpose, progress: Progress
) -> tuple[str, dict[str, Any], str, str]:
    """What identifies a prepared dataset: the source's row format, the options that shape the result, the
    content's fingerprint and the key they hash to. Refuses rows the purpose cannot learn from."""
    pretrained, context, encoder = purpose.pretrained, purpose.context, purpose.encoder
    row_format = {"classify": "labeled", "preference": "preference", "prompts": PROMPTS}.get(purpose.task)
    row_format = row_format or source_format(source, data)
    if row_format not in ("text", "labeled") and pretrained is None:
        raise StudioError(
            f"{row_format} rows are fine-tuning data: start from a model with --init-from DIR|RUN, "
            "whose tokenizer and chat template they are rendered with"
        )
    if encoder and row_format not in ("text", "labeled"):
        raise StudioError(f"a BERT encoder learns from plain text, not {row_format} rows; give text or --format text")
    options = _options(data, source.kind, pretrained, row_format, context) | ({"encoder": True} if encoder else {})
    options |= {"held_out": True} if purpose.held_out and row_format == "labeled" else {}
    fingerprint = source.fingerprint(lambda done, total: progress("hash", done, total))
    key = hashlib.blake2b(
        json.dumps([FORMAT, fingerprint, options], sort_keys=True).encode(), digest_size=16
    ).hexdigest()
    return row_format, options, fingerprint, key


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _options(
    data: DataConfig, kind: str, pretrained: PretrainedTokenizer | None, row_format: str, context: int
) -> dict[str, Any]:
    """The options that shape the result; the others would only make needless cache misses."""
    options = dataclasses.asdict(data)
    del options["source"], options["packing"], options["format"]  # packing shapes batches, not the files
    if row_format != "labeled":
        del options["label_field"], options["text_pair_field"], options["val_file"]
    elif data.val_file:  # its content, not its name, shapes the result
        options["val_file"] = open_source(data.val_file, data).fingerprint()
    if row_format in ("text", "labeled"):
        del options["supervise_all"], options["overlong"]
    if row_format == "labeled":
        del options["min_chars"], options["max_chars"], options["dedup"]
        options |= {"row_format": row_format, "context": context}
    elif row_format != "text":
        del options["min_chars"], options["max_chars"]
        template = chat_template_for(pretrained.chat_template if pretrained else None)
        options |= {"row_format": row_format, "context": context, "chat_template": _short_hash(template)}
        options["val_split"] = "rounded"  # a small set holds none out: sets split the older way are not reused
    if pretrained:
        options["tokenizer"] = f"pretrained-{tokenizer_hash(load_tokenizer(pretrained.path))[:12]}"
        options["eot_token"] = pretrained.eot_token
    _cleaning_options(options, data)
    if data.tokenizer == "char" or pretrained:
        del options["vocab_size"]
    if kind != "folder":
        del options["glob"]
    if kind in ("builtin", "text"):  # no rows to pick a field of
        del options["text_field"]
    return options


def _cleaning_options(options: dict[str, Any], data: DataConfig) -> None:
    """The privacy and contamination options join the key only when on (datasets prepared before they existed are
    still found), each with what it depends on: the evaluation files by their content."""
    if not data.redact:
        del options["redact"], options["redact_numbered"]
    if not data.near_dedup:
        del options["near_dedup"], options["near_dedup_shingles"]
    if data.decontaminate:
        options["decontaminate"] = [evaluation_source(file).fingerprint() for file in data.decontaminate]
    else:
        del options["decontaminate"], options["decontaminate_ngram"]


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _recorded_with(key: str, name: str | None) -> str | None:
    """The dataset whose meta.json records this cache key (the one named `name` when given), intact or damaged;
    refuses to reuse a name taken by a dataset of other options. A dataset under `name` whose key cannot be read
    is damaged, and rebuilt under its name."""
    root = datasets_dir()
    if name is None:
        names = sorted(path.name for path in root.iterdir()) if root.is_dir() else []
        return next((found for found in names if _is_dataset(found) and _recorded_key(found) == key), None)
    if not (root / name).exists():
        return None
    if not _is_dataset(name) or _recorded_key(name) not in (key, None):
        raise StudioError(f"dataset {name!r} already exists with other options; pick another --name or delete it")
    return name


def _recorded_key(name: str) -> str | None:
    return DatasetMeta.recorded_key(datasets_dir() / name / "meta.json")


def _intact(name: str) -> Dataset | None:
    """The dataset, or None when it is damaged: it is then rebuilt rather than reused."""
    try:
        return open_dataset(name)
    except StudioError:
        return None


def _default_name(source: Source, data: DataConfig, options: dict[str, Any]) -> str:
    """e.g. python-stdlib-bpe4096, tinyshakespeare-char, or notes-pretrained-<hash> (a model's tokenizer)."""
    path = Path(source.location)
    if path.suffix in COMPRESSIONS:  # corpus.txt.zst is named corpus
        path = path.with_suffix("")
    stem = {"builtin": source.location, "folder": path.name, "datasets": path.name}.get(source.kind, path.stem)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)[:60].strip("-._") or "corpus"
    tokenizer = options["tokenizer"] if "vocab_size" not in options else f"bpe{data.vocab_size}"
    return f"{stem}-{tokenizer}"


def _free_name(name: str, key: str) -> str:
    """The name itself, or with a short hash of the key when a dataset of other options has it."""
    return f"{name}-{key[:8]}" if (datasets_dir() / name).exists() else name


def _build(
    source: Source,
    data: DataConfig,
    identity: dict[str, Any],
    progress: Progress,
    purpose: Purpose,
    row_format: str,
    replacing: bool = False,
) -> Dataset:
    """The dataset built in a temporary folder and renamed into place; `replacing` a damaged one of the same name,
    which gives way only once its rebuild is complete."""
    root = datasets_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / identity["name"]
    temporary = root / f"{TEMPORARY_PREFIX}{identity['name']}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)  # left over by a killed process of the same id
    temporary.mkdir()
    try:
        if row_format == "text":
            meta = _write_dataset(temporary, source, data, identity, progress, purpose.pretrained, purpose.encoder)
        else:
            rules = CleaningRules(data, scratch=temporary)
            source = dataclasses.replace(source, row_rules=rules.rows if rules.on else None)
            if row_format == "labeled":
                meta = _write_labeled_dataset(temporary, source, data, identity, progress, purpose, rules)
            else:
                meta = _write_rendered_dataset(temporary, source, data, identity, progress, purpose, row_format)
            _add_row_cleaning(meta, rules)
        meta.save(temporary / "meta.json")
        if replacing:
            damaged = root / f"{TEMPORARY_PREFIX}{identity['name']}-damaged-{os.getpid()}"
            os.replace(final, damaged)
            shutil.rmtree(damaged)
        os.replace(temporary, final)  # fails, rather than overwrite, if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return Dataset(identity["name"], final, meta)


def _add_row_cleaning(meta: DatasetMeta, rules: CleaningRules) -> None:
    """What the cleaning rules found in the rows, and the rows they dropped before any writer saw them."""
    meta.cleaning = rules.finish()
    meta.documents.seen += sum(rules.dropped.values())
    meta.documents.dropped |= {rule: count for rule, count in rules.dropped.items() if count}


def _write_dataset(
    folder: Path,
    source: Source,
    data: DataConfig,
    identity: dict[str, Any],
    progress: Progress,
    pretrained: PretrainedTokenizer | None,
    encoder: bool,
) -> DatasetMeta:
    """Run the passes, writing the dataset's files into `folder`; returns the meta (which _build writes last)."""
    corpus = scan(
        source,
        data,
        collect_charset=data.tokenizer == "char" and not pretrained,
        progress=lambda done, total: progress("scan", done, total),
        rules=CleaningRules(data, scratch=folder),
    )
    _check_not_empty(corpus, source, data)

    progress("tokenizer", 0, 1)
    tokenizer = load_tokenizer(pretrained.path) if pretrained else _train_tokenizer(source, corpus, data)
    if encoder and tokenizer.token_to_id(MASK) is None:
        if pretrained:
            raise StudioError("the tokenizer of --init-from has no [MASK]: a masked LM needs an encoder's tokenizer")
        add_encoder_tokens(tokenizer)
    tokenizer.save(str(folder / "tokenizer.json"))
    progress("tokenizer", 1, 1)

    vocab_size = tokenizer.get_vocab_size()
    text_encoder = _pretrained_encoder(tokenizer, pretrained) if pretrained else encoder_for(tokenizer, data.tokenizer)
    train_chars = int(corpus.characters * (1 - data.val_fraction))
    with SplitWriter(folder, token_dtype(vocab_size), train_chars) as writer:
        for pieces in kept_documents(source, corpus, data):
            for piece in pieces:
                writer.write(piece, text_encoder.encode)
                progress("encode", writer.chars, corpus.characters)
            writer.write_ids(np.array([text_encoder.eot_id]))
    _check_split_sizes(writer.tokens, corpus, data.val_fraction)

    text_tokens = sum(writer.tokens.values()) - corpus.kept  # all but the EOTs
    return _dataset_meta(
        identity,
        tokenizer,
        eot_id=text_encoder.eot_id,
        encoder=encoder,
        documents=DocumentCounts(corpus.seen, corpus.kept, corpus.dropped),
        read=corpus.read,
        characters=corpus.characters,
        tokens=writer.tokens,
        text_tokens=text_tokens,
        cleaning=corpus.cleaning,
    )


def _write_labeled_dataset(
    folder: Path,
    source: Source,
    data: DataConfig,
    identity: dict[str, Any],
    progress: Progress,
    purpose: Purpose,
    rules: CleaningRules,
) -> DatasetMeta:
    """Classification rows (studio.data.labeled): ids, offsets and labels per split; returns the meta."""
    stats = ReadStats()
    progress("scan", 0, 1)
    read = read_labeled_rows(source, data, stats)
    if purpose.held_out:  # the model's labels judge them; none of them trains
        labels = label_names(read.rows, source.location, at_least=1)
        train_rows, val_rows = [], read.rows
    elif data.val_file:  # held-out rows of their own: every row of the source trains
        held_out_source = dataclasses.replace(open_source(data.val_file, data), row_rules=source.row_rules)
        held_out = read_labeled_rows(held_out_source, data, stats)
        labels = label_names(read.rows + held_out.rows, source.location)
        train_rows, val_rows = read.rows, held_out.rows
        read.skipped += held_out.skipped
    else:
        labels = label_names(read.rows, source.location)
        train_rows, val_rows = split_rows(read.rows, labels, data.val_fraction)
    no_split = not (val_rows or data.val_file or data.val_fraction)  # val_fraction 0: no validation, as asked
    if not (val_rows or no_split) or not (train_rows or purpose.held_out):
        raise StudioError(
            f"{source.location}: {len(train_rows)} training and {len(val_rows)} validation rows; each split needs "
            "rows (check the rows' split fields, or data.val_fraction)"
        )
    texts = [text for row in read.rows for text in (row.text, row.pair) if text]
    progress("tokenizer", 0, 1)
    if purpose.pretrained:
        tokenizer = load_tokenizer(purpose.pretrained.path)
    elif data.tokenizer == "char":
        tokenizer = train_char("".join(texts))
    else:
        tokenizer = train_bpe(texts, data.vocab_size, sum(map(len, texts)))
    if purpose.encoder and tokenizer.token_to_id(MASK) is None:
        add_encoder_tokens(tokenizer)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(folder / "tokenizer.json"))
    eot = purpose.pretrained.eot_token if purpose.pretrained else EOT
    eot_id = tokenizer.token_to_id(eot)
    framed = purpose.encoder or (purpose.pretrained is not None and purpose.pretrained.frames_text)
    vocab_size = tokenizer.get_vocab_size()
    progress("encode", 0, 1)
    splits = {"train": train_rows, "val": val_rows}
    counts = write_labeled(folder, splits, labels, tokenizer, framed, purpose.context, token_dtype(vocab_size))
    progress("encode", 1, 1)
    val_counts = counts.class_counts["val"]
    missing = [] if purpose.held_out or no_split else [str(label) for label in labels if str(label) not in val_counts]
    return _dataset_meta(
        identity,
        tokenizer,
        eot_id=eot_id,
        encoder=purpose.encoder,
        documents=DocumentCounts(len(read.rows) + read.skipped, len(read.rows), {"no_label": read.skipped}),
        read=stats,
        characters=sum(map(len, texts)),
        tokens=counts.tokens,
        text_tokens=sum(counts.tokens.values()),
        task="classify",
        labels=labels,
        class_counts=counts.class_counts,
        framed=framed,
        pad_id=_pad_id(tokenizer, purpose, eot_id),
        warnings=[f"no validation rows of class {', '.join(missing)}"] if missing else [],
        examples=counts.examples,
        truncated=counts.truncated,
    )


def _pad_id(tokenizer: Tokenizer, purpose: Purpose, eot_id: int) -> int:
    """What pads a batch of examples: an encoder's [PAD], a Hugging Face tokenizer's pad token, else end-of-text."""
    if purpose.encoder:
        return tokenizer.token_to_id(PAD)
    pad = purpose.pretrained.pad_token if purpose.pretrained else ""
    return tokenizer.token_to_id(pad) if pad and tokenizer.token_to_id(pad) is not None else eot_id


def _model_tokenizer(folder: Path, pretrained: PretrainedTokenizer) -> tuple[Tokenizer, ChatTemplate]:
    """The model's tokenizer, saved into the dataset, and its chat template (or the studio's default)."""
    tokenizer = load_tokenizer(pretrained.path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(folder / "tokenizer.json"))
    template_name = f"the chat template of {pretrained.folder or pretrained.path.parent}"
    source = chat_template_for(pretrained.chat_template)
    return tokenizer, ChatTemplate(source, pretrained.bos_token, pretrained.eot_token, template_name)


def _write_rendered_dataset(
    folder: Path,
    source: Source,
    data: DataConfig,
    identity: dict[str, Any],
    progress: Progress,
    purpose: Purpose,
    row_format: str,
) -> DatasetMeta:
    """Rows rendered with the model's tokenizer and chat template (chat or instruction examples, preference rows,
    prompt rows), written by their format's writer; returns the meta."""
    pretrained = purpose.pretrained
    assert pretrained is not None  # _cache_key refuses rows to render without a model
    tokenizer, template = _model_tokenizer(folder, pretrained)
    stats = ReadStats()
    progress("encode", 0, 1)
    dtype = token_dtype(tokenizer.get_vocab_size())
    if row_format == "preference":
        encoder = PreferenceEncoder(tokenizer, template, purpose.context)
        written = write_preferences(folder, source, data, encoder, dtype, stats)
    elif row_format == PROMPTS:
        written = write_prompts(folder, source, data, tokenizer, template, purpose.context, dtype, stats)
    else:
        encoder = RowEncoder(data, row_format, tokenizer, template, purpose.context)
        written = write_examples(folder, source, encoder, dtype, stats)
    progress("encode", 1, 1)
    eot_id = tokenizer.token_to_id(pretrained.eot_token)
    return _dataset_meta(
        identity,
        tokenizer,
        eot_id=eot_id,
        encoder=False,
        documents=written.documents,
        read=stats,
        characters=written.characters,
        tokens=written.tokens,
        text_tokens=sum(written.tokens.values()),
        examples=written.examples,
        truncated=written.truncated,
        row_format=written.row_format,
        chat_template=template.source,
        chat_tokens=ChatTokens(pretrained.bos_token, pretrained.eot_token),
        stop_ids=sorted(written.stop_ids | {eot_id}),
    )


def _dataset_meta(
    identity: dict[str, Any],
    tokenizer: Tokenizer,
    *,
    eot_id: int,
    encoder: bool,
    documents: DocumentCounts,
    read: ReadStats,
    characters: int,
    tokens: dict[str, int],
    text_tokens: int,
    **layout_fields: Any,
) -> DatasetMeta:
    """The one place a dataset's meta is built: its identity, what reading counted, its tokenizer's facts (an
    encoder's special tokens among them), and the fields of its layout (studio.data.meta). `text_tokens`: the
    tokens that encode text, which chars_per_token divides by."""
    vocab_size = tokenizer.get_vocab_size()
    special_ids = {name: tokenizer.token_to_id(token) for name, token in ENCODER_TOKENS.items()} if encoder else None
    return DatasetMeta(
        **identity,
        documents=documents,
        files_read=read.files_read,
        binary_files_skipped=read.binary_files_skipped,
        characters=characters,
        bytes_replaced=read.bytes_replaced,
        empty_rows=read.empty_rows,
        tokens=tokens,
        dtype=token_dtype(vocab_size),
        vocab_size=vocab_size,
        eot_id=eot_id,
        tokenizer_hash=tokenizer_hash(tokenizer),
        chars_per_token=round(characters / max(text_tokens, 1), 3),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        special_ids=special_ids,
        **layout_fields,
    )


def _train_tokenizer(source: Source, corpus: Scan, data: DataConfig) -> Tokenizer:
    if data.tokenizer == "char":
        return train_char(corpus.charset)
    texts: Iterator[str] = (piece for pieces in kept_documents(source, corpus, data) for piece in pieces)
    return train_bpe(texts, data.vocab_size, corpus.characters)


def _pretrained_encoder(tokenizer: Tokenizer, pretrained: PretrainedTokenizer) -> BpeEncoder:
    """The general encoder (the Rust tokenizer itself), ending documents with the model's own eos token."""
    encoder = BpeEncoder(tokenizer)
    encoder.eot_id = tokenizer.token_to_id(pretrained.eot_token)
    return encoder


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


class SplitWriter:
    """Appends token ids to train.bin until `train_chars` characters are in, then to val.bin.

    A document that straddles the border is cut at exactly that character, so for a single text
    file val.bin is the encoded end of the cleaned text, like nanoGPT's 90/10 split.
    """

    def __init__(self, folder: Path, dtype: str, train_chars: int) -> None:
        self.dtype, self.train_chars = dtype, train_chars
        self.split, self.chars = "train", 0
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.files = {split: open(folder / f"{split}.bin", "wb") for split in SPLITS}

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for file in self.files.values():
            file.close()

    def write(self, text: str, encode: Callable[[str], np.ndarray]) -> None:
        if self.split == "train" and self.chars + len(text) > self.train_chars:
            head = self.train_chars - self.chars
            if head:
                self.write_ids(encode(text[:head]))
            self.split, self.chars, text = "val", self.train_chars, text[head:]
        self.write_ids(encode(text))
        self.chars += len(text)

    def write_ids(self, ids: np.ndarray) -> None:
        ids.astype(self.dtype, copy=False).tofile(self.files[self.split])
        self.tokens[self.split] += len(ids)


def _check_not_empty(corpus: Scan, source: Source, data: DataConfig) -> None:
    if corpus.kept:
        return
    if not corpus.seen:
        skipped = corpus.read.binary_files_skipped
        raise StudioError(
            f"no documents in {source.location}"
            + (f" ({skipped} binary files skipped)" if skipped else "")
            + "; give a source with text in it"
        )
    reasons = {
        "empty": "empty",
        "too_short": f"shorter than data.min_chars={data.min_chars}",
        "too_long": f"longer than data.max_chars={data.max_chars}",
        "duplicate": "duplicates",
        "contaminated": "sharing an n-gram with data.decontaminate's rows",
        "near_duplicate": "near-duplicates",
    }
    dropped = ", ".join(f"{count} {reasons[rule]}" for rule, count in corpus.dropped.items() if count)
    raise StudioError(
        f"nothing left after cleaning: all {corpus.seen} documents were dropped ({dropped}); "
        "check the source or loosen data.min_chars / data.max_chars"
    )


def _check_split_sizes(tokens: dict[str, int], corpus: Scan, val_fraction: float) -> None:
    """Each split has enough tokens to train on or judge by; without a split (val_fraction 0) the train split."""
    if min(tokens.values() if val_fraction else [tokens["train"]]) < MIN_SPLIT_TOKENS:
        raise StudioError(
            f"the corpus is too small to split: {corpus.characters} characters give "
            f"{tokens['train']} train and {tokens['val']} validation tokens, and each split "
            f"needs at least {MIN_SPLIT_TOKENS}; add text or raise data.val_fraction"
        )
