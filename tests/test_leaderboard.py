"""The leaderboard (`llm-studio leaderboard`): task results `evaluate` keeps, and runs' eval-task scores, ranked per
task; the playground's judged pairs as Bradley-Terry ratings (`--ratings`)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from studio.playground_preferences import Answer, record_preference
from studio.reports.leaderboard import leaderboard
from studio.reports.ratings import ELO_MEAN, fit_strengths, preference_pairs, ratings
from studio.run_folder.layout import EVALUATIONS
from studio.tasks.evaluations import (
    Evaluated,
    home_evaluations_file,
    read_evaluations,
    record_evaluation,
    task_fingerprint,
)
from tests.helpers import ADD_FUNCTION, fixture_events, train_runs, write_fixture_run
from tests.test_tasks import HARNESS_YAML

CHOICE_ROWS = [
    {"context": "1 + 1 =", "choices": ["2", "3"], "gold": 0},
    {"context": "2 + 2 =", "choices": ["5", "4"], "gold": 1},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def kept(run_dir: Path, step: int, acc: float, stderr: float, fingerprint: str = "f1", fewshot: int = 0) -> None:
    """A result `evaluate --task sums.jsonl` keeps for the run's checkpoint at `step`."""
    metrics = {"task": "sums", "kind": "multiple_choice", "acc": acc, "acc_stderr": stderr, "acc_norm": acc / 2}
    record_evaluation(Evaluated(run_dir.name, step, run_dir / EVALUATIONS), "sums", fingerprint, fewshot, metrics)


def with_task_scores(events: list[dict], scores: dict[int, float]) -> list[dict]:
    """A fixture run's events with its eval events carrying the task `sums`'s scores at these steps."""
    for event in events:
        if event["kind"] == "eval" and event["step"] in scores:
            acc = scores[event["step"]]
            event["tasks"] = {"sums": {"acc": acc, "acc_norm": acc - 0.1}}
    return events


def test_kept_results_and_training_scores_are_ranked_best_first(studio_home, run_cli):
    first = write_fixture_run("first")
    kept(first, 100, 0.5, 0.05)
    second = write_fixture_run("second", with_task_scores(fixture_events(), {20: 0.6, 60: 0.9, 100: 0.7}))
    kept(second, 100, 0.75, 0.04)
    export = Evaluated("/exports/sums-model", None, home_evaluations_file())
    record_evaluation(export, "sums", "f1", 0, {"acc": 0.8, "acc_stderr": 0.02})

    (group,) = leaderboard().values()
    assert [(s.target, s.source, s.score, s.step) for s in group] == [
        ("second", "best", 0.9, 60),
        ("/exports/sums-model", "evaluate", 0.8, None),
        ("second", "evaluate", 0.75, 100),
        ("second", "latest", 0.7, 100),
        ("first", "evaluate", 0.5, 100),
    ]
    assert group[0].beside == "acc_norm" and group[0].beside_score == pytest.approx(0.8)
    assert group[0].stderr is None and group[2].stderr == 0.04

    code, printed, _ = run_cli("leaderboard")
    assert code == 0
    lines = printed.splitlines()
    assert lines[0] == "task sums"
    assert lines[1].split() == ["#", "TARGET", "STEP", "SCORE", "STDERR", "BESIDE", "FROM", "WHEN"]
    assert lines[2].split() == ["1", "second", "60", "acc", "0.9000", "-", "acc_norm", "0.8000", "best", "-"]
    assert lines[4].split()[:9] == ["3", "second", "100", "acc", "0.7500", "±", "0.0400", "acc_norm", "0.3750"]
    assert lines[4].endswith(" ago")

    code, printed, _ = run_cli("leaderboard", "--task", "sums", "--json")
    assert [row["target"] for row in json.loads(printed)["sums"]] == [s.target for s in group]


def test_two_task_files_of_one_name_and_few_shot_results_rank_apart(studio_home):
    run = write_fixture_run("r")
    kept(run, 100, 0.5, 0.05, fingerprint="aaaa")
    kept(run, 100, 0.6, 0.05, fingerprint="bbbb")
    kept(run, 100, 0.7, 0.05, fingerprint="aaaa", fewshot=5)
    tasks = leaderboard()
    assert {label: [s.score for s in group] for label, group in tasks.items()} == {
        "sums [aaaa]": [0.5],
        "sums [bbbb]": [0.6],
        "sums 5-shot": [0.7],
    }
    assert leaderboard("other") == {}


def test_nothing_recorded_is_one_line_saying_how_to_get_results(studio_home, run_cli):
    code, printed, _ = run_cli("leaderboard")
    assert code == 0 and len(printed.splitlines()) == 1
    assert "llm-studio evaluate RUN --task FILE" in printed
    write_fixture_run("r")
    kept(write_fixture_run("s"), 100, 0.5, 0.05)
    code, printed, _ = run_cli("leaderboard", "--task", "other")
    assert code == 0 and printed.startswith("no results on task other yet")


def test_a_line_a_crash_cut_short_is_passed_over_and_the_next_record_kept_whole(studio_home):
    run = write_fixture_run("r")
    kept(run, 100, 0.5, 0.05)
    with open(run / EVALUATIONS, "a", encoding="utf-8") as file:
        file.write('{"t": 1, "target": "r", "ste')  # a crash in the middle of a line
    kept(run, 100, 0.6, 0.05)
    assert [record["metrics"]["acc"] for record in read_evaluations(run / EVALUATIONS)] == [0.5, 0.6]


def test_a_task_is_fingerprinted_by_its_rows_not_by_where_they_stand(tmp_path):
    from studio.tasks.rows import read_task

    (tmp_path / "other").mkdir()
    task = write_rows(tmp_path / "sums.jsonl", CHOICE_ROWS)
    arc = [{"question": row["context"], "choices": {"text": row["choices"], "label": ["A", "B"]},
            "answerKey": "AB"[row["gold"]]} for row in CHOICE_ROWS]  # fmt: skip
    same = write_rows(tmp_path / "other" / "sums.jsonl", arc)  # the same rows in ARC's shape, elsewhere
    fewer = write_rows(tmp_path / "fewer.jsonl", CHOICE_ROWS[:1])
    assert task_fingerprint(read_task(str(same))) == task_fingerprint(read_task(str(task)))
    assert task_fingerprint(read_task(str(fewer))) != task_fingerprint(read_task(str(task)))
    assert len(task_fingerprint(read_task(str(task)))) == 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny Hugging Face folder (an export's layout)."""
    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_model

    folder = tmp_path_factory.mktemp("export") / "base"
    make_hf_model(folder, "llama")
    return folder


def test_evaluate_on_a_folder_keeps_its_result_in_the_home_and_the_leaderboard_shows_it(
    folder, studio_home, tmp_path, run_cli
):
    (tmp_path / "other").mkdir()
    task = write_rows(tmp_path / "sums.jsonl", CHOICE_ROWS)
    other = write_rows(tmp_path / "other" / "sums.jsonl", CHOICE_ROWS[:1])  # other rows under the same name
    code, printed, err = run_cli("evaluate", folder, "--task", task, "--task", other, "--json")
    assert code == 0, err
    scores = json.loads(printed)["tasks"]["sums"]  # the report keeps the last task of a name; the records both

    records = read_evaluations(studio_home / "evaluations.jsonl")
    where = [(r["target"], r["step"], r["task"], r["fewshot"]) for r in records]
    assert where == [(str(folder.resolve()), None, "sums", 0)] * 2
    assert records[0]["fingerprint"] != records[1]["fingerprint"]
    assert records[1]["metrics"] == scores and records[1]["metrics"]["rows"] == 1
    assert records[0]["metrics"]["rows"] == 2 and records[0]["t"] <= records[1]["t"]

    code, _, err = run_cli("evaluate", folder, "--task", task, "--checkpoint", "5")
    assert code != 0 and err.strip().endswith("drop --checkpoint") and len(err.strip().splitlines()) == 1
    assert len(read_evaluations(studio_home / "evaluations.jsonl")) == 2

    code, printed, _ = run_cli("leaderboard", "--json")
    tasks = json.loads(printed)
    assert sorted(tasks) == sorted(f"sums [{r['fingerprint']}]" for r in records)
    assert [row["score"] for label in sorted(tasks) for row in tasks[label]] == [
        r["metrics"]["acc"] for r in sorted(records, key=lambda r: r["fingerprint"])
    ]


@pytest.mark.slow
def test_a_harness_result_is_kept_and_ranked_too(folder, studio_home, tmp_path, run_cli):
    pytest.importorskip("lm_eval")
    include = tmp_path / "harness-tasks"
    include.mkdir()
    task = write_rows(tmp_path / "sums.jsonl", CHOICE_ROWS)
    (include / "sums.yaml").write_text(HARNESS_YAML.format(task="sums_local", file=task), encoding="utf-8")
    code, printed, err = run_cli("evaluate", folder, "--harness", "sums_local", "--harness-include", include, "--json")
    assert code == 0, err
    (record,) = read_evaluations(home_evaluations_file())
    assert (record["task"], record["fingerprint"], record["target"]) == ("sums_local", "harness", str(folder.resolve()))
    assert record["metrics"] == json.loads(printed)["harness"]["sums_local"]
    (standing,) = leaderboard("sums_local")["sums_local"]
    assert (standing.headline, standing.score) == ("acc", record["metrics"]["acc"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A home with a run scored on a task file at each evaluation (every 10 steps), checkpoints at 10 and 20; the
    home and the task file."""
    task = write_rows(tmp_path_factory.mktemp("task") / "sums.jsonl", CHOICE_ROWS)
    extra = ["--max-steps", "20", "--set", "train.checkpoint_interval=10", "--set", f"train.eval_tasks={task}"]
    return train_runs(tmp_path_factory, ADD_FUNCTION * 200, {"r": extra}), task


@pytest.mark.slow
def test_evaluate_on_a_run_keeps_its_checkpoint_step_in_the_run_folder(trained, monkeypatch, run_cli):
    home, task = trained
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    for checkpoint in (["--checkpoint", "10"], []):
        code, _, err = run_cli("evaluate", "r", "--task", task, *checkpoint)
        assert code == 0, err
    records = read_evaluations(home / "runs" / "r" / EVALUATIONS)
    assert [(r["target"], r["step"], r["task"]) for r in records] == [("r", 10, "sums"), ("r", 20, "sums")]
    assert not home_evaluations_file().exists()

    (group,) = leaderboard().values()  # the kept results and the training's scores, one task: the same file
    assert sorted((s.source, s.step) for s in group if s.source == "evaluate") == [("evaluate", 10), ("evaluate", 20)]
    assert {s.source for s in group} - {"evaluate"} in ({"latest, best"}, {"latest", "best"})
    latest = next(s for s in group if "latest" in s.source)
    assert latest.step == 20 and latest.score == next(s.score for s in group if s.step == 20)  # scored alike


def test_ratings_of_a_hand_checked_pair_a_beats_b_three_times_of_four():
    (a, b) = ratings([("A", "B")] * 3 + [("B", "A")])
    assert (a.player, a.wins, a.losses, b.player, b.wins, b.losses) == ("A", 3, 1, "B", 1, 3)
    # the MLE's strength ratio is 3 (the prior takes under 1% from it): 400 · log10(3) = 191 Elo points apart
    assert a.rating - b.rating == pytest.approx(400 * math.log10(3), rel=0.01)
    assert (a.rating + b.rating) / 2 == pytest.approx(ELO_MEAN)
    assert a.low < a.rating < a.high and b.low < b.rating < b.high
    assert ratings([("A", "B")] * 3 + [("B", "A")]) == [a, b]  # a fixed seed: the same intervals


def test_a_player_who_always_wins_stays_finite():
    strengths = fit_strengths(np.array([[0.0, 5.0], [0.0, 0.0]]))  # A beat B 5 times of 5
    assert math.isfinite(strengths[0] - strengths[1]) and 3 < strengths[0] - strengths[1] < 20


def test_ratings_recover_the_order_of_true_strengths():
    true = {"p0": 0.0, "p1": 0.5, "p2": 1.0, "p3": 1.5, "p4": 2.5}
    generator = random.Random(7)
    pairs = []
    for _ in range(600):
        one, other = generator.sample(sorted(true), 2)
        wins = generator.random() < 1 / (1 + math.exp(true[other] - true[one]))
        pairs.append((one, other) if wins else (other, one))
    found = ratings(pairs, samples=200)
    assert [rating.player for rating in found] == ["p4", "p3", "p2", "p1", "p0"]
    elo_apart = 400 / math.log(10) * (true["p4"] - true["p0"])
    assert found[0].rating - found[-1].rating == pytest.approx(elo_apart, rel=0.25)


def test_leaderboard_ratings_reads_the_playground_preferences(studio_home, run_cli):
    code, printed, _ = run_cli("leaderboard", "--ratings")
    assert code == 0 and "press a or b" in printed
    for chosen, rejected in [(("r", 20), ("r", 10))] * 3 + [(("r", 10), ("r", 20)), (("s", "latest"), ("r", 10))]:
        record_preference(Answer("hi", "a", *chosen), Answer("hi", "b", *rejected))
    assert preference_pairs() == [("r@20", "r@10")] * 3 + [("r@10", "r@20"), ("s@latest", "r@10")]
    code, printed, _ = run_cli("leaderboard", "--ratings")
    lines = printed.splitlines()
    assert lines[0].split() == ["CHECKPOINT", "RATING", "95%", "INTERVAL", "WON-LOST"]
    assert [line.split()[0] for line in lines[1:4]] == ["s@latest", "r@20", "r@10"]
    assert lines[2].split()[-1] == "3-1" and lines[3].split()[-1] == "1-4"
    assert lines[4] == "Bradley-Terry over 5 judged pairs, Elo scale (mean 1000)"
    code, printed, _ = run_cli("leaderboard", "--ratings", "--json")
    assert [row["player"] for row in json.loads(printed)] == ["s@latest", "r@20", "r@10"]
