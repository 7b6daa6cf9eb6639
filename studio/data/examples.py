"""Chat and instruction rows to an example dataset: token ids, a supervision mask, and where each example starts.

    datasets_dir()/<name>/
        train.bin, val.bin      the examples' token ids end to end (uint16 or uint32)
        train.mask, val.mask    one byte per token: 1 where the loss learns the token (answers and their end token)
        train.idx, val.idx      int64: the start of every example in the .bin, then the end
        tokenizer.json          the model's tokenizer, as is
        meta.json               as for text, plus the row format, the chat template, the end-of-turn token ids,
                                and counts of examples kept, truncated and dropped

Each row of the source (any row file studio.data.sources reads) is normalised to messages and rendered with the
model's chat template (or the studio's default for a base model without one, which then travels with the run into
its checkpoints and exports), tokenized with its mask (studio.data.chat), and written in one pass; the last
val_fraction of the examples (rounded: none of a small set) is the validation split. Memory stays flat: ids go to
disk as they come, only the offsets are kept.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from studio.config import DataConfig
from studio.data.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate, detect_format, encode_messages, to_messages
from studio.data.meta import DatasetMeta, DocumentCounts, RowsWritten
from studio.data.sources import ReadStats, Source
from studio.errors import StudioError
from studio.formatting import counted

MIN_EXAMPLE_TOKENS = 2  # an input and a target


@dataclass
class ExampleCounts:
    """What writing the examples met: rows seen, examples kept, and why others were not."""

    seen: int = 0
    kept: int = 0
    truncated: int = 0
    characters: int = 0
    dropped: Counter = field(default_factory=Counter)  # duplicate, overlong, no_answer (cut off by truncation)
    stop_ids: set[int] = field(default_factory=set)


def source_format(source: Source, data: DataConfig) -> str:
    """The row format: data.format, or (auto) what the first row of the first row file looks like."""
    if data.format != "auto":
        return data.format
    first = next((file for file in source.files if file.has_rows), None)
    if first is None:
        return "text"
    for record, where in first.rows(data.strict, ReadStats()):
        return detect_format(record, data.text_field, where)
    return "text"


def chat_template_for(template: str | None) -> str:
    """The model's template, or the studio's default for a base model without one."""
    return template or DEFAULT_CHAT_TEMPLATE


def dataset_chat_template(meta: DatasetMeta) -> ChatTemplate | None:
    """The chat template a dataset's examples were rendered with (None for plain text), with the same tokens."""
    if not meta.chat_template:
        return None
    name = f"the chat template of dataset {meta.name}"
    return ChatTemplate(meta.chat_template, meta.chat_tokens.bos, meta.chat_tokens.eos, name)


@dataclass
class RowEncoder:
    """How rows become examples: the data options, the row format, the model's tokenizer and chat template, and
    the context examples are cut to (context + 1 tokens: a context of inputs and its targets)."""

    data: DataConfig
    row_format: str
    tokenizer: Tokenizer
    template: ChatTemplate
    context: int

    def encode(self, record: dict, where: str) -> tuple[list[int], list[int], int]:
        """A row's ids, mask and rendered length (in characters); a row the template or the checks refuse names
        itself."""
        messages = to_messages(record, self.row_format, where)
        try:
            ids, mask = encode_messages(self.tokenizer, self.template, messages, self.data.supervise_all)
            characters = len(self.template.render(messages))
        except StudioError as error:
            raise StudioError(f"{where}: {error}") from None
        return ids, mask, characters

    def examples(self, source: Source, stats: ReadStats, counts: ExampleCounts) -> Iterator[tuple[list, list]]:
        """Every usable example's ids and mask, counting what is cut or left out."""
        seen_hashes: set[bytes] = set()
        added = self.tokenizer.get_added_tokens_decoder()
        limit = self.context + 1
        for record, where in source.records(stats, "chat and instruction rows"):
            counts.seen += 1
            ids, mask, characters = self.encode(record, where)
            digest = hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=16).digest()
            if self.data.dedup and digest in seen_hashes:
                counts.dropped["duplicate"] += 1
                continue
            seen_hashes.add(digest)
            truncated = len(ids) > limit
            if truncated and self.data.overlong == "drop":
                counts.dropped["overlong"] += 1
                continue
            ids, mask = ids[:limit], mask[:limit]
            if len(ids) < MIN_EXAMPLE_TOKENS or not any(mask[1:]):  # the first token is never a target
                counts.dropped["no_answer"] += 1
                continue
            counts.truncated += truncated
            counts.stop_ids.update(_end_tokens(ids, mask, added))
            counts.kept += 1
            counts.characters += characters
            yield ids, mask


def write_examples(folder: Path, source: Source, encoder: RowEncoder, dtype: str, stats: ReadStats) -> RowsWritten:
    """Encode every row and write the train and val splits into folder; returns what meta.json counts of them."""
    counts = ExampleCounts()
    offsets = [0]
    with open(folder / "all.bin", "wb") as ids_file, open(folder / "all.mask", "wb") as mask_file:
        for ids, mask in encoder.examples(source, stats, counts):
            np.asarray(ids, dtype=dtype).tofile(ids_file)
            np.asarray(mask, dtype=np.uint8).tofile(mask_file)
            offsets.append(offsets[-1] + len(ids))
    if not counts.kept:
        cut = counts.dropped["overlong"] + counts.dropped["no_answer"]
        raise StudioError(
            f"no usable example in {source.location} ({_dropped_text(counts)})"
            + (f"; raise model.block_size (now {encoder.context}) to keep the long ones" if cut else "")
        )
    # A split of a few examples judges nothing and teaches them to no one, so it is rounded, not raised to one:
    # at the default 5% a set of fewer than 10 examples trains on them all (LLaMA-Factory and axolotl hold
    # nothing out unless asked).
    val_examples = int(counts.kept * encoder.data.val_fraction + 0.5)  # halves up: 10 examples at 5% hold one out
    split_at = counts.kept - val_examples
    split_examples(folder, np.asarray(offsets, dtype=np.int64), split_at, np.dtype(dtype).itemsize)
    documents = DocumentCounts(counts.seen, counts.kept, dict(counts.dropped))
    examples = {"train": split_at, "val": val_examples}
    tokens = {"train": int(offsets[split_at]), "val": int(offsets[-1] - offsets[split_at])}
    return RowsWritten(encoder.row_format, documents, counts.characters, examples, tokens, counts.truncated,
                       counts.stop_ids)  # fmt: skip


def _end_tokens(ids: list[int], mask: list[int], added: dict[int, Any]) -> set[int]:
    """The special tokens that end a learned span (an answer's end-of-turn token): generation stops at them."""
    ends = set()
    for index, learned in enumerate(mask):
        ending = learned and (index + 1 == len(mask) or not mask[index + 1])
        if ending and ids[index] in added and added[ids[index]].special:
            ends.add(ids[index])
    return ends


def split_examples(folder: Path, offsets: np.ndarray, split_at: int, itemsize: int) -> None:
    """all.* into train.* (the first split_at examples) and val.* (the rest), byte ranges copied, not loaded."""
    border = int(offsets[split_at])
    for suffix, size in ((".bin", itemsize), (".mask", 1)):
        with open(folder / f"all{suffix}", "rb") as whole:
            with open(folder / f"train{suffix}", "wb") as train:
                _copy_bytes(whole, train, border * size)
            with open(folder / f"val{suffix}", "wb") as val:
                shutil.copyfileobj(whole, val)
        (folder / f"all{suffix}").unlink()
    offsets[: split_at + 1].tofile(folder / "train.idx")
    (offsets[split_at:] - border).tofile(folder / "val.idx")


def _copy_bytes(source, target, count: int, chunk: int = 1 << 20) -> None:
    while count > 0:
        data = source.read(min(chunk, count))
        if not data:
            return
        target.write(data)
        count -= len(data)


def _dropped_text(counts: ExampleCounts) -> str:
    reasons = {"duplicate": "duplicates", "overlong": "longer than the context", "no_answer": "no answer left"}
    dropped = ", ".join(f"{count} {reasons[rule]}" for rule, count in counts.dropped.items() if count)
    return counted(counts.seen, "row") + (f"; dropped: {dropped}" if dropped else "")
