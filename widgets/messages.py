"""Messages the studio's widgets share (posted up to the app, which routes them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message


@dataclass
class ConfigChanged(Message):
    """A pane changed the config being edited (app.config); other panes refresh what they derive from it."""

    section: str  # model, data or train


@dataclass
class PresetChosen(Message):
    """The Model pane picked a preset: the app loads its model and train sections into app.config."""

    name: str


@dataclass
class CheckpointChosen(Message):
    """The Model pane picked a Hugging Face checkpoint to start from (a folder, or a cached model's hub name): the
    app sets train.init_from."""

    init_from: str


@dataclass
class RunLaunched(Message):
    """A run was started (or resumed) from the studio: open its dashboard."""

    run_dir: Path


@dataclass
class OpenRun(Message):
    """Open a run's dashboard (the Runs pane's enter)."""

    run_dir: Path
