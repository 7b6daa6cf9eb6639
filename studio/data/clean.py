"""Cleaning documents: Unicode NFC, tidy whitespace, drop empty, short, long and duplicate documents.

`clean_text` says what cleaning means for a whole document. `StreamCleaner` gives the same result
a chunk at a time, so a document never has to sit in memory whole. Which documents to keep needs
the whole cleaned document (its length and hash), so `scan` makes one pass that decides, keeping
only a keep flag per document and the hashes of kept ones; later passes stream `kept_documents`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from studio.config import DataConfig
from studio.data.sources import ReadStats, Source

TRAILING_BLANKS = re.compile(r"[ \t]+(?=\n)")
NEWLINE_RUNS = re.compile(r"\n{3,}")
LONG_LINE = 1 << 16  # a line longer than this many characters is cut inside the line
DROP_RULES = ("empty", "too_short", "too_long", "duplicate")


def clean_text(text: str) -> str:
    """A whole document, cleaned: NFC, LF line ends, no blanks at line ends, at most one empty line in a row."""
    text = _clean_lines(text)
    return text.rstrip(" \t")


def _clean_lines(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = TRAILING_BLANKS.sub("", text)
    return NEWLINE_RUNS.sub("\n\n", text)


class StreamCleaner:
    """Cleans one document chunk by chunk; the pieces joined equal clean_text(whole document).

    Text is cleaned up to a cut where cleaning does not depend on what follows (after a line
    break, see `_cut`); the rest waits for the next chunk. Newlines at the end of a piece are held
    back too, so a run of newlines across pieces is collapsed as one run, and every piece but the
    first starts at a line break: good places to cut for the tokenizer as well.
    """

    def __init__(self) -> None:
        self.waiting = ""  # raw text after the last cut
        self.held_newlines = 0  # cleaned newlines not yet given out (at most 2)

    def feed(self, chunk: str) -> str:
        text = self.waiting + chunk
        cut = _cut(text)
        self.waiting = text[cut:]
        return self._give_out(_clean_lines(text[:cut]))

    def finish(self) -> str:
        piece = self._give_out(clean_text(self.waiting))
        piece += "\n" * self.held_newlines  # the newlines that end the document
        self.waiting, self.held_newlines = "", 0
        return piece

    def _give_out(self, cleaned: str) -> str:
        body = cleaned.lstrip("\n")
        run = min(2, self.held_newlines + len(cleaned) - len(body))
        if not body:
            self.held_newlines = run
            return ""
        content = body.rstrip("\n")
        self.held_newlines = len(body) - len(content)
        return "\n" * run + content


def _cut(text: str) -> int:
    """Where text can be cut so that cleaning both sides apart equals cleaning them together.

    After a line break, as long as a CR is not followed by a LF we have yet to see. A line too
    long to wait for is cut before a character that is not blank and that no Unicode
    normalisation merges into the character before it: ASCII or a letter of category Lo
    (outside the Hangul jamo, which compose).
    """
    after_break = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
    if len(text) - after_break <= LONG_LINE:
        return after_break
    for position in range(len(text) - 1, max(after_break, len(text) - 1024), -1):
        if _safe_to_cut_before(text[position]):
            return position
    return after_break


def _safe_to_cut_before(char: str) -> bool:
    if char.isascii():
        return char not in " \t\r\n"
    return unicodedata.category(char) == "Lo" and not "\u1100" <= char <= "\u11ff"


def clean_chunks(chunks: Iterable[str]) -> Iterator[str]:
    """The cleaned text of one document, piece by piece (no empty pieces)."""
    cleaner = StreamCleaner()
    for chunk in chunks:
        if piece := cleaner.feed(chunk):
            yield piece
    if piece := cleaner.finish():
        yield piece


# ---- deciding which documents to keep ----------------------------------------------------------
@dataclass
class Scan:
    """The outcome of the scan pass: which documents are kept, and why the others are not."""

    keep: bytearray = field(default_factory=bytearray)  # one flag per document, in source order
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_RULES, 0))
    characters: int = 0  # in kept documents
    charset: set[str] = field(default_factory=set)  # of kept documents, when asked for
    read: ReadStats = field(default_factory=ReadStats)

    @property
    def seen(self) -> int:
        return len(self.keep)

    @property
    def kept(self) -> int:
        return self.seen - sum(self.dropped.values())


def scan(
    source: Source, data: DataConfig, collect_charset: bool = False, progress: Callable[[int, int], None] | None = None
) -> Scan:
    """Clean every document once, decide which to keep, and count what is kept."""
    result, kept_hashes = Scan(), set()
    total_bytes = source.total_bytes
    for chunks in source.documents(result.read):
        length, visible, charset = 0, False, set()
        hasher = hashlib.blake2b(digest_size=16)
        for piece in clean_chunks(chunks):
            length += len(piece)
            visible = visible or not piece.isspace()
            hasher.update(piece.encode("utf-8"))
            if collect_charset:
                charset.update(piece)
            if progress:
                progress(result.read.bytes_read, total_bytes)
        digest = hasher.digest()
        rule = _drop_rule(length, visible, digest, kept_hashes, data)
        result.keep.append(rule is None)
        if rule:
            result.dropped[rule] += 1
            continue
        if data.dedup:
            kept_hashes.add(digest)
        result.characters += length
        result.charset |= charset
    return result


def _drop_rule(length: int, visible: bool, digest: bytes, kept_hashes: set[bytes], data: DataConfig) -> str | None:
    if not visible:
        return "empty"
    if length < data.min_chars:
        return "too_short"
    if data.max_chars and length > data.max_chars:
        return "too_long"
    if data.dedup and digest in kept_hashes:
        return "duplicate"
    return None


def kept_documents(source: Source, scan_result: Scan) -> Iterator[Iterator[str]]:
    """The cleaned pieces of each kept document, in source order; dropped ones are never read."""
    for keep, chunks in zip(scan_result.keep, source.documents(ReadStats())):
        if keep:
            yield clean_chunks(chunks)
