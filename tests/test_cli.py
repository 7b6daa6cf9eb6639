"""The command line: bad input is one line, a non-zero exit and no traceback, and nothing existing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.run_folder.layout import run_path
from tests.helpers import TINY_TRAIN


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("llm-studio: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


@pytest.fixture
def jsonl_corpus(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"document number {i} " * 20}) for i in range(50)) + "\n")
    return path


def test_missing_path(run_cli, tmp_path):
    assert_one_line_error(*run_cli("prepare", tmp_path / "nope.txt")[::2], "no such file or folder")


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_is_refused_not_read_as_the_working_folder(run_cli, source, studio_home):
    assert_one_line_error(*run_cli("prepare", source)[::2], "data.source is empty")
    assert not (studio_home / "datasets").exists() or not any((studio_home / "datasets").iterdir())


def test_empty_corpus(run_cli, tmp_path):
    (tmp_path / "empty.txt").write_text("   \n\n")
    assert_one_line_error(*run_cli("prepare", tmp_path / "empty.txt")[::2], "empty")


def test_binary_file(run_cli, tmp_path):
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 40)
    assert_one_line_error(*run_cli("prepare", tmp_path / "blob.txt")[::2], "binary")


def test_non_utf8_bytes_are_replaced_and_counted_or_refused_with_strict(run_cli, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf\xe9 and na\xefve text, " * 400).encode("latin-1"))
    code, err = run_cli("prepare", path, "--tokenizer", "char", "--strict")[::2]
    assert_one_line_error(code, err, "UTF-8", "--strict")
    code, out, err = run_cli("prepare", path, "--tokenizer", "char")
    assert code == 0, err
    assert "800 bytes were not valid UTF-8 and were replaced" in out


def test_malformed_jsonl_line_names_its_number(run_cli, jsonl_corpus):
    lines = jsonl_corpus.read_text().splitlines()
    lines[6] = '{"body": "unterminated'
    jsonl_corpus.write_text("\n".join(lines) + "\n")
    assert_one_line_error(*run_cli("prepare", jsonl_corpus, "--text-field", "body")[::2], "line 7")


def test_missing_text_field_suggests_the_option(run_cli, jsonl_corpus):
    assert_one_line_error(*run_cli("prepare", jsonl_corpus)[::2], "text", "--text-field")
    code, out, err = run_cli("prepare", jsonl_corpus, "--text-field", "body", "--tokenizer", "char")
    assert code == 0, err


@pytest.mark.parametrize("size", ["10", "5000000"])
def test_vocab_size_out_of_range(run_cli, code_corpus, size):
    assert_one_line_error(*run_cli("prepare", code_corpus, "--vocab-size", size)[::2], "vocab_size")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "model.n_embd=33"], ["divisible by model.n_head"]),
        (["--set", "train.lr=0"], ["train.lr must be positive"]),
        (["--set", "train.lr=-0.1"], ["train.lr must be positive"]),
        (["--set", "train.batch_size=0"], ["train.batch_size must be positive"]),
        (["--max-steps", "-3"], ["train.max_steps must be positive"]),
        (["--set", "train.warp_speed=9"], ["unknown key 'train.warp_speed'"]),
        (["--set", "train.max_steps=many"], ["must be a whole number"]),
        (["--set", "train.lr"], ["section.key=value"]),
        (["--preset", "gigantic"], ["unknown preset 'gigantic'", "tiny"]),
        (["--mixed-precision", "fp16"], ["fp16", "bf16"]),
    ],
)
def test_bad_train_settings_fail_before_anything_is_written(run_cli, code_corpus, studio_home, args, words):
    base = [a for a in TINY_TRAIN if a not in ("--preset", "tiny")] if "--preset" in args else TINY_TRAIN
    assert_one_line_error(*run_cli("train", *base, "--data", code_corpus, *args)[::2], *words)
    assert not (studio_home / "runs").exists() or not any((studio_home / "runs").iterdir())


@pytest.mark.slow
def test_a_taken_run_name_is_refused_and_the_run_kept(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "mine", "--max-steps", 5)
    assert code == 0, err
    before = {p.name: p.stat().st_mtime_ns for p in run_path("mine").rglob("*")}
    assert_one_line_error(
        *run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "mine")[::2], "already exists", "resume"
    )
    assert {p.name: p.stat().st_mtime_ns for p in run_path("mine").rglob("*")} == before


def test_unknown_run(run_cli):
    assert_one_line_error(*run_cli("resume", "ghost")[::2], "no run named 'ghost'")
    assert_one_line_error(*run_cli("stop", "ghost")[::2], "no run named 'ghost'")


@pytest.mark.slow
def test_train_prepares_a_source_then_reuses_the_dataset_by_name(run_cli, code_corpus):
    code, out, err = run_cli("prepare", code_corpus, "--tokenizer", "char", "--name", "mycode")
    assert code == 0, err
    assert "dataset mycode" in out
    code, out, err = run_cli("train", *TINY_TRAIN, "--data", "mycode", "--name", "byname", "--max-steps", 5)
    assert code == 0, err
    assert 'dataset = "mycode"' in (run_path("byname") / "config.toml").read_text()


@pytest.mark.slow
def test_runs_lists_and_delete_removes(run_cli, code_corpus):
    code, out, _ = run_cli("runs")
    assert "no runs yet" in out
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "listed", "--max-steps", 5)
    assert code == 0, err
    code, out, _ = run_cli("runs")
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "STEP"]
    assert row.split()[:3] == ["listed", "finished", "5/5"]
    assert_one_line_error(*run_cli("delete", "listed")[::2], "--yes")
    assert run_path("listed").exists()
    code, out, _ = run_cli("delete", "listed", "--yes")
    assert code == 0 and not run_path("listed").exists()


def test_presets_lists_each_with_parameters_and_memory(run_cli):
    code, out, _ = run_cli("presets")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name in ("tiny", "small", "gpt2-124m", "llama-350m", "llama-1b", "lstm-tiny", "rnn-tiny"):
        assert name in rows
    assert "124.4M" in rows["gpt2-124m"]
    code, out, _ = run_cli("presets", "--keys")
    assert "train.lr" in out.split()


def test_the_installed_entry_point_prints_help_without_torch():
    code = (
        "import sys; from studio.cli.parser import build_parser; build_parser().format_help(); "
        "import studio.runs.control, studio.run_folder.watch, studio.runs.prepare; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    assert result.stdout.strip() == "False", result.stderr
