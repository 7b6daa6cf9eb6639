"""Prepared datasets are checked when opened: files of the sizes meta.json counts, examples' offsets rising within
their split, meta.json's fields of their types. A damaged dataset is one line naming it, training refuses it, and
preparing its source again rebuilds it in its place instead of reusing it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from studio.cli.main import main
from studio.config import DataConfig
from studio.data import open_dataset, prepare_dataset
from studio.data.prepare import PretrainedTokenizer, Purpose
from studio.data.tokenizer import EOT, train_char
from studio.errors import StudioError
from studio.runs.prepare import prepare_run
from tests.helpers import tiny_config

TEXT = "".join(f"line {n} of the corpus, with some words in it\n" for n in range(200))
ROWS = [{"instruction": f"Say {word}", "output": word} for word in ("yes", "no", "maybe", "never", "always")]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def text_source(tmp_path: Path) -> DataConfig:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return DataConfig(source=str(path), tokenizer="char")


def chat_dataset(tmp_path: Path) -> tuple[DataConfig, Purpose]:
    """Alpaca rows prepared with a char tokenizer standing in for a model's."""
    tokenizer = train_char("".join(json.dumps(row) for row in ROWS) + "\n:#ASUYTR" + "abcdefghijklmnopqrstuvwxyz")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return DataConfig(source=str(rows)), Purpose(PretrainedTokenizer(tmp_path / "tokenizer.json", EOT), context=256)


def damaged(name: str, message: str) -> None:
    """Opening the dataset is one StudioError naming it, the damage and the way out."""
    with pytest.raises(StudioError, match=f"dataset {name!r} is damaged") as caught:
        open_dataset(name)
    text = str(caught.value)
    assert message in text and "prepare its source again" in text and "\n" not in text, text


def cut_by_three_bytes(path: Path) -> None:
    data = (path / "train.bin").read_bytes()
    (path / "train.bin").write_bytes(data[:-3])


def tokens_a_word(path: Path) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta["tokens"]["train"] = "lots"
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (cut_by_three_bytes, "train.bin has"),
        (tokens_a_word, 'meta.json: tokens is {"train": "lots"'),
    ],
    ids=["train.bin-cut", "tokens-a-word"],
)
def test_a_damaged_text_dataset_is_named_refused_by_train_and_rebuilt_by_prepare(home, tmp_path, damage, message):
    data = text_source(tmp_path)
    dataset = prepare_dataset(data)
    intact = (dataset.path / "train.bin").read_bytes()
    damage(dataset.path)

    damaged(dataset.name, message)
    with pytest.raises(StudioError, match=f"dataset {dataset.name!r} is damaged"):
        prepare_run(tiny_config({"data.source": dataset.name}), "refused")

    rebuilt = prepare_dataset(data)
    assert rebuilt.path == dataset.path and (rebuilt.path / "train.bin").read_bytes() == intact
    assert open_dataset(dataset.name).meta.tokens == rebuilt.meta.tokens
    assert sorted(path.name for path in home.joinpath("datasets").iterdir()) == [dataset.name]


def test_prepare_from_the_cli_rebuilds_a_damaged_dataset_in_one_go(home, tmp_path, capsys):
    data = text_source(tmp_path)
    dataset = prepare_dataset(data)
    tokens_a_word(dataset.path)
    assert main(["prepare", data.source, "--tokenizer", "char"]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err
    assert open_dataset(dataset.name).meta.tokens["train"] > 0


def offsets_edited(change: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        offsets = np.fromfile(path / "train.idx", dtype=np.int64)
        change(offsets)
        offsets.tofile(path / "train.idx")

    return damage


def past_the_end(offsets: np.ndarray) -> None:
    offsets[-1] += 50


def huge(offsets: np.ndarray) -> None:
    offsets[1] = 2**62


def swapped(offsets: np.ndarray) -> None:
    offsets[1], offsets[2] = offsets[2], offsets[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (past_the_end, "train.idx runs from 0 to"),
        (huge, "train.idx: example 2 starts before example 1"),
        (swapped, "train.idx: example 2 starts before example 1"),
    ],
    ids=["past-the-end", "huge", "swapped"],
)
def test_chat_offsets_out_of_bounds_or_order_are_damage(home, tmp_path, change, message):
    data, purpose = chat_dataset(tmp_path)
    dataset = prepare_dataset(data, purpose=purpose)
    intact = (dataset.path / "train.idx").read_bytes()
    offsets_edited(change)(dataset.path)

    damaged(dataset.name, message)
    rebuilt = prepare_dataset(data, purpose=purpose)
    assert rebuilt.path == dataset.path and (rebuilt.path / "train.idx").read_bytes() == intact


def test_a_missing_mask_is_damage(home, tmp_path):
    data, purpose = chat_dataset(tmp_path)
    dataset = prepare_dataset(data, purpose=purpose)
    (dataset.path / "val.mask").unlink()
    damaged(dataset.name, "val.mask")


def test_meta_fields_of_another_type_are_named(home, tmp_path):
    dataset = prepare_dataset(text_source(tmp_path))
    meta = json.loads((dataset.path / "meta.json").read_text())
    (dataset.path / "meta.json").write_text(json.dumps(meta | {"vocab_size": True}))
    damaged(dataset.name, "meta.json: vocab_size is true, not of type int")
    (dataset.path / "meta.json").write_text(json.dumps(meta | {"documents": {"seen": 1, "kept": "1"}}))
    damaged(dataset.name, 'meta.json documents: kept is "1", not of type int')
