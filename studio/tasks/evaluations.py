"""Task results kept for the leaderboard: each result `evaluate --task` or `--harness` computes is appended as one
JSON line, to the run's `evaluations.jsonl` for a run (it goes when the run goes), to the home's
`evaluations.jsonl` for a Hugging Face folder (an export), named by its resolved path.

A record: `t` (unix time), `target` (the run's name, or the folder's path), `step` (the checkpoint's; null for a
folder), `task`, `fingerprint` (of the task's rows, so two task files of one name are never ranked together; a
harness task's is `harness`), `fewshot`, and `metrics` as `evaluate` printed them. Appended whole under a lock
(studio.atomic_write `append_line`); a reader skips a line that is not a record (one a crash cut short). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.atomic_write import append_line, appended_records
from studio.errors import StudioError
from studio.paths import studio_home
from studio.run_folder.layout import EVALUATIONS, checkpoint_step, run_or_folder, usable_checkpoint

if TYPE_CHECKING:  # the CLI imports this module at its start, before numpy (which reading task rows imports)
    from studio.tasks.rows import Task

HARNESS_FINGERPRINT = "harness"  # the harness's own tasks: the harness knows their rows, the studio does not
RECORD_FIELDS = ("t", "target", "step", "task", "fingerprint", "fewshot", "metrics")


@dataclass(frozen=True)
class Evaluated:
    """What `evaluate` judges, found before the model loads: the name its results are kept under, the step, the
    file they are appended to."""

    target: str  # a run's name, or a Hugging Face folder's resolved path
    step: int | None  # the run's checkpoint; None for a folder
    file: Path
    note: str | None = None  # when a damaged latest checkpoint was passed over: which, and why


def evaluated(target: str, step: int | None) -> Evaluated:
    """The run (its checkpoint of `step`, or the newest usable one) or the Hugging Face folder that `target` names."""
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        if step is not None:  # as studio.inference.load says it; the harness would pass the step over
            raise StudioError(f"{folder} is a Hugging Face folder with one set of weights: drop --checkpoint")
        return Evaluated(str(folder.resolve()), None, home_evaluations_file())
    run_dir = run_or_folder(target)
    checkpoint, note = usable_checkpoint(run_dir, step)
    return Evaluated(run_dir.name, checkpoint_step(checkpoint), run_dir / EVALUATIONS, note)


def home_evaluations_file() -> Path:
    return studio_home() / EVALUATIONS


def task_fingerprint(task: Task) -> str:
    """A short hash of the task's rows (what each row asks and expects, not where it stands in a file)."""
    rows = [astuple(row)[:-1] for row in task.rows]  # each row's `where` left out: the same rows elsewhere match
    return hashlib.sha256(json.dumps([task.kind, rows]).encode("utf-8")).hexdigest()[:12]


def record_evaluation(where: Evaluated, task: str, fingerprint: str, fewshot: int, metrics: dict[str, Any]) -> None:
    record = dict(zip(RECORD_FIELDS, (round(time.time(), 3), where.target, where.step, task, fingerprint, fewshot)))
    append_line(where.file, json.dumps(record | {"metrics": metrics}, ensure_ascii=False))


def read_evaluations(file: Path) -> list[dict[str, Any]]:
    """The records of an evaluations file ([] when there is none), lines that are not records skipped."""
    return [record for record in appended_records(file) if all(name in record for name in RECORD_FIELDS)]
