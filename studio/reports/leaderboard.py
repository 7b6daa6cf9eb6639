"""`llm-studio leaderboard`: every run and export judged on a task, best first, one table per task.

Two sources: the results `evaluate --task`/`--harness` kept (studio.tasks.evaluations: each run's file, and the
home's for Hugging Face folders), and the eval tasks a run scored while it trained (its History's `task:` series:
the latest score and the best). A task is known by its name and its rows' fingerprint: two files of one name are
ranked apart (labelled by their fingerprints). Scores from training carry no fingerprint; they join the one file
of their name that results were kept for, and stand apart when there are several. Few-shot results stand apart
from 0-shot ones. Torch-free: the studio's leaderboard reads this too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.formatting import format_age
from studio.run_folder.history import TASK_HEADLINES, TASK_SERIES, History, Series, task_headlines
from studio.run_folder.layout import EVALUATIONS, EVENTS, list_run_dirs
from studio.tasks.evaluations import home_evaluations_file, read_evaluations

BESIDE_HEADLINE = {"acc": "acc_norm", "exact_match": "token_f1"}  # the second score shown: length-normalised, partial
HOW_TO_GET_RESULTS = "`llm-studio evaluate RUN --task FILE` (or train with --set train.eval_tasks=FILE)"
FROM_TRAINING = "training"  # a group label's mark for training's scores that match no one kept file


@dataclass(frozen=True)
class Standing:
    """One model's result on one task: a row of the leaderboard."""

    target: str  # a run's name, or a Hugging Face folder's path
    task: str
    source: str  # "evaluate", or training's "latest", "best" (both: "latest, best")
    headline: str  # the score it is ranked by: acc, or exact_match
    score: float
    beside: str | None  # acc_norm, or token_f1
    beside_score: float | None
    stderr: float | None  # of the headline score (training's scores have none)
    step: int | None  # the checkpoint's; None for a folder
    t: float | None  # when it was scored (training's: unknown)
    fewshot: int = 0
    fingerprint: str | None = None  # of the task's rows; None for training's


def leaderboard(task: str | None = None) -> dict[str, list[Standing]]:
    """{task label: its standings, best first}, tasks by name; `task` keeps that task's alone."""
    standings = [
        standing for standing in (*_kept_standings(), *_training_standings()) if task is None or standing.task == task
    ]
    groups: dict[str, list[Standing]] = {}
    for standing in standings:
        groups.setdefault(_group_label(standing, standings), []).append(standing)
    return {
        label: sorted(group, key=lambda standing: (-standing.score, -(standing.t or 0)))
        for label, group in sorted(groups.items())
    }


COLUMNS = ("target", "step", "score", "stderr", "beside", "from", "when")  # what standing_cells shows


def standing_cells(standing: Standing, now: float) -> tuple[str, ...]:
    """A standing as the CLI's table and the studio's show it, one cell per COLUMNS."""
    return (
        standing.target,
        "-" if standing.step is None else str(standing.step),
        f"{standing.headline} {standing.score:.4f}",
        "-" if standing.stderr is None else f"± {standing.stderr:.4f}",
        "-" if standing.beside is None else f"{standing.beside} {standing.beside_score:.4f}",
        standing.source,
        "-" if standing.t is None else f"{format_age(now - standing.t)} ago",
    )


def _kept_standings() -> list[Standing]:
    files = [home_evaluations_file(), *(run_dir / EVALUATIONS for run_dir in list_run_dirs())]
    return [standing for file in files for record in read_evaluations(file) if (standing := _kept(record))]


def _kept(record: dict[str, Any]) -> Standing | None:
    """A kept result's standing; None when it has no headline score (a harness task judged by perplexity)."""
    metrics = record["metrics"]
    headline = next((name for name in TASK_HEADLINES if _number(metrics.get(name))), None)
    if headline is None:
        return None
    beside = BESIDE_HEADLINE[headline]
    beside_score, stderr = (_number_or_none(metrics.get(name)) for name in (beside, f"{headline}_stderr"))
    return Standing(
        str(record["target"]), str(record["task"]), "evaluate", headline, float(metrics[headline]),
        beside if beside_score is not None else None, beside_score, stderr,
        record["step"], record["t"], record["fewshot"], record["fingerprint"],
    )  # fmt: skip


def _number_or_none(value: Any) -> float | None:
    return float(value) if _number(value) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _training_standings() -> list[Standing]:
    standings = []
    for run_dir in list_run_dirs():
        if not (run_dir / EVENTS).is_file():
            continue  # created, never started
        history = History.load(run_dir)
        history.read(run_dir)
        for _, task, headline in task_headlines(history.series):
            standings += _latest_and_best(run_dir.name, task, headline, history.series)
    return standings


def _latest_and_best(run: str, task: str, headline: str, series: dict[str, Series]) -> list[Standing]:
    """A run's standings from its eval tasks: the latest score, and the best one when it came at another step."""
    scores = series[f"{TASK_SERIES}{task}:{headline}"]
    beside = BESIDE_HEADLINE[headline]
    beside_series = series.get(f"{TASK_SERIES}{task}:{beside}")
    beside_at = dict(zip(beside_series.steps, beside_series.values)) if beside_series else {}
    latest = len(scores.values) - 1
    best = max(range(len(scores.values)), key=lambda i: (scores.values[i], scores.steps[i]))
    same = scores.values[best] == scores.values[latest]
    sources = {latest: "latest, best"} if same else {latest: "latest", best: "best"}
    return [
        Standing(run, task, source, headline, scores.values[i], beside if beside_at else None,
                 beside_at.get(scores.steps[i]), None, scores.steps[i], None)
        for i, source in sources.items()
    ]  # fmt: skip


def _group_label(standing: Standing, standings: list[Standing]) -> str:
    """The task's name, with its shots when few-shot, and its fingerprint when several files share the name (for
    training's scores: the one kept file's, else `training`)."""
    label = standing.task + (f" {standing.fewshot}-shot" if standing.fewshot else "")
    kept = {s.fingerprint for s in standings if (s.task, s.fewshot) == (standing.task, standing.fewshot)} - {None}
    if len(kept) <= 1:
        return label
    return f"{label} [{standing.fingerprint or FROM_TRAINING}]"
