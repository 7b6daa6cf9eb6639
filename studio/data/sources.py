"""Reading a source: as a stream of documents (each a stream of text chunks), or as rows.

A source is a file, a folder (each file read by its suffix), a Hugging Face `datasets` folder (written by
`save_to_disk`: its `data-*.arrow` files) or a built-in corpus. A plain text file is one document. A row file
holds one row per document, whose text is the `data.text_field` column:

    .jsonl          JSON lines, read line by line
    .json           a JSON array of objects, streamed element by element (never parsed whole), or JSON lines;
                    any other .json (a package.json, a config) is one document of plain text
    .csv .tsv       a header row naming the columns (the csv module)
    .parquet        pyarrow, in batches of BATCH_ROWS rows, reading only the text column for documents
    .arrow          Arrow IPC streams (a datasets folder's files), batch by batch

Text, jsonl, json, csv and tsv files may be compressed: `.gz`, `.bz2`, `.xz` or `.zst` after the suffix (e.g.
`corpus.txt.zst`) decompresses them as they are read. Everything is read in bounded pieces (CHUNK_BYTES of a
text file, a line, a row, a batch), so a file larger than memory streams through; a document is an iterator of
text chunks and must be consumed before the next one is asked for.

Rows whose text is null or empty are skipped and counted (`ReadStats.empty_rows`), or refused with `data.strict`.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from studio.config import DataConfig
from studio.errors import StudioError
from studio.hub_cache import dataset_files, is_hub_name

BUILTIN_CORPORA = ("python-stdlib",)
CHUNK_BYTES = 1 << 20
BATCH_ROWS = 512  # rows of a parquet or arrow file converted to Python at a time
BINARY_SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes marks a file as binary
JSON_ROW_LIMIT = 64 << 20  # characters one element of a .json array may take before it is called broken
STDLIB_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON may escape them; they are not valid text

ROW_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
COLUMNAR = ("parquet", "arrow")  # compressed inside, read by pyarrow
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
ARCHIVES = (".zip", ".7z", ".rar", ".tar", ".tgz", ".lz4", ".br", ".lzma")  # refused as a source, by name
ROW_FILES = ".jsonl, .json, .csv, .tsv or .parquet files, or a datasets folder"


@dataclass
class ReadStats:
    """What reading a source met along the way; one per pass over the source."""

    files_read: int = 0
    binary_files_skipped: int = 0
    bytes_read: int = 0  # as stored on disk (compressed bytes of a compressed file)
    bytes_replaced: int = 0
    empty_rows: int = 0  # rows whose text is null or empty, skipped


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str  # the path relative to the source, as hashed into the fingerprint
    format: str  # "text" or a row format: jsonl, json, csv, tsv, parquet, arrow
    compression: str = ""  # "" or one of COMPRESSIONS

    @property
    def has_rows(self) -> bool:
        return self.format != "text"

    def rows(self, strict: bool, stats: ReadStats, column: str | None = None) -> Iterator[tuple[dict, str]]:
        """Every row of the file as a dict, with where it is (`file line N`, `file row N`). `column`: read only
        that one where the format stores columns apart (parquet, arrow); the other formats give whole rows."""
        if self.format in COLUMNAR:
            yield from _columnar_rows(self, stats, column)
        elif self.format in ("csv", "tsv"):
            yield from _delimited_rows(self, strict, stats)
        elif self.format == "json" and _first_character(self) == "[":
            yield from _json_array_rows(self, strict, stats)
        else:  # jsonl, and .json files of JSON lines (what `datasets`' to_json writes)
            yield from _jsonl_rows(self, strict, stats)


@dataclass(frozen=True)
class Source:
    location: str  # an absolute path, a hub dataset's name (ORG/NAME), or the name of a built-in corpus
    kind: str  # builtin | folder | datasets | a file's format (text, jsonl, json, csv, tsv, parquet, arrow)
    files: tuple[SourceFile, ...]
    text_field: str
    strict: bool
    # what rows pass through as they are read (studio.data.clean.CleaningRules.rows: redaction, near-duplicates,
    # contamination); None: every row as it is
    row_rules: Callable[[Iterator[tuple[dict, str]]], Iterator[tuple[dict, str]]] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(file.path.stat().st_size for file in self.files)

    def documents(self, stats: ReadStats) -> Iterator[Iterator[str]]:
        """Every document of the source in a fixed order, as an iterator of text chunks."""
        for file in self.files:
            if file.has_rows:
                stats.files_read += 1
                for record, where in file.rows(self.strict, stats, column=self.text_field):
                    text = row_text(record, self.text_field, where, self.strict, stats)
                    if text is not None:
                        yield _text_pieces(text)
            elif _looks_binary(file):
                if self.kind != "folder":
                    raise StudioError(
                        f"{file.path} looks binary (it has NUL bytes); give a text file, rows ({ROW_FILES}), "
                        "or a folder"
                    )
                stats.binary_files_skipped += 1
            else:
                stats.files_read += 1
                yield _text_chunks(file, self.strict, stats)

    def records(self, stats: ReadStats, wanted: str) -> Iterator[tuple[dict, str]]:
        """Every row of every file, with where it is; a plain text file is refused, `wanted` naming what rows
        the caller reads (e.g. "classification rows")."""
        rows = self._records(stats, wanted)
        yield from self.row_rules(rows) if self.row_rules else rows

    def _records(self, stats: ReadStats, wanted: str) -> Iterator[tuple[dict, str]]:
        for file in self.files:
            if not file.has_rows:
                raise StudioError(f"{file.path} is plain text, not rows; {wanted} come from {ROW_FILES}")
            stats.files_read += 1
            yield from file.rows(self.strict, stats)

    def first_row(self) -> Any:
        """The first row of its first file of rows (None: it has none), which tells what the rows are for."""
        first = next((file for file in self.files if file.has_rows), None)
        for record, _ in [] if first is None else first.rows(self.strict, ReadStats()):
            return record
        return None

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
    """Find the files behind `source`: a built-in corpus name, a file, a datasets folder or a folder."""
    if source in BUILTIN_CORPORA:
        return Source(source, "builtin", _stdlib_files(), data.text_field, data.strict)
    path = Path(source).expanduser().resolve()
    if path.is_dir() and (path / "state.json").is_file():
        return Source(str(path), "datasets", _datasets_files(path), data.text_field, data.strict)
    if path.is_dir():
        _refuse_dataset_dict(path)
        files = _folder_files(path, data.glob)
        if not files:
            raise StudioError(f"no files in {path} match the glob {data.glob!r}; change --glob")
        return Source(str(path), "folder", files, data.text_field, data.strict)
    if is_hub_name(source):  # a dataset of the hub, by name, from the local cache
        files = tuple(_source_file(file, file.name) for file in dataset_files(source))
        return Source(source, "folder", files, data.text_field, data.strict)
    if path.is_file():
        if path.suffix.lower() in ARCHIVES:
            raise StudioError(
                f"{path}: {path.suffix} files are not read; unpack it, or compress with gzip, bz2, xz or zstd "
                f"({' '.join(COMPRESSIONS)})"
            )
        file = _source_file(path, path.name)
        return Source(str(path), file.format, (file,), data.text_field, data.strict)
    raise StudioError(
        f"no such file or folder: {source}; give a text file, rows ({ROW_FILES}), a folder, "
        f"or {', '.join(BUILTIN_CORPORA)}"
    )


def source_fingerprint(source: str, data: DataConfig) -> str:
    return open_source(source, data).fingerprint()


def row_text(
    record: dict, field: str, where: str, strict: bool, stats: ReadStats, flag: str = "--text-field"
) -> str | None:
    """The text of a row under `field`; None for a null or empty one (skipped and counted, refused when strict).
    A row without the field, or with something else than text in it, is an error naming the row."""
    if field not in record:
        fields = ", ".join(map(str, record)) or "none"
        raise StudioError(f"{where} has no field {field!r} (its fields: {fields}); name the right one with {flag}")
    text = record[field]
    if text is None or text == "":
        if strict:
            state = "null" if text is None else "empty"
            raise StudioError(
                f"{where}: the text under {field!r} is {state}; fill or remove the row, or drop --strict to skip it"
            )
        stats.empty_rows += 1
        return None
    if not isinstance(text, str):
        raise StudioError(
            f"{where}: field {field!r} is {type(text).__name__}, not a string; fix the row or pick another {flag}"
        )
    return _without_lone_surrogates(text, strict, where, stats)


@dataclass
class RowsPreview:
    """The first rows of a source's first row file, for choosing its fields."""

    file: str
    columns: list[str]
    rows: list[dict[str, Any]]


def preview_rows(source: str, data: DataConfig, limit: int = 5) -> RowsPreview | None:
    """The columns and first `limit` rows of a file's or a datasets folder's first rows; None for plain text and
    anything else (a folder is not walked: the preview follows each keystroke of a path)."""
    path = Path(source).expanduser()
    if not (path.is_file() or (path / "state.json").is_file()):
        return None
    found = open_source(source, data)
    first = next((file for file in found.files if file.has_rows), None)
    if first is None:
        return None
    rows = []
    for record, _ in first.rows(strict=False, stats=ReadStats()):
        rows.append(record)
        if len(rows) == limit:
            break
    columns = list(dict.fromkeys(str(key) for row in rows for key in row))  # in order of first appearance
    return RowsPreview(first.name, columns, rows)


# ---- finding files ------------------------------------------------------------------------------
def _source_file(path: Path, name: str) -> SourceFile:
    """A file read by its suffix: `.gz` etc. name the compression, the suffix before it the format."""
    suffix = path.suffix.lower()
    compression = suffix if suffix in COMPRESSIONS else ""
    inner = Path(path.stem).suffix.lower() if compression else suffix
    file_format = ROW_FORMATS.get(inner, "text")
    if compression and file_format in COLUMNAR:
        raise StudioError(f"{path}: {file_format} files compress inside themselves; give it uncompressed")
    file = SourceFile(path, name, file_format, compression)
    if file_format == "json" and not _json_holds_rows(file):  # package.json, a config: one document of text
        return dataclasses.replace(file, format="text")
    return file


def _stdlib_files() -> tuple[SourceFile, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in STDLIB_SKIPPED_DIRS]  # not walked
        for name in names:
            if name.endswith(".py"):
                path = Path(folder, name)
                files.append(SourceFile(path, path.relative_to(root).as_posix(), "text"))
    return tuple(sorted(files, key=lambda file: file.name))


def _folder_files(folder: Path, glob: str) -> tuple[SourceFile, ...]:
    files = (_source_file(path, path.relative_to(folder).as_posix()) for path in folder.glob(glob) if path.is_file())
    return tuple(sorted(files, key=lambda file: file.name))


def _datasets_files(folder: Path) -> tuple[SourceFile, ...]:
    """The arrow files of a `datasets` folder, in the order its state.json lists them."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StudioError(
            f"{folder / 'state.json'} does not list the dataset's files ({error}); save the dataset again"
        ) from None
    missing = [name for name in names if not (folder / name).is_file()]
    if missing or not names:
        raise StudioError(f"{folder}: the datasets folder lacks {', '.join(missing) or 'data files'}; save it again")
    return tuple(SourceFile(folder / name, name, "arrow") for name in names)


def _refuse_dataset_dict(folder: Path) -> None:
    """A DatasetDict's folder holds one datasets folder per split: the person picks the split."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(path.name for path in folder.iterdir() if (path / "state.json").is_file())
        raise StudioError(
            f"{folder} holds the splits {', '.join(splits) or '(none)'} of a datasets DatasetDict; "
            f"give one split's folder, e.g. {folder / (splits[0] if splits else 'train')}"
        )


# ---- bytes, decompressed and counted -----------------------------------------------------------
class _CountedReader(io.RawIOBase):
    """A file's raw bytes, each read counted into stats.bytes_read (progress, against the size on disk)."""

    def __init__(self, handle: BinaryIO, stats: ReadStats) -> None:
        self.handle, self.stats = handle, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.handle.readinto(buffer)
        self.stats.bytes_read += count
        return count


@contextmanager
def _opened(file: SourceFile, stats: ReadStats) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed by its suffix; a broken compressed stream is one line."""
    with open(file.path, "rb") as handle:
        counted = _CountedReader(handle, stats)
        if not file.compression:
            yield io.BufferedReader(counted, CHUNK_BYTES)
            return
        with _unreadable_as_one_line(file.path, f"{file.compression} file", _decompression_errors()):
            yield _decompressed(counted, file.compression)


def _decompressed(raw: io.RawIOBase, compression: str) -> BinaryIO:
    if compression == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if compression == ".bz2":
        return bz2.BZ2File(raw)
    if compression == ".xz":
        return lzma.LZMAFile(raw)
    import zstandard  # only for .zst files

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw), CHUNK_BYTES)


def _decompression_errors() -> tuple[type[Exception], ...]:
    import zstandard

    return (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)


@contextmanager
def _unreadable_as_one_line(path: Path, what: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    try:
        yield
    except errors as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StudioError(f"{path} is not a readable {what} ({reason}); check the file or write it again") from None


def _looks_binary(file: SourceFile) -> bool:
    with _opened(file, ReadStats()) as stream:
        return b"\0" in stream.read(BINARY_SNIFF_BYTES)


# ---- text ---------------------------------------------------------------------------------------
def _text_chunks(file: SourceFile, strict: bool, stats: ReadStats) -> Iterator[str]:
    """The file's text, CHUNK_BYTES at a time; a character split across two reads is decoded whole."""
    with _opened(file, stats) as stream:
        undecoded, offset = b"", 0  # offset: where `undecoded` starts in the (decompressed) bytes
        while True:
            raw = stream.read(CHUNK_BYTES)
            data = undecoded + raw
            text, used = _decode_utf8(data, final=not raw, strict=strict, where=file.path, offset=offset, stats=stats)
            undecoded, offset = data[used:], offset + used
            if text:
                yield text
            if not raw:
                return


def _text_pieces(text: str) -> Iterator[str]:
    """A row's text in pieces of CHUNK_BYTES characters, as a text file's is read: cleaning and encoding then hold
    a piece at a time, not a whole long row (a 50 MB row took 10 times a 50 MB text file's memory)."""
    return (text[start : start + CHUNK_BYTES] for start in range(0, len(text), CHUNK_BYTES))


def _decoded_lines(file: SourceFile, strict: bool, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """Each line of the file with its number (from 1), line ends kept."""
    with _opened(file, stats) as stream:
        offset = 0
        for line_number, raw in enumerate(stream, start=1):
            line, _ = _decode_utf8(raw, final=True, strict=strict, where=file.path, offset=offset, stats=stats)
            offset += len(raw)
            yield line_number, line


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


# ---- JSON ---------------------------------------------------------------------------------------
def _jsonl_rows(file: SourceFile, strict: bool, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    """Every JSON object of a JSON-lines file, with `file line N`; blank lines are skipped."""
    for line_number, line in _decoded_lines(file, strict, stats):
        if line.strip():
            where = f"{file.path} line {line_number}"
            yield _json_object(line, where), where


def _json_holds_rows(file: SourceFile) -> bool:
    """Whether a .json file is rows: an array (it opens with `[`), or JSON lines (its first line is a whole
    object); a single pretty-printed object, or anything else, is not."""
    if _first_character(file) == "[":
        return True
    for _, line in _decoded_lines(file, strict=False, stats=ReadStats()):
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                return False
    return False


def _first_character(file: SourceFile) -> str:
    """The first character that is not blank: `[` opens a JSON array."""
    for chunk in _text_chunks(file, strict=False, stats=ReadStats()):
        if stripped := chunk.lstrip():
            return stripped[0]
    return ""


def _json_array_rows(file: SourceFile, strict: bool, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    """Each element of a JSON array (the file starts with `[`), decoded as the text streams in (json's raw_decode
    at each element), so only the element being read and one chunk are held; `file row N`."""
    decoder, chunks = json.JSONDecoder(), _text_chunks(file, strict, stats)
    text = next(chunks, "").lstrip()[1:]  # after the `[`
    position, row = 0, 0
    while True:
        position = _skip_blanks(text, position)
        problem = "it ends before the array closes"
        if position < len(text):
            if text[position] == "]":
                return
            try:
                value, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                problem = error.msg  # or the element goes on in the next chunk
            else:
                row += 1
                yield _checked_object(value, f"{file.path} row {row}"), f"{file.path} row {row}"
                continue
        more = next(chunks, None)
        if more is None or len(text) - position > JSON_ROW_LIMIT:
            raise StudioError(f"{file.path} row {row + 1} is not valid JSON ({problem}); fix the file")
        text, position = text[position:] + more, 0  # what was decoded goes


def _skip_blanks(text: str, position: int) -> int:
    """Past blanks and the commas between elements."""
    while position < len(text) and (text[position].isspace() or text[position] == ","):
        position += 1
    return position


def _json_object(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise StudioError(f"{where} is not valid JSON ({error.msg}); fix or remove that line") from None
    return _checked_object(record, where)


def _checked_object(record: Any, where: str) -> dict:
    if not isinstance(record, dict):
        raise StudioError(f"{where} is a JSON {type(record).__name__}, not an object; each row must be an object")
    return record


def _without_lone_surrogates(text: str, strict: bool, where: str, stats: ReadStats) -> str:
    """JSON escapes like \\ud800 decode to lone surrogates, which no tokenizer can encode."""
    cleaned, count = LONE_SURROGATE.subn("\ufffd", text)
    if count and strict:
        raise StudioError(
            f"{where}: the text has an unpaired surrogate escape; fix the line or drop --strict to replace it"
        )
    stats.bytes_replaced += count
    return cleaned


# ---- csv and tsv --------------------------------------------------------------------------------
def _delimited_rows(file: SourceFile, strict: bool, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    """Each row after the header as {column: text}; `file line N` (the line the row ends on)."""
    csv.field_size_limit(max(csv.field_size_limit(), JSON_ROW_LIMIT))  # documents are longer than 128 KiB
    lines = (line for _, line in _decoded_lines(file, strict, stats))
    reader = csv.DictReader(lines, delimiter="\t" if file.format == "tsv" else ",")
    with _unreadable_as_one_line(file.path, file.format.upper() + " file", (csv.Error,)):
        for record in reader:
            yield record, f"{file.path} line {reader.line_num}"


# ---- parquet and arrow (pyarrow) ----------------------------------------------------------------
def _columnar_rows(file: SourceFile, stats: ReadStats, column: str | None) -> Iterator[tuple[dict, str]]:
    """Each row of a parquet or arrow file, BATCH_ROWS converted to Python at a time; `file row N`."""
    import pyarrow  # only for these files: the studio starts without it

    row = 0
    with _unreadable_as_one_line(file.path, f"{file.format} file", (pyarrow.ArrowException, OSError)):
        batches = (
            _parquet_batches(file, stats, column) if file.format == "parquet" else _arrow_batches(file, stats, column)
        )
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield record, f"{file.path} row {row}"


def _parquet_batches(file: SourceFile, stats: ReadStats, column: str | None) -> Iterator[Any]:
    """Record batches of `column` (or all). Column chunks are read through a CHUNK_BYTES buffer and not
    pre-buffered (pyarrow's default pre-buffers whole row groups, ahead; benchmarks/parquet_prepare_memory.py
    measures the difference), so memory is bounded by a batch, not by the file or its row groups. Progress: each
    batch's share of the rows."""
    import pyarrow.parquet

    parquet = pyarrow.parquet.ParquetFile(file.path, buffer_size=CHUNK_BYTES, pre_buffer=False)
    columns = _projection(parquet.schema_arrow.names, column, file.path)
    size, total, done = file.path.stat().st_size, max(parquet.metadata.num_rows, 1), 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        before = size * done // total
        done += batch.num_rows
        stats.bytes_read += size * done // total - before
        yield batch


def _arrow_batches(file: SourceFile, stats: ReadStats, column: str | None) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream (what `datasets` writes), read one by one from the file."""
    import pyarrow

    with _opened(file, stats) as stream:
        reader = pyarrow.ipc.open_stream(stream)
        columns = _projection(reader.schema.names, column, file.path)
        for batch in reader:
            yield batch.select(columns) if columns else batch


def _projection(names: list[str], column: str | None, path: Path) -> list[str] | None:
    if column is not None and column not in names:
        raise StudioError(
            f"{path} has no column {column!r} (its columns: {', '.join(names)}); name the right one with --text-field"
        )
    return None if column is None else [column]
