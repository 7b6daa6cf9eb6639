"""The data pipeline: sources, cleaning, tokenizers, prepared datasets, batches."""

from __future__ import annotations

import json
import random
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.config import DataConfig
from studio.data import clean, list_datasets, open_dataset, prepare_dataset, resolve_dataset, sources
from studio.data.batches import TokenFile, sample_batch
from studio.data.clean import clean_chunks, clean_text, scan
from studio.data.meta import DocumentCounts
from studio.data.prepare import token_dtype
from studio.data.sources import ReadStats, open_source, source_fingerprint
from studio.data.tokenizer import (
    EOT,
    UNK,
    BpeEncoder,
    CharEncoder,
    load_tokenizer,
    split_before_newlines,
    tokenizer_hash,
    train_bpe,
    train_char,
)
from studio.errors import StudioError

MIXED = (
    "中文分词很有趣，我们今天学习。\n"
    "Emoji 😀👍🏽 and flags 🇫🇷 mixed in.\n"
    "def add(a, b):\n\treturn a + b  # tabs and  double  spaces\n\n"
    "    indented line\n\n   \n"
    "The quick brown fox jumps over the lazy dog.\n"
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def read_documents(source: str, stats: ReadStats | None = None, **options) -> list[str]:
    found = open_source(source, DataConfig(source=source, **options))
    return ["".join(chunks) for chunks in found.documents(stats or ReadStats())]


def decode_split(dataset, split: str) -> str:
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    ids = np.fromfile(dataset.bin_path(split), dtype=dataset.dtype)
    return tokenizer.decode(ids.tolist(), skip_special_tokens=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def corpus_text(lines: int, seed: int = 0) -> str:
    """Varied lines of made-up words, enough for a few train and val tokens."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "数据", "模型", "def", "return", "😀"]
    return "".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(lines))


# ---- sources ------------------------------------------------------------------------------------
def test_txt_file_is_one_document_read_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 7)  # splits multi-byte characters between reads
    path = write(tmp_path / "a.txt", MIXED)
    stats = ReadStats()
    found = open_source(str(path), DataConfig())
    chunk_lists = [list(chunks) for chunks in found.documents(stats)]
    assert found.kind == "text" and len(chunk_lists) == 1 and len(chunk_lists[0]) > 10
    assert "".join(chunk_lists[0]) == MIXED
    assert stats.bytes_read == len(MIXED.encode()) and stats.bytes_replaced == 0


def test_other_extensions_read_as_text(tmp_path):
    assert read_documents(str(write(tmp_path / "notes.md", "# title\n"))) == ["# title\n"]


def test_jsonl_one_document_per_line_from_the_text_field(tmp_path):
    lines = [json.dumps({"body": "first 你好", "id": 1}), "", json.dumps({"body": "second"})]
    path = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    assert read_documents(str(path), text_field="body") == ["first 你好", "second"]


def test_folder_reads_matching_files_and_skips_binary(tmp_path):
    write(tmp_path / "corpus" / "b.txt", "bee")
    write(tmp_path / "corpus" / "sub" / "a.md", "ay")
    write(tmp_path / "corpus" / "sub" / "c.jsonl", '{"text": "line one"}\n{"text": "line two"}\n')
    (tmp_path / "corpus" / "image.bin").write_bytes(b"GIF89a\0\0\1")
    stats = ReadStats()
    folder = str(tmp_path / "corpus")
    assert read_documents(folder, stats) == ["bee", "ay", "line one", "line two"]  # sorted by path
    assert stats.binary_files_skipped == 1 and stats.files_read == 3
    assert read_documents(folder, glob="**/*.md") == ["ay"]


def test_python_stdlib_has_many_modules_and_no_tests():
    found = open_source("python-stdlib", DataConfig())
    names = [file.name for file in found.files]
    assert len(names) > 500 and names == sorted(names)
    assert all(name.endswith(".py") for name in names)
    skipped = {"test", "tests", "idle_test", "site-packages", "dist-packages"}
    assert not any(skipped & set(name.split("/")[:-1]) for name in names)
    assert sum(1 for _ in found.documents(ReadStats())) == len(names)


def test_missing_path_says_what_to_give(tmp_path):
    with pytest.raises(StudioError, match=r"no such file or folder: .*nope.txt; give a text file, rows \(.jsonl"):
        open_source(str(tmp_path / "nope.txt"), DataConfig())


def test_binary_single_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00\x01\x02 weights")
    with pytest.raises(StudioError, match="looks binary"):
        read_documents(str(path))


@pytest.mark.parametrize("chunk_bytes", [1, 3, 1 << 20])
def test_invalid_utf8_is_replaced_and_counted(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk_bytes)
    raw = b"ok " + b"\xff\xfe" + " and €".encode() + b"\xe2\x82" + " 你好 end".encode() + b"\xc3"
    path = tmp_path / "latin.txt"
    path.write_bytes(raw)
    stats = ReadStats()
    assert read_documents(str(path), stats) == [raw.decode("utf-8", errors="replace")]
    assert stats.bytes_replaced == 5


def test_invalid_utf8_is_refused_when_strict(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(StudioError, match=r"latin.txt: invalid UTF-8 at byte 3; .*drop --strict"):
        read_documents(str(path), strict=True)


def test_jsonl_errors_name_the_line(tmp_path):
    broken = write(tmp_path / "broken.jsonl", '{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(StudioError, match="broken.jsonl line 2 is not valid JSON"):
        read_documents(str(broken))
    no_field = write(tmp_path / "nofield.jsonl", '{"text": "fine"}\n\n{"title": "t", "body": "b"}\n')
    with pytest.raises(StudioError, match=r"line 3 has no field 'text' \(its fields: title, body\); .*--text-field"):
        read_documents(str(no_field))
    not_text = write(tmp_path / "number.jsonl", '{"text": 42}\n')
    with pytest.raises(StudioError, match="line 1: field 'text' is int, not a string"):
        read_documents(str(not_text))


def test_jsonl_lone_surrogates_are_replaced(tmp_path):
    path = write(tmp_path / "s.jsonl", '{"text": "a\\ud800b"}\n')
    stats = ReadStats()
    assert read_documents(str(path), stats) == ["a\ufffdb"]
    assert stats.bytes_replaced == 1


def test_fingerprint_follows_content(tmp_path):
    path = write(tmp_path / "a.txt", "one")
    first = source_fingerprint(str(path), DataConfig())
    assert source_fingerprint(str(path), DataConfig()) == first
    write(path, "two")
    assert source_fingerprint(str(path), DataConfig()) != first


# ---- cleaning -----------------------------------------------------------------------------------
def test_clean_text_rules():
    assert clean_text("cafe\u0301") == "caf\u00e9"  # NFC
    assert clean_text("a\r\nb\rc\n") == "a\nb\nc\n"
    assert clean_text("x = 1   \t\ny  ") == "x = 1\ny"
    assert clean_text("a\n\n\n\n b\n \n\t\nc") == "a\n\n b\n\nc"
    code = "def f():\n\tif x:\n\t\treturn  1\n"
    assert clean_text(code) == code  # indentation and inner spaces are kept


def test_streaming_cleaning_equals_whole_document(monkeypatch):
    monkeypatch.setattr(clean, "LONG_LINE", 6)  # also exercise cuts inside long lines
    rng = random.Random(1234)
    parts = ["a", "b", " ", "\t", "\n", "\r", "\r\n", "e\u0301", "\u0301", "你", "😀", "\u1100", "\u1161", "  \n"]
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 50)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 12))))
        chunks = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)])]
        assert "".join(clean_chunks(chunks)) == clean_text(text), (text, chunks)


def test_streamed_pieces_start_at_line_breaks():
    pieces = list(clean_chunks(["line one\nline", " two\n\n", "\nline three\n"]))
    assert "".join(pieces) == "line one\nline two\n\nline three\n"
    assert all(piece.startswith("\n") for piece in pieces[1:])


def test_scan_counts_every_rule(tmp_path):
    docs = ["kept one", "  \n\t", "ab", "x" * 60, "same text\r\n", "same text\n", "cafe\u0301", "caf\u00e9"]
    path = write(tmp_path / "docs.jsonl", "".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    data = DataConfig(source=str(path), min_chars=3, max_chars=50)
    result = scan(open_source(data.source, data), data)
    assert (result.seen, result.kept) == (8, 3)
    assert result.dropped == {"empty": 1, "too_short": 1, "too_long": 1, "duplicate": 2}  # after CRLF and NFC
    assert result.characters == len("kept one") + len("same text\n") + len("caf\u00e9")
    assert list(result.keep) == [1, 0, 0, 0, 1, 0, 1, 0]
    assert scan(open_source(data.source, data), DataConfig(min_chars=3, max_chars=50, dedup=False)).kept == 5


# ---- tokenizers ---------------------------------------------------------------------------------
ROUND_TRIPS = [
    MIXED,
    "日本語とかな、한국어도",
    "🧑‍💻 \u200d zero width",
    "  \t \n\n\n  x  ",
    "<|endoftext|> in text",
    "class A:\n    pass\r\n",
]


def test_bpe_round_trips_any_text():
    tokenizer = train_bpe([MIXED * 3, corpus_text(200)], vocab_size=300)
    assert tokenizer.get_vocab_size() <= 300 and tokenizer.token_to_id(EOT) is not None
    for text in ROUND_TRIPS:  # characters never seen in training included: every byte is a token
        assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text
    encoder = BpeEncoder(tokenizer)
    for text in ROUND_TRIPS:
        ids = encoder.encode(text)
        assert tokenizer.decode(ids.tolist(), skip_special_tokens=False) == text
        assert encoder.eot_id not in ids  # a literal "<|endoftext|>" in the corpus stays text


def test_char_round_trips_its_characters():
    text = "".join(ROUND_TRIPS)
    tokenizer = train_char(set(text))
    assert tokenizer.get_vocab_size() == len(set(text)) + 2
    encoder = CharEncoder(tokenizer)
    ids = encoder.encode(text)
    assert len(ids) == len(text) and encoder.eot_id not in ids  # "<|endoftext|>" in the text stays text
    assert tokenizer.decode(ids.tolist()) == text
    assert encoder.encode(MIXED).tolist() == tokenizer.encode(MIXED).ids
    assert encoder.encode("a\u0100").tolist()[1] == tokenizer.token_to_id(UNK)


def test_tokenizer_saves_loads_and_hashes(tmp_path):
    tokenizer = train_char("abc")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert tokenizer_hash(loaded) == tokenizer_hash(tokenizer) != tokenizer_hash(train_char("abd"))
    with pytest.raises(StudioError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path / "missing.json")


def test_split_before_newlines():
    text = corpus_text(500)
    pieces = split_before_newlines(text, 100)
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(piece.startswith("\n") for piece in pieces[1:])


# ---- prepared datasets --------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer", ["bpe", "char"])
def test_chinese_corpus_end_to_end_and_val_is_the_tail(home, tmp_path, tokenizer):
    raw = "".join(f"第{i}章：今天天气很好，我们去公园散步。  \r\n\n\n" for i in range(300))
    path = write(tmp_path / "story.txt", raw)
    dataset = prepare_dataset(DataConfig(source=str(path), tokenizer=tokenizer, vocab_size=4096, val_fraction=0.1))
    cleaned = clean_text(raw)
    border = int(len(cleaned) * 0.9)
    assert decode_split(dataset, "train") == cleaned[:border]
    assert decode_split(dataset, "val") == cleaned[border:] + EOT
    meta = dataset.meta
    assert dataset.name == f"story-{'char' if tokenizer == 'char' else 'bpe4096'}"
    assert dataset.vocab_size == load_tokenizer(dataset.tokenizer_path).get_vocab_size() < 4096  # BPE stops early
    assert meta.characters == len(cleaned) and meta.documents.kept == 1
    assert meta.tokens["train"] == len(np.fromfile(dataset.bin_path("train"), dtype=dataset.dtype))
    assert meta.tokenizer_hash == tokenizer_hash(load_tokenizer(dataset.tokenizer_path))
    assert dataset.eot_id == load_tokenizer(dataset.tokenizer_path).token_to_id(EOT)
    assert meta.source == str(path) and meta.kind == "text" and meta.dtype == "uint16"


def test_documents_end_with_eot(home, tmp_path):
    docs = [f"document {i}: " + corpus_text(3, seed=i) for i in range(40)]
    path = write(tmp_path / "docs.jsonl", "".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    dataset = prepare_dataset(DataConfig(source=str(path), tokenizer="char"))
    assert (decode_split(dataset, "train") + decode_split(dataset, "val")) == "".join(doc + EOT for doc in docs)
    assert dataset.meta.documents == DocumentCounts(seen=40, kept=40, dropped=dict.fromkeys(clean.DROP_RULES, 0))


def test_same_source_and_options_is_a_cache_hit(home, tmp_path):
    path = write(tmp_path / "a.txt", corpus_text(300))
    first = prepare_dataset(DataConfig(source=str(path), tokenizer="bpe", vocab_size=300))
    times = {file.name: file.stat().st_mtime_ns for file in first.path.iterdir()}
    stages = []
    again = prepare_dataset(
        DataConfig(source=str(path), tokenizer="bpe", vocab_size=300),
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert again.path == first.path and "cached" in stages and "encode" not in stages
    assert {file.name: file.stat().st_mtime_ns for file in again.path.iterdir()} == times
    other = prepare_dataset(DataConfig(source=str(path), tokenizer="bpe", vocab_size=300, val_fraction=0.2))
    assert other.name.startswith("a-bpe300-") and other.path != first.path
    assert [dataset.name for dataset in list_datasets()] == sorted([first.name, other.name])
    assert resolve_dataset(DataConfig(source=first.name)).path == first.path
    assert resolve_dataset(DataConfig(source=str(path), tokenizer="bpe", vocab_size=300)).path == first.path


def test_a_damaged_dataset_is_listed_as_damaged_beside_the_others(home, tmp_path):
    good = prepare_dataset(DataConfig(source=str(write(tmp_path / "a.txt", corpus_text(50))), tokenizer="char"))
    truncated, unlisted = good.path.with_name("truncated"), good.path.with_name("no-tokenizer")
    for damaged in (truncated, unlisted):
        shutil.copytree(good.path, damaged)
    meta = (truncated / "meta.json").read_text(encoding="utf-8")
    (truncated / "meta.json").write_text(meta[: len(meta) // 2], encoding="utf-8")
    (unlisted / "tokenizer.json").unlink()
    listed = {dataset.name: dataset for dataset in list_datasets()}  # raised StudioError before
    assert sorted(listed) == sorted([good.name, "truncated", "no-tokenizer"])
    from studio.data import DamagedDataset

    assert not isinstance(listed[good.name], DamagedDataset)
    for name in ("truncated", "no-tokenizer"):
        assert isinstance(listed[name], DamagedDataset) and "\n" not in listed[name].reason
        assert listed[name].reason.startswith(f"dataset {name!r} is damaged (")
    assert "tokenizer.json is missing" in listed["no-tokenizer"].reason


def test_taken_name_with_other_options_is_refused(home, tmp_path):
    path = write(tmp_path / "a.txt", corpus_text(200))
    first = prepare_dataset(DataConfig(source=str(path), tokenizer="char"), name="mine")
    before = {file.name: file.read_bytes() for file in first.path.iterdir()}
    with pytest.raises(StudioError, match="dataset 'mine' already exists with other options; pick another --name"):
        prepare_dataset(DataConfig(source=str(path), tokenizer="char", val_fraction=0.3), name="mine")
    assert {file.name: file.read_bytes() for file in first.path.iterdir()} == before
    assert prepare_dataset(DataConfig(source=str(path), tokenizer="char"), name="mine").path == first.path


def test_interrupted_prepare_leaves_nothing_behind(home, tmp_path):
    path = write(tmp_path / "a.txt", corpus_text(200))
    kept = prepare_dataset(DataConfig(source=str(path), tokenizer="char"))
    before = {file.name: file.read_bytes() for file in kept.path.iterdir()}

    def interrupt(stage, done, total):
        if stage == "encode":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(DataConfig(source=str(path), tokenizer="bpe", vocab_size=300), progress=interrupt)
    assert sorted(folder.name for folder in (home / "datasets").iterdir()) == [kept.name]
    assert {file.name: file.read_bytes() for file in kept.path.iterdir()} == before


def test_token_dtype_fits_the_vocabulary(home, tmp_path):
    assert token_dtype(65536) == "uint16" and token_dtype(65537) == "uint32"
    many = "".join(chr(c) for c in [*range(0x4E00, 0x9FA0), *range(0xAC00, 0xD7A4), *range(0x20000, 0x2A000)])
    path = write(tmp_path / "many.txt", many)
    dataset = prepare_dataset(DataConfig(source=str(path), tokenizer="char"))
    assert dataset.vocab_size > 65536 and dataset.dtype == "uint32"
    assert decode_split(dataset, "train") + decode_split(dataset, "val") == many + EOT


def test_non_utf8_counted_in_meta(home, tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(corpus_text(100).encode() + b"\xff\xff tail\n")
    assert prepare_dataset(DataConfig(source=str(path), tokenizer="char")).meta.bytes_replaced == 2
    with pytest.raises(StudioError, match="invalid UTF-8"):
        prepare_dataset(DataConfig(source=str(path), tokenizer="char", strict=True))


def test_empty_corpus_says_which_rule_dropped_what(home, tmp_path):
    path = write(tmp_path / "blank.jsonl", '{"text": "  "}\n{"text": "hi"}\n{"text": "hi"}\n')
    with pytest.raises(StudioError, match=r"all 3 documents were dropped \(1 empty, 2 shorter than data.min_chars=5\)"):
        prepare_dataset(DataConfig(source=str(path), min_chars=5))
    with pytest.raises(StudioError, match="no documents in"):
        prepare_dataset(DataConfig(source=str(write(tmp_path / "empty.jsonl", "\n"))))
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())


def test_too_small_corpus_is_refused(home, tmp_path):
    with pytest.raises(StudioError, match="too small to split: 11 characters give 10 train and 2 validation tokens"):
        prepare_dataset(DataConfig(source=str(write(tmp_path / "tiny.txt", "hello world")), tokenizer="char"))


def test_unknown_dataset_name_is_reported(home):
    with pytest.raises(StudioError, match="no prepared dataset named 'nope'"):
        open_dataset("nope")


def test_memory_stays_flat_as_the_corpus_grows(home, tmp_path):
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     \n", dtype=np.uint8)
    peaks = []
    for megabytes in (8, 32):
        path = tmp_path / f"big{megabytes}.txt"
        with open(path, "wb") as handle:
            for _ in range(megabytes):
                handle.write(alphabet[rng.integers(0, len(alphabet), 1 << 20)].tobytes())
        tracemalloc.start()
        dataset = prepare_dataset(DataConfig(source=str(path), tokenizer="char"))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert sum(dataset.meta.tokens.values()) == dataset.meta.characters + 1
    assert peaks[1] < 1.5 * peaks[0] and peaks[1] < 64 << 20, peaks


# ---- batches ------------------------------------------------------------------------------------
def test_sample_batch_shapes_shift_and_determinism(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    tokens = TokenFile(path, "uint16")
    assert len(tokens) == 1000
    x, y = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(7))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x_again, y_again = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(7))
    assert torch.equal(x, x_again) and torch.equal(y, y_again)
    x_other, _ = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(8))
    assert not torch.equal(x, x_other)


def test_sample_batch_uses_every_window_of_a_minimal_split(tmp_path):
    path = tmp_path / "val.bin"
    np.arange(17, dtype=np.uint32).tofile(path)
    x, y = sample_batch(TokenFile(path, "uint32"), 2, 16, torch.Generator().manual_seed(0))
    assert x[0].tolist() == list(range(16)) and y[0].tolist() == list(range(1, 17))
    with pytest.raises(StudioError, match="the val split has 17 tokens, fewer than model.block_size \\+ 1 = 18"):
        sample_batch(TokenFile(path, "uint32"), 2, 17, torch.Generator())
