"""A Hugging Face folder's text is encoded as transformers encodes it (AutoTokenizer), not as its tokenizer.json
reads in the tokenizers library: for model_type qwen2, transformers builds Qwen2Tokenizer, which splits digits one
by one whatever the file's pre-tokenizer says. Data prepared with another tokenization trains the model on
sequences transformers never shows it (issue 21: the held-out loss of a fine-tune stayed far above a plain loop's)."""

from __future__ import annotations

import numpy as np
import pytest

from studio.cli.main import main
from studio.data.prepare import open_dataset
from studio.data.tokenizer import load_tokenizer
from tests.hf_models import CHATML, TEXT, make_hf_model

transformers = pytest.importorskip("transformers")

NUMBERS = "released = [2007, 1999]\nyear = 2007 + 1999\n"  # " 2007" is one token of the file, four of Qwen2's
DOCUMENT = TEXT + NUMBERS


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """A tiny Qwen2 whose tokenizer.json (plain ByteLevel) has merged tokens for the numbers."""
    folder = tmp_path_factory.mktemp("models") / "qwen2"
    make_hf_model(folder, "qwen2", CHATML, corpus=DOCUMENT)
    return folder


def transformers_ids(folder, text: str) -> list[int]:
    return transformers.AutoTokenizer.from_pretrained(folder)(text).input_ids


def test_the_folder_really_reads_otherwise_in_transformers(qwen2):
    from tokenizers import Tokenizer

    as_file = Tokenizer.from_file(str(qwen2 / "tokenizer.json")).encode(NUMBERS).ids
    assert as_file != transformers_ids(qwen2, NUMBERS)  # else the tests below prove nothing


def test_prepared_data_is_tokenized_as_transformers_tokenizes_it(studio_home, tmp_path, qwen2):
    source = tmp_path / "numbers.txt"
    source.write_text(DOCUMENT * 40, encoding="utf-8")
    assert main(["prepare", str(source), "--init-from", str(qwen2), "--name", "numbers"]) == 0
    dataset = open_dataset("numbers")
    tokens = np.concatenate([np.fromfile(dataset.bin_path(split), dtype=dataset.dtype) for split in ("train", "val")])
    document = transformers_ids(qwen2, DOCUMENT * 40)
    assert tokens.tolist() == [*document, dataset.eot_id]
    turn = "<|im_start|>user\n2007<|im_end|>"  # the chat template's tokens keep their ids
    assert load_tokenizer(dataset.tokenizer_path).encode(turn).ids == transformers_ids(qwen2, turn)


def test_generation_encodes_as_transformers_does(studio_home, qwen2):
    from studio.inference.generate import load_generator

    assert load_generator(str(qwen2)).encode(NUMBERS) == transformers_ids(qwen2, NUMBERS)
