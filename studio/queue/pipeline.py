"""Pipelines: stages queued at once, each a normal run started from the one before when it finishes
(`llm-studio pipeline FILE.toml`: continued pretraining, then SFT, then DPO). Torch-free.

Each stage is a run queued `after` the previous stage (studio.queue.entries: the runner starts it from that run's
final checkpoint, or cancels it when that run did not finish, and so the stages after it). A pipeline is created
whole or not at all: every stage is prepared (checked, its data prepared) before any is queued, and the run
folders of a pipeline that fails part way are removed, as a sweep's are.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.config import RunConfig
from studio.errors import StudioError
from studio.queue.entries import add_entry, ensure_runner
from studio.runs.control import delete_run


@dataclass
class Stage:
    name: str
    config: RunConfig
    after: str | None  # the stage before it; the first stage's own `after`, if any


def read_stages(file: Path) -> list[dict[str, Any]]:
    """The file's [[stage]] tables, in order."""
    try:
        stages = tomllib.loads(file.read_text(encoding="utf-8")).get("stage")
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise StudioError(f"{file}: cannot read it as TOML ({error})") from None
    if not isinstance(stages, list) or not stages or not all(isinstance(stage, dict) for stage in stages):
        raise StudioError(f"{file}: no stages; write one [[stage]] table per stage, each `train`'s options")
    return stages


def stage_name(file: Path, number: int, given: str | None) -> str:
    """A stage's run name: its own `name`, else the file's name and the stage's number (`chain-2`)."""
    return given or f"{file.stem}-{number}"


@contextmanager
def stage_errors(number: int, name: str) -> Iterator[None]:
    """A stage's mistake, whatever finds it, as one line naming the stage."""
    try:
        yield
    except StudioError as error:
        raise StudioError(f"stage {number} ({name}): {error}") from None


def create_pipeline(stages: list[Stage], progress: Callable[[str, int, int], None] | None = None) -> None:
    """Prepare every stage's run in order, then queue them all, each after the one before; a stage that cannot
    be prepared is one line naming it, and nothing is queued."""
    from studio.runs.prepare import prepare_run

    created = []
    try:
        for number, stage in enumerate(stages, start=1):
            with stage_errors(number, stage.name):
                created.append(prepare_run(stage.config, stage.name, progress, stage.after))
    except BaseException:
        for run_dir in created:
            delete_run(run_dir)
        raise
    for stage in stages:
        add_entry(stage.name, stage.after)
    ensure_runner()
