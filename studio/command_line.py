"""The `llm-studio train ...` command line that reproduces a config: every studio action has a CLI twin.

Torch-free and Textual-free: the Train tab shows it live while the user edits. The command names the
preset and the data source, then one `--set section.key=value` for each field that differs from the preset,
so it stays short for a lightly edited preset and still reproduces the whole config.
"""

from __future__ import annotations

import shlex
from typing import Any

from studio.config import RunConfig, field_names
from studio.presets import load_preset


def cli_command(config: RunConfig) -> str:
    preset = load_preset(config.preset)
    words = ["llm-studio", "train", "--preset", config.preset, "--data", config.data.source]
    for key in field_names():
        if key == "data.source":
            continue
        value = config_value(config, key)
        if value != config_value(preset, key):
            words += ["--set", f"{key}={format_value(value)}"]
    return shlex.join(words)


def config_value(config: RunConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name)


def format_value(value: Any) -> str:
    """The text that set_field turns back into `value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(value)  # set_field splits list values on |
    return repr(value) if isinstance(value, float) else str(value)
