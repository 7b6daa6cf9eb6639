"""What the studio remembers between sessions: the last source, model, task and method (`remembered.json` in the
home). Torch-free; written whole (studio.atomic_write) whenever one of them changes.

A convenience, not a record: a value that no longer applies (a preset since removed, a field since renamed) is
skipped and the studio opens on its default for it."""

from __future__ import annotations

import json

from studio.atomic_write import write_atomically
from studio.config import RunConfig, set_field
from studio.errors import StudioError
from studio.method_defaults import apply_method_defaults
from studio.paths import studio_home
from studio.presets import load_preset

REMEMBERED = "remembered.json"
REMEMBERED_KEYS = ("data.source", "train.init_from", "train.task", "train.method")  # and the preset


def remembered(config: RunConfig) -> dict[str, str]:
    """What of `config` is remembered: its preset and REMEMBERED_KEYS."""
    return {"preset": config.preset} | {key: config.value(key) for key in REMEMBERED_KEYS}


def remember(config: RunConfig) -> None:
    """Write what is remembered of `config`, when it changed (an unchanged file is not rewritten)."""
    path = studio_home() / REMEMBERED
    content = json.dumps(remembered(config), indent=1, sort_keys=True) + "\n"
    try:
        if path.read_text(encoding="utf-8") == content:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, content)


def recall(default_preset: str) -> RunConfig:
    """The config the studio opens on: the remembered preset (else `default_preset`) with the remembered values."""
    try:
        saved = json.loads((studio_home() / REMEMBERED).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # never saved, or unreadable: the defaults
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    try:
        config = load_preset(str(saved.get("preset", default_preset)))
    except StudioError:
        config = load_preset(default_preset)
    for key in REMEMBERED_KEYS:
        if key in saved:
            try:
                set_field(config, key, saved[key])
            except StudioError:
                continue
    apply_method_defaults(config)  # a remembered checkpoint trains at its method's rate (rates are not remembered)
    return config
