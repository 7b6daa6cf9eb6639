"""Config: TOML round trip, --set overrides with type checks, validation messages."""

import pytest

from studio.config import RunConfig, field_names, format_value, parse_override, set_field, validate
from studio.errors import StudioError


def test_toml_round_trip(tmp_path):
    config = RunConfig()
    config.train.sample_prompts = ['say "hi"\n', "tab\there"]
    config.model.dropout = 0.1
    config.save(tmp_path / "config.toml")
    assert RunConfig.load(tmp_path / "config.toml") == config


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("train.lr", "3e-4", 3e-4),
        ("train.max_steps", "1_000", 1000),
        ("train.compile", "true", "true"),
        ("data.packing", "yes", True),
        ("model.arch", "gpt2", "gpt2"),
        ("train.sample_prompts", "a|b", ["a", "b"]),
    ],
)
def test_set_converts_command_line_text(key, text, expected):
    config = RunConfig()
    set_field(config, key, text)
    section, name = key.split(".")
    assert getattr(getattr(config, section), name) == expected


@pytest.mark.parametrize(
    "items",
    [
        ["regex:^(yes|no)$", "exact:answer"],  # a reward's regex holding a |
        ["regex:\\d+", "length:4"],  # a backslash that escapes nothing stays as written
        ["ends in a backslash\\", "\\|", "\\\\", "|", ""],
    ],
)
def test_a_list_reads_back_as_it_was_written_whatever_its_items_hold(items):
    config = RunConfig()
    set_field(config, "train.sample_prompts", format_value(items))
    assert config.train.sample_prompts == items


def test_a_list_item_escapes_a_pipe_and_plain_pipes_still_separate():
    assert format_value(["regex:^(yes|no)$", "regex:\\d"]) == "regex:^(yes\\|no)$|regex:\\d"
    config = RunConfig()
    set_field(config, "train.lora_targets", "q_proj|v_proj")
    assert config.train.lora_targets == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("train.nope", "1", "unknown key 'train.nope'"),
        ("nope", "1", "unknown key"),
        ("train.max_steps", "ten", "must be a whole number"),
        ("train.lr", "fast", "must be a number"),
        ("data.packing", "maybe", "true or false"),
    ],
)
def test_set_rejects_unknown_keys_and_wrong_types(key, value, words):
    with pytest.raises(StudioError, match=words):
        set_field(RunConfig(), key, value)


def test_parse_override_needs_an_equals_sign():
    assert parse_override("train.lr=1e-3") == ("train.lr", "1e-3")
    with pytest.raises(StudioError, match="section.key=value"):
        parse_override("train.lr")


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("model.n_embd", 130, "divisible by model.n_head"),
        ("train.lr", 0.0, "train.lr must be positive"),
        ("train.lr", -1.0, "train.lr must be positive"),
        ("train.batch_size", 0, "train.batch_size must be positive"),
        ("train.max_steps", -5, "train.max_steps must be positive"),
        ("train.muon_ns_steps", 0, "train.muon_ns_steps must be positive"),
        ("data.vocab_size", 100, "vocab_size 100 is out of range"),
        ("data.vocab_size", 10**8, "out of range"),
        ("model.arch", "transformer-xl", "model.arch must be one of"),
        ("model.dropout", 1.5, "dropout"),
        ("model.n_kv_head", 3, r"model.n_kv_head \(3\) must divide model.n_head \(4\)"),
    ],
)
def test_validation_names_the_key_and_the_fix(key, value, words):
    config = RunConfig()
    set_field(config, key, value)
    with pytest.raises(StudioError, match=words):
        validate(config)


def test_every_field_is_settable():
    config = RunConfig()
    for key in field_names():
        section, name = key.split(".")
        set_field(config, key, getattr(getattr(config, section), name))
    validate(config)


def test_grouped_query_attention_is_for_llama_only():
    config = RunConfig()
    set_field(config, "model.n_kv_head", 2)
    validate(config)  # llama, 4 heads sharing 2 key/value heads
    assert config.model.kv_heads == 2 and RunConfig().model.kv_heads == 4
    set_field(config, "model.arch", "gpt2")
    with pytest.raises(StudioError, match="grouped-query attention is for llama, not gpt2"):
        validate(config)


def test_relu2_is_for_gpt2_only():
    config = RunConfig()
    set_field(config, "model.activation", "relu2")
    with pytest.raises(StudioError, match="model.activation relu2 is for gpt2, not llama; set it to gelu"):
        validate(config)
    set_field(config, "model.arch", "gpt2")
    validate(config)


def test_every_architecture_the_config_offers_has_its_facts():
    from typing import get_args

    from studio.architectures import ARCHITECTURES
    from studio.config import PRETRAINED_ARCH, Arch

    assert set(get_args(Arch)) == {*ARCHITECTURES, PRETRAINED_ARCH}
