"""Sources beyond txt and jsonl: compressed text and rows, JSON arrays, csv, tsv, parquet, `datasets` folders.

Each row format prepares to the same tokens as the same rows in jsonl; null and empty texts are skipped and
counted, refused in one line with --strict; classification and chat rows read the same formats."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from studio.config import DataConfig
from studio.data import prepare_dataset, sources
from studio.data.prepare import PretrainedTokenizer, Purpose
from studio.data.sources import ReadStats, open_source, preview_rows
from studio.data.tokenizer import EOT, train_char
from studio.errors import StudioError

TEXTS = ["first document, plain.", None, "second — ünïcode 你好", "", "third\nwith two lines"]
ROWS = [{"id": index, "text": text} for index, text in enumerate(TEXTS)]
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress, ".zst": zstandard.compress}


@pytest.fixture(autouse=True)
def home(studio_home):
    return studio_home


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def write_delimited(path: Path, rows: list[dict], delimiter: str) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)  # None is written as an empty cell
    return path


def write_datasets_folder(folder: Path, rows: list[dict]) -> Path:
    """What `datasets`' save_to_disk writes: an Arrow IPC stream, dataset_info.json and state.json."""
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    (folder / "dataset_info.json").write_text(json.dumps({"features": {name: {} for name in rows[0]}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}], "_split": None}))
    return folder


def write_rows(path: Path, rows: list[dict]) -> Path:
    """The rows in the format path's suffixes name."""
    suffixes = "".join(path.suffixes)
    if suffixes.startswith(".jsonl"):
        path.write_bytes(COMPRESS.get(path.suffix, bytes)(jsonl_bytes(rows)))
    elif suffixes == ".json":
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    elif suffixes in (".csv", ".tsv"):
        write_delimited(path, rows, "," if suffixes == ".csv" else "\t")
    elif suffixes == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    else:
        write_datasets_folder(path, rows)
    return path


def char_dataset(source: Path, **options):
    return prepare_dataset(DataConfig(source=str(source), tokenizer="char", val_fraction=0.3, **options))


@pytest.mark.parametrize(
    "name",
    ["rows.jsonl.gz", "rows.jsonl.bz2", "rows.jsonl.zst", "rows.json", "rows.csv", "rows.tsv", "rows.parquet", "ds"],
)
def test_each_row_format_prepares_like_the_same_rows_in_jsonl(tmp_path, name):
    reference = char_dataset(write_rows(tmp_path / "reference.jsonl", ROWS)).meta
    meta = char_dataset(write_rows(tmp_path / name, ROWS)).meta
    assert meta.tokens == reference.tokens and meta.characters == reference.characters
    assert meta.documents.kept == 3 and meta.empty_rows == reference.empty_rows == 2


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_compressed_text_prepares_like_the_plain_file(tmp_path, suffix):
    text = "".join(f"line {index} of a compressed corpus ✓\n" for index in range(200))
    plain = tmp_path / "corpus.txt"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / f"packed.txt{suffix}"
    packed.write_bytes(COMPRESS[suffix](text.encode()))
    dataset = char_dataset(packed)
    assert dataset.meta.tokens == char_dataset(plain).meta.tokens and dataset.name == "packed-char"
    assert open_source(str(packed), DataConfig()).kind == "text"


def test_a_json_file_of_json_lines_reads_as_jsonl(tmp_path):
    path = tmp_path / "lines.json"  # what datasets' to_json writes
    path.write_bytes(jsonl_bytes(ROWS))
    documents = ["".join(chunks) for chunks in open_source(str(path), DataConfig()).documents(ReadStats())]
    assert documents == [text for text in TEXTS if text]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 1 << 20])
def test_a_json_array_streams_across_chunks(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk_bytes)
    path = write_rows(tmp_path / "rows.json", ROWS + [{"text": 'a ] and a [ and a " inside'}])
    found = open_source(str(path), DataConfig())
    assert [record for record, _ in found.records(ReadStats(), "rows")] == ROWS + [
        {"text": 'a ] and a [ and a " inside'}
    ]
    stats = ReadStats()
    assert len(list(found.documents(stats))) == 4 and stats.empty_rows == 2


def test_csv_fields_longer_than_the_csv_modules_default_limit_are_read(tmp_path):
    long_text = "word " * 40_000  # 200 KB: past csv's 128 KiB field limit
    path = write_delimited(tmp_path / "long.csv", [{"text": long_text}, {"text": "short"}], ",")
    documents = ["".join(chunks) for chunks in open_source(str(path), DataConfig()).documents(ReadStats())]
    assert documents == [long_text, "short"]


@pytest.mark.parametrize(
    ("name", "where"),
    [("rows.jsonl", "rows.jsonl line 2"), ("rows.parquet", "rows.parquet row 2"), ("rows.csv", "rows.csv line 3")],
)
def test_strict_refuses_a_null_or_empty_text_in_one_line(tmp_path, run_cli, name, where):
    path = write_rows(tmp_path / name, ROWS)
    code, _, err = run_cli("prepare", path, "--tokenizer", "char", "--strict")
    assert code == 2 and err.count("\n") == 1, err
    assert where in err and "drop --strict to skip it" in err


def test_prepare_notes_the_skipped_rows(tmp_path, run_cli):
    path = write_rows(tmp_path / "rows.parquet", ROWS)
    code, out, _ = run_cli("prepare", path, "--tokenizer", "char", "--val-fraction", "0.3")
    assert code == 0 and "note: 2 rows had null or empty text and were skipped (--strict refuses them)" in out


def test_a_missing_column_lists_the_columns(tmp_path):
    path = write_rows(tmp_path / "rows.parquet", ROWS)
    with pytest.raises(StudioError, match=r"has no column 'body' \(its columns: id, text\); .* --text-field"):
        char_dataset(path, text_field="body", format="text")


def test_a_non_string_text_names_the_field_and_row(tmp_path):
    with pytest.raises(StudioError, match=r"ids.parquet row 1: field 'id' is int, not a string; .* --text-field"):
        char_dataset(write_rows(tmp_path / "ids.parquet", ROWS), text_field="id", format="text")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.parquet", b"PAR1 not really", "broken.parquet is not a readable parquet file"),
        (
            "cut.txt.gz",
            gzip.compress(" ".join(map(str, range(9999))).encode())[:200],
            "cut.txt.gz is not a readable .gz file",
        ),
        ("bad.jsonl.zst", b"not zstd at all", "bad.jsonl.zst is not a readable .zst file"),
        ("bad.txt.xz", b"not xz at all", "bad.txt.xz is not a readable .xz file"),
        ("corpus.zip", b"PK\x03\x04", "corpus.zip: .zip files are not read; unpack it"),
        ("rows.parquet.gz", b"x", "parquet files compress inside themselves"),
        ("open.json", b'[{"text": "a"}, {"text": ', "open.json row 2 is not valid JSON"),
        ("numbers.json", b"[1, 2]", "numbers.json row 1 is a JSON int, not an object"),
    ],
)
def test_bad_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StudioError, match=message) as raised:
        char_dataset(path)
    assert "\n" not in str(raised.value)


def test_a_dataset_dict_folder_asks_for_one_split(tmp_path):
    folder = tmp_path / "dict"
    folder.mkdir()
    write_datasets_folder(folder / "train", ROWS)
    write_datasets_folder(folder / "test", ROWS)
    (folder / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    with pytest.raises(StudioError, match=r"holds the splits test, train .* give one split's folder"):
        open_source(str(folder), DataConfig())
    assert open_source(str(folder / "train"), DataConfig()).kind == "datasets"


def test_a_folder_reads_each_file_by_its_suffix(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_rows(folder / "a.parquet", ROWS[:2])
    write_rows(folder / "b.csv", ROWS[2:])
    (folder / "c.txt.gz").write_bytes(gzip.compress(b"plain text"))
    stats = ReadStats()
    documents = ["".join(chunks) for chunks in open_source(str(folder), DataConfig()).documents(stats)]
    assert documents == [TEXTS[0], TEXTS[2], TEXTS[4], "plain text"] and stats.empty_rows == 2


def test_classification_rows_come_from_parquet_csv_and_json_arrays(tmp_path):
    rows = [{"text": f"{word} {index}", "label": word} for index in range(6) for word in ("good", "bad")]
    rows += [{"text": None, "label": "good"}, {"text": "", "label": "bad"}]
    purpose = Purpose(context=64, task="classify")
    metas = [
        prepare_dataset(
            DataConfig(source=str(write_rows(tmp_path / name, rows)), tokenizer="char"), purpose=purpose
        ).meta
        for name in ("rows.parquet", "rows.csv", "rows.json")
    ]
    for meta in metas:
        assert meta.labels == ["bad", "good"] and meta.empty_rows == 2
        assert meta.examples == metas[0].examples and meta.tokens == metas[0].tokens


def test_numeric_labels_written_as_text_keep_their_numeric_order(tmp_path):
    rows = [{"text": f"row {index}", "label": label} for index in range(4) for label in (2, 10, 1)]
    dataset = prepare_dataset(
        DataConfig(source=str(write_rows(tmp_path / "rows.csv", rows)), tokenizer="char"),
        purpose=Purpose(context=64, task="classify"),
    )
    assert dataset.meta.labels == ["1", "2", "10"]  # a csv's labels are text; sorted as the numbers they are


def test_chat_rows_come_from_a_json_array(tmp_path):
    rows = [{"instruction": f"Say {word}", "output": word} for word in ("yes", "no", "maybe", "never")]
    tokenizer = train_char("".join(json.dumps(row) for row in rows) + "\n:#ASUYTR" + "abcdefghijklmnopqrstuvwxyz")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    purpose = Purpose(pretrained=PretrainedTokenizer(tmp_path / "tokenizer.json", EOT), context=256)
    metas = [
        prepare_dataset(DataConfig(source=str(write_rows(tmp_path / name, rows))), purpose=purpose).meta
        for name in ("rows.json", "rows.jsonl")
    ]
    assert metas[0].row_format == "alpaca" and metas[0].examples == {"train": 4, "val": 0}  # too few to hold one out
    assert metas[0].tokens == metas[1].tokens


def test_preview_shows_the_columns_and_first_rows(tmp_path):
    preview = preview_rows(str(write_rows(tmp_path / "rows.parquet", ROWS)), DataConfig(), limit=2)
    assert preview.file == "rows.parquet" and preview.columns == ["id", "text"] and preview.rows == ROWS[:2]
    text = tmp_path / "plain.txt"
    text.write_text("no rows here")
    assert preview_rows(str(text), DataConfig()) is None and preview_rows("python-stdlib", DataConfig()) is None


def test_a_json_file_that_is_not_rows_is_a_text_document_in_a_folder(tmp_path):
    """A code folder with a package.json prepares as before: the object is text, not rows missing a text field."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "package.json").write_text('{\n  "name": "app",\n  "version": "1.0.0"\n}\n', encoding="utf-8")
    (folder / "rows.json").write_text('[{"text": "a row"}]', encoding="utf-8")
    (folder / "main.js").write_text("console.log(1)\n", encoding="utf-8")
    source = open_source(str(folder), DataConfig())
    formats = {file.name: file.format for file in source.files}
    assert formats == {"main.js": "text", "package.json": "text", "rows.json": "json"}
    documents = ["".join(document) for document in source.documents(ReadStats())]
    assert documents == ["console.log(1)\n", '{\n  "name": "app",\n  "version": "1.0.0"\n}\n', "a row"]


def test_a_long_row_is_read_in_pieces_and_prepares_as_the_same_text_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)
    text = "".join(f"line {n}: some words of a long row\n" for n in range(40))
    source = write_rows(tmp_path / "row.jsonl", [{"text": text}])
    (pieces,) = open_source(str(source), DataConfig()).documents(ReadStats())
    assert [len(piece) for piece in pieces][:2] == [64, 64]  # never the whole row at once
    (tmp_path / "row.txt").write_text(text)
    from_row, from_text = (
        prepare_dataset(DataConfig(source=str(tmp_path / name), tokenizer="char")) for name in ("row.jsonl", "row.txt")
    )
    for split in ("train", "val"):
        assert from_row.bin_path(split).read_bytes() == from_text.bin_path(split).read_bytes()
