"""Presets load, validate, have the sizes their names promise, and list without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.config import RunConfig, validate
from studio.errors import StudioError
from studio.presets import load_preset, preset_description, preset_names, preset_table, preset_vocab
from studio.sizing.sizes import param_count

EXPECTED = {
    "tiny",
    "small",
    "gpt2-124m",
    "llama-350m",
    "llama-1b",
    "lstm-tiny",
    "rnn-tiny",
    "nanogpt-cpu",
    "finetune",
    "speedrun-cpu",
}


def params(name: str) -> int:
    config = load_preset(name)
    return param_count(config.model, preset_vocab(config))


def test_every_preset_is_there():
    assert EXPECTED <= set(preset_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_and_validates(name):
    config = load_preset(name)
    assert config.preset == name
    validate(config)
    assert preset_description(name)
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("tiny", 0.7e6, 1.5e6),
        ("small", 10e6, 20e6),
        ("lstm-tiny", 0.7e6, 1.5e6),
        ("rnn-tiny", 0.7e6, 1.5e6),
        ("llama-350m", 300e6, 400e6),
        ("llama-1b", 1.0e9, 1.3e9),
    ],
)
def test_preset_sizes(name, low, high):
    assert low <= params(name) <= high


def test_tiny_uses_the_builtin_corpus_and_the_llama_layout():
    config = load_preset("tiny")
    assert (config.model.arch, config.data.source, config.data.tokenizer) == ("llama", "python-stdlib", "bpe")


def test_gpt2_124m_is_gpt2_small():
    config = load_preset("gpt2-124m")
    m = config.model
    assert (m.arch, m.n_layer, m.n_head, m.n_embd, m.block_size, m.bias, m.tie_embeddings) == (
        "gpt2",
        12,
        12,
        768,
        1024,
        True,
        True,
    )
    assert config.data.vocab_size == 50257
    assert params("gpt2-124m") == 124_439_808


def test_nanogpt_cpu_is_nanogpts_shakespeare_char_example():
    config = load_preset("nanogpt-cpu")
    m, t = config.model, config.train
    assert (m.arch, m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout, m.bias) == (
        "gpt2",
        4,
        4,
        128,
        64,
        0.0,
        False,
    )
    assert config.data.tokenizer == "char"
    assert (t.batch_size, t.lr, t.min_lr, t.schedule, t.warmup_steps, t.max_steps) == (
        12,
        1e-3,
        1e-4,
        "cosine",
        100,
        2000,
    )
    assert (t.optimizer, t.beta2, t.weight_decay, t.grad_clip, t.eval_interval, t.eval_steps) == (
        "adamw",
        0.99,
        0.1,
        1.0,
        250,
        20,
    )


def test_speedrun_cpu_is_muon_on_a_model_of_at_most_a_million_parameters_on_nanogpts_data():
    config, nanogpt = load_preset("speedrun-cpu"), load_preset("nanogpt-cpu")
    assert config.train.optimizer == "muon" and params("speedrun-cpu") <= 1_000_000
    assert (config.data.tokenizer, config.data.val_fraction) == (nanogpt.data.tokenizer, nanogpt.data.val_fraction)


def test_finetune_keeps_the_model_and_lowers_the_rate():
    """The rate is the method's once a checkpoint is named (studio.method_defaults), not the preset's (issue 21)."""
    from studio.method_defaults import apply_method_defaults

    config = load_preset("finetune")
    assert config.model == RunConfig().model
    config.train.init_from = "some-run"
    apply_method_defaults(config)
    assert config.train.lr <= 1e-4


def test_unknown_preset_names_the_choices():
    with pytest.raises(StudioError, match=r"unknown preset 'huge'; choose one of: .*tiny"):
        load_preset("huge")


def test_preset_files_hold_only_known_keys():
    import tomllib

    from studio.presets import PRESET_DIR

    for name in preset_names():
        raw = tomllib.loads(PRESET_DIR.joinpath(f"{name}.toml").read_text(encoding="utf-8"))
        assert set(raw) <= {"description", "model", "data", "train"}, name


def test_preset_table():
    rows = {row["name"]: row for row in preset_table()}
    assert set(rows) == set(preset_names())
    assert rows["gpt2-124m"]["params"] == 124_439_808 and rows["gpt2-124m"]["arch"] == "gpt2"
    totals = {name: row["memory"]["total"] for name, row in rows.items()}
    assert totals["tiny"] < totals["small"] < totals["llama-1b"]
    assert not rows["finetune"]["sets_model"] and rows["tiny"]["sets_model"]
    assert rows["finetune"]["params"] == param_count(RunConfig().model, RunConfig().data.vocab_size)
    assert all(row["description"] for row in rows.values())


def test_sizes_and_presets_import_without_torch():
    code = (
        "import sys, studio.presets, studio.sizing.sizes; studio.presets.preset_table(); print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"
