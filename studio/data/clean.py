"""Cleaning documents: Unicode NFC, tidy whitespace, drop empty, short, long and duplicate documents; and the
privacy and contamination rules (`CleaningRules`): personal data and secrets redacted (studio.redaction),
near-duplicates (studio.data.near_dedup) and documents sharing an n-gram with evaluation rows
(studio.data.contamination) dropped.

`clean_text` says what cleaning means for a whole document. `StreamCleaner` gives the same result
a chunk at a time, so a document never has to sit in memory whole. Which documents to keep needs
the whole cleaned document (its length and hash), so `scan` makes one pass that decides, keeping
only a keep flag per document and the hashes of kept ones; later passes stream `kept_documents`,
redacted again as they stream (the same text: redaction depends on the document alone).

Rows (chat, instruction, preference, prompt and classification rows) go through the same rules as they are read
(`CleaningRules.rows`): each string of a row redacted where it is (roles, labels and split names kept), the row's
strings together checked for contamination and near-duplicates.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from studio.config import DataConfig
from studio.data.contamination import EvaluationNgrams, Matcher, row_strings
from studio.data.meta import CleaningFacts
from studio.data.near_dedup import NearDuplicates, Shingler, snippet
from studio.data.sources import ReadStats, Source
from studio.redaction import PREVIEW_SIZE, RedactionFacts, Redactor, StreamRedactor, redaction_kinds

TRAILING_BLANKS = re.compile(r"[ \t]+(?=\n)")
NEWLINE_RUNS = re.compile(r"\n{3,}")
LONG_LINE = 1 << 16  # a line longer than this many characters is cut inside the line
DROP_RULES = ("empty", "too_short", "too_long", "duplicate")  # always counted; contaminated, near_duplicate when on
ROW_STRUCTURE = ("role", "from", "split")  # with data.label_field: strings of a row that are never redacted


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


# ---- privacy and contamination -----------------------------------------------------------------
class CleaningRules:
    """data.redact, data.near_dedup and data.decontaminate for one prepare: what they found and dropped is counted
    here (`facts`, and `dropped` for rows); `scratch` is where the near-duplicate index is kept (the build folder)."""

    def __init__(self, data: DataConfig, scratch: Path | None = None) -> None:
        self.data = data
        self.keep_keys = frozenset((*ROW_STRUCTURE, data.label_field))
        self.near = NearDuplicates(data.near_dedup, scratch) if data.near_dedup else None
        self.evaluation = EvaluationNgrams(data.decontaminate, data.decontaminate_ngram) if data.decontaminate else None
        self.facts = CleaningFacts()
        self.redacted: Counter = Counter()
        self.contaminating: set[str] = set()
        self.dropped: Counter = Counter()  # rows dropped by these rules (the scan counts documents itself)

    @property
    def on(self) -> bool:
        """Whether any of the rules is asked for (else documents and rows pass as they are)."""
        return bool(self.data.redact or self.near or self.evaluation)

    def redactor(self) -> Redactor | None:
        return redactor_of(self.data)

    def document(self, where: str) -> DocumentCheck:
        return DocumentCheck(self, where)

    def rows(self, records: Iterable[tuple[dict, str]]) -> Iterator[tuple[dict, str]]:
        """The rows redacted field by field, without those the rules drop (counted in `dropped`)."""
        for record, where in records:
            check = self.document(where)
            if check.redactor:
                check.redactor.new_document(where)
                record = check.redactor.redact_row(record, self.keep_keys)
            check.feed("\n".join(row_strings(record, self.keep_keys)))
            rule = check.verdict()
            if rule:
                self.dropped[rule] += 1
                continue
            yield record, where

    def finish(self) -> CleaningFacts:
        """The facts, once every document has been checked; the near-duplicate index is removed."""
        if self.near:
            self.near.close()
            self.facts.near_duplicates = self.near.pairs
        self.facts.redacted = dict(self.redacted)
        self.facts.contaminating_rows = len(self.contaminating)
        return self.facts


class DocumentCheck:
    """One document (or row) through the rules: its pieces redacted, its words matched against the evaluation
    n-grams, its shingles hashed; `verdict` once it has all streamed through."""

    def __init__(self, rules: CleaningRules, where: str) -> None:
        self.rules, self.where = rules, where
        self.redactor = rules.redactor()
        self.matcher = Matcher(rules.evaluation) if rules.evaluation else None
        self.shingler = Shingler(rules.data.near_dedup_shingles) if rules.near else None
        self.minhash = rules.near.minhash() if rules.near else None
        self.start = ""  # the document's first characters, to name it in a near-duplicate pair

    def pieces(self, pieces: Iterable[str]) -> Iterable[str]:
        if self.redactor:
            self.redactor.new_document(self.where)
            pieces = StreamRedactor(self.redactor).pieces(pieces)
        for piece in pieces:
            self.feed(piece)
            yield piece

    def feed(self, text: str) -> None:
        if self.matcher:
            self.matcher.feed(text)
        if self.shingler:
            self.minhash.update_batch(self.shingler.feed(text))
            self.start = self.start or snippet(text)

    def verdict(self) -> str | None:
        """ "contaminated", "near_duplicate" or None (kept: its redactions counted, it joins the index)."""
        rules, facts = self.rules, self.rules.facts
        if self.matcher and self.matcher.match:
            rules.contaminating.add(self.matcher.match)
            if len(facts.contaminated) < PREVIEW_SIZE:
                facts.contaminated.append({"dropped": self.where, "matched": self.matcher.match})
            return "contaminated"
        if self.shingler:
            self.minhash.update_batch(self.shingler.finish())
            if rules.near.check(self.minhash.hashvalues, f"{self.where}: {self.start}"):
                return "near_duplicate"
        if self.redactor:
            rules.redacted.update(self.redactor.facts.counts)
            room = PREVIEW_SIZE - len(facts.redactions)
            facts.redactions += self.redactor.facts.preview[: max(room, 0)]
        return None


# ---- deciding which documents to keep ----------------------------------------------------------
@dataclass
class Scan:
    """The outcome of the scan pass: which documents are kept, and why the others are not."""

    keep: bytearray = field(default_factory=bytearray)  # one flag per document, in source order
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_RULES, 0))
    characters: int = 0  # in kept documents
    charset: set[str] = field(default_factory=set)  # of kept documents, when asked for
    read: ReadStats = field(default_factory=ReadStats)
    cleaning: CleaningFacts = field(default_factory=CleaningFacts)

    @property
    def seen(self) -> int:
        return len(self.keep)

    @property
    def kept(self) -> int:
        return self.seen - sum(self.dropped.values())


def scan(
    source: Source,
    data: DataConfig,
    collect_charset: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rules: CleaningRules | None = None,
) -> Scan:
    """Clean every document once, decide which to keep, and count what is kept."""
    rules = rules or CleaningRules(data)
    result, kept_hashes = Scan(), set()
    total_bytes = source.total_bytes
    for number, chunks in enumerate(source.documents(result.read), 1):
        length, visible, charset = 0, False, set()
        hasher = hashlib.blake2b(digest_size=16)
        check = rules.document(f"document {number}")
        for piece in check.pieces(clean_chunks(chunks)):
            length += len(piece)
            visible = visible or not piece.isspace()
            hasher.update(piece.encode("utf-8"))
            if collect_charset:
                charset.update(piece)
            if progress:
                progress(result.read.bytes_read, total_bytes)
        digest = hasher.digest()
        rule = _drop_rule(length, visible, digest, kept_hashes, data) or check.verdict()
        result.keep.append(rule is None)
        if rule:
            result.dropped[rule] = result.dropped.get(rule, 0) + 1
            continue
        if data.dedup:
            kept_hashes.add(digest)
        result.characters += length
        result.charset |= charset
    result.cleaning = rules.finish()
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


def redactor_of(data: DataConfig) -> Redactor | None:
    """A redactor of the kinds data.redact names, or None when it names none."""
    kinds = redaction_kinds(data.redact)
    return Redactor(kinds, data.redact_numbered, RedactionFacts()) if kinds else None


def kept_documents(source: Source, scan_result: Scan, data: DataConfig) -> Iterator[Iterable[str]]:
    """The cleaned (and redacted) pieces of each kept document, in source order; dropped ones are never read.
    Redacted again as they stream: the same text as the scan's, whose counts stand."""
    for keep, chunks in zip(scan_result.keep, source.documents(ReadStats())):
        if keep:
            redactor = redactor_of(data)
            yield StreamRedactor(redactor).pieces(clean_chunks(chunks)) if redactor else clean_chunks(chunks)
