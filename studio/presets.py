"""Presets: partial run configs, one TOML file each in the `presets` package.

A preset file holds a top-level `description` and any of the `[model]`, `[data]`, `[train]` sections with
config.py's keys; whatever it leaves out keeps config.py's default. Torch-free: the studio lists presets
with their sizes while it starts.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from studio.config import RunConfig
from studio.errors import StudioError
from studio.sizing.sizes import estimate_train_memory, param_count

PRESET_DIR = resources.files("presets")

# A char vocabulary is the corpus' own set of characters, unknown until the data is prepared; sizes of
# char presets are shown for this many (a typical English text has under a hundred, code a few more).
CHAR_VOCAB_GUESS = 256


def preset_names() -> list[str]:
    return sorted(entry.name.removesuffix(".toml") for entry in PRESET_DIR.iterdir() if entry.name.endswith(".toml"))


def _read(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise StudioError(f"unknown preset {name!r}; choose one of: {', '.join(names)}")
    return tomllib.loads(PRESET_DIR.joinpath(f"{name}.toml").read_text(encoding="utf-8"))


def load_preset(name: str) -> RunConfig:
    """config.py's defaults updated by the preset's file; unknown keys raise a StudioError naming the file."""
    raw = _read(name)
    raw.pop("description", None)
    config = RunConfig(preset=name)
    config.update(raw, f"preset {name}")
    return config


def preset_description(name: str) -> str:
    return _read(name).get("description", "")


def preset_vocab(config: RunConfig) -> int:
    """The vocabulary a run of this config will have, as far as it is known before preparing the data."""
    if config.model.vocab_size:
        return config.model.vocab_size
    return config.data.vocab_size if config.data.tokenizer == "bpe" else CHAR_VOCAB_GUESS


def preset_table() -> list[dict[str, Any]]:
    """One row per preset: name, arch, description, vocab_size, params, memory (estimate_train_memory's dict
    for one process, bytes), and sets_model: False for a preset without [model] (finetune), whose sizes are
    those of config.py's default model, the one it trains when not continuing from a checkpoint."""
    rows = []
    for name in preset_names():
        raw, config = _read(name), load_preset(name)
        vocab = preset_vocab(config)
        rows.append(
            {
                "name": name,
                "arch": config.model.arch,
                "description": raw.get("description", ""),
                "vocab_size": vocab,
                "params": param_count(config.model, vocab),
                "memory": estimate_train_memory(config.model, config.train, vocab),
                "sets_model": "model" in raw,
            }
        )
    return rows
