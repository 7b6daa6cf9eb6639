"""Reading a source as a stream of documents, each document a stream of text chunks.

A source is a `.txt` file (one document), a `.jsonl` file (one document per line), a folder (one
document per file, `.jsonl` files inside read as jsonl) or a built-in corpus. Files are read in
chunks of CHUNK_BYTES, so a file larger than memory streams through; a document is an iterator of
text chunks and must be consumed before the next one is asked for.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from studio.config import DataConfig
from studio.errors import StudioError

BUILTIN_CORPORA = ("python-stdlib",)
CHUNK_BYTES = 1 << 20
BINARY_SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes marks a file as binary
STDLIB_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON may escape them; they are not valid text


@dataclass
class ReadStats:
    """What reading a source met along the way; one per pass over the source."""

    files_read: int = 0
    binary_files_skipped: int = 0
    bytes_read: int = 0
    bytes_replaced: int = 0


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str  # the path relative to the source, as hashed into the fingerprint
    jsonl: bool


@dataclass(frozen=True)
class Source:
    location: str  # an absolute path, or the name of a built-in corpus
    kind: str  # builtin | text | jsonl | folder
    files: tuple[SourceFile, ...]
    text_field: str
    strict: bool

    @property
    def total_bytes(self) -> int:
        return sum(file.path.stat().st_size for file in self.files)

    def documents(self, stats: ReadStats) -> Iterator[Iterator[str]]:
        """Every document of the source in a fixed order, as an iterator of text chunks."""
        for file in self.files:
            if _looks_binary(file.path):
                if self.kind != "folder":
                    raise StudioError(
                        f"{file.path} looks binary (it has NUL bytes); give a text file, a .jsonl file, or a folder"
                    )
                stats.binary_files_skipped += 1
                continue
            stats.files_read += 1
            if file.jsonl:
                yield from _jsonl_documents(file.path, self.text_field, self.strict, stats)
            else:
                yield _text_chunks(file.path, self.strict, stats)

    def fingerprint(self, progress: Callable[[int, int], None] | None = None) -> str:
        """A hash of every file's relative path and raw bytes: the same content gives the same hash."""
        digest = hashlib.blake2b(digest_size=16)
        total, done = self.total_bytes, 0
        for file in self.files:
            digest.update(f"{file.name}\0{file.path.stat().st_size}\0".encode())
            with open(file.path, "rb") as handle:
                while raw := handle.read(CHUNK_BYTES):
                    digest.update(raw)
                    done += len(raw)
                    if progress:
                        progress(done, total)
        return digest.hexdigest()


def open_source(source: str, data: DataConfig) -> Source:
    """Find the files behind `source`: a built-in corpus name, a file, or a folder."""
    if source in BUILTIN_CORPORA:
        return Source(source, "builtin", _stdlib_files(), data.text_field, data.strict)
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        files = _folder_files(path, data.glob)
        if not files:
            raise StudioError(f"no files in {path} match the glob {data.glob!r}; change --glob")
        return Source(str(path), "folder", files, data.text_field, data.strict)
    if path.is_file():
        kind = "jsonl" if path.suffix == ".jsonl" else "text"
        return Source(str(path), kind, (SourceFile(path, path.name, kind == "jsonl"),), data.text_field, data.strict)
    raise StudioError(
        f"no such file or folder: {source}; give a .txt/.jsonl file, a folder, or {', '.join(BUILTIN_CORPORA)}"
    )


def source_fingerprint(source: str, data: DataConfig) -> str:
    return open_source(source, data).fingerprint()


# ---- finding files ------------------------------------------------------------------------------
def _stdlib_files() -> tuple[SourceFile, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in STDLIB_SKIPPED_DIRS]  # not walked
        for name in names:
            if name.endswith(".py"):
                path = Path(folder, name)
                files.append(SourceFile(path, path.relative_to(root).as_posix(), jsonl=False))
    return tuple(sorted(files, key=lambda file: file.name))


def _folder_files(folder: Path, glob: str) -> tuple[SourceFile, ...]:
    files = (
        SourceFile(path, path.relative_to(folder).as_posix(), path.suffix == ".jsonl")
        for path in folder.glob(glob)
        if path.is_file()
    )
    return tuple(sorted(files, key=lambda file: file.name))


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as handle:
        return b"\0" in handle.read(BINARY_SNIFF_BYTES)


# ---- text files ---------------------------------------------------------------------------------
def _text_chunks(path: Path, strict: bool, stats: ReadStats) -> Iterator[str]:
    """The file's text, CHUNK_BYTES at a time; a character split across two reads is decoded whole."""
    with open(path, "rb") as handle:
        undecoded, offset = b"", 0  # offset: where `undecoded` starts in the file
        while True:
            raw = handle.read(CHUNK_BYTES)
            stats.bytes_read += len(raw)
            data = undecoded + raw
            text, used = _decode_utf8(data, final=not raw, strict=strict, where=path, offset=offset, stats=stats)
            undecoded, offset = data[used:], offset + used
            if text:
                yield text
            if not raw:
                return


def _decode_utf8(data: bytes, final: bool, strict: bool, where: Path, offset: int, stats: ReadStats) -> tuple[str, int]:
    """Decode UTF-8, replacing (and counting) invalid bytes or refusing them when strict.

    Returns the text and how many bytes it used: unless `final`, an incomplete character at the
    end is left for the next call. Replacement matches bytes.decode(errors="replace").
    """
    view, parts, start = memoryview(data), [], 0
    while True:
        try:
            text, used = codecs.utf_8_decode(view[start:], "strict", final)
            parts.append(text)
            return "".join(parts), start + used
        except UnicodeDecodeError as error:
            if strict:
                raise StudioError(
                    f"{where}: invalid UTF-8 at byte {offset + start + error.start}; "
                    "fix the file or drop --strict to replace bad bytes"
                ) from None
            parts.append(codecs.utf_8_decode(view[start : start + error.start], "strict", True)[0])
            parts.append("\ufffd")
            stats.bytes_replaced += error.end - error.start
            start += error.end


# ---- jsonl files --------------------------------------------------------------------------------
def _jsonl_documents(path: Path, text_field: str, strict: bool, stats: ReadStats) -> Iterator[Iterator[str]]:
    for record, where in jsonl_records(path, strict, stats):
        text = _jsonl_text(record, text_field, where)
        yield iter((_without_lone_surrogates(text, strict, where, stats),))


def jsonl_records(path: Path, strict: bool, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    """Every JSON object of a .jsonl file, with where it is (`file line N`); blank lines are skipped."""
    with open(path, "rb") as handle:
        offset = 0
        for line_number, raw in enumerate(handle, start=1):
            stats.bytes_read += len(raw)
            line, _ = _decode_utf8(raw, final=True, strict=strict, where=path, offset=offset, stats=stats)
            offset += len(raw)
            if line.strip():
                where = f"{path} line {line_number}"
                yield _json_object(line, where), where


def _json_object(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise StudioError(f"{where} is not valid JSON ({error.msg}); fix or remove that line") from None
    if not isinstance(record, dict):
        raise StudioError(f"{where} is a JSON {type(record).__name__}, not an object; each line must be an object")
    return record


def _jsonl_text(record: dict, text_field: str, where: str) -> str:
    if text_field not in record:
        fields = ", ".join(record) or "none"
        raise StudioError(
            f"{where} has no field {text_field!r} (its fields: {fields}); name the right one with --text-field"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise StudioError(
            f"{where}: field {text_field!r} is {type(text).__name__}, not a string; "
            "fix the line or pick another --text-field"
        )
    return text


def _without_lone_surrogates(text: str, strict: bool, where: str, stats: ReadStats) -> str:
    """JSON escapes like \\ud800 decode to lone surrogates, which no tokenizer can encode."""
    cleaned, count = LONE_SURROGATE.subn("\ufffd", text)
    if count and strict:
        raise StudioError(
            f"{where}: the text has an unpaired surrogate escape; fix the line or drop --strict to replace it"
        )
    stats.bytes_replaced += count
    return cleaned
