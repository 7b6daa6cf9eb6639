"""The studio's leaderboard (`l` on the Runs tab): the rows `llm-studio leaderboard` prints, sortable, driven
headless with Pilot, and its snapshot. Run folders and kept results are written by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import studio.tasks.evaluations
import widgets.screens.leaderboard
from studio.reports.leaderboard import leaderboard
from studio.tasks.evaluations import Evaluated, home_evaluations_file, record_evaluation
from tests.helpers import T0, fixture_events, wait_for, write_fixture_run
from tests.test_leaderboard import kept, with_task_scores
from tests.test_ui_runs import open_runs_tab, record_notifications
from widgets.app import StudioApp
from widgets.screens.leaderboard import LeaderboardScreen


@pytest.fixture
def judged_home(studio_home, monkeypatch):
    """Two runs and an export judged on `sums` (one run by its eval tasks too), one run on `words`."""
    monkeypatch.setattr(studio.tasks.evaluations, "time", SimpleNamespace(time=lambda: T0 - 7200))  # 2h before
    first = write_fixture_run("first")
    kept(first, 100, 0.5, 0.05)
    second = write_fixture_run("second", with_task_scores(fixture_events(), {20: 0.6, 60: 0.9, 100: 0.7}))
    kept(second, 100, 0.75, 0.04)
    record_evaluation(Evaluated("/exports/sums-model", None, home_evaluations_file()), "sums", "f1", 0, {"acc": 0.8})
    words = {"task": "words", "exact_match": 0.25, "exact_match_stderr": 0.1, "token_f1": 0.5}
    record_evaluation(Evaluated("first", 60, first / "evaluations.jsonl"), "words", "w1", 0, words)
    monkeypatch.setattr(widgets.screens.leaderboard, "clock", lambda: T0)
    return studio_home


def shown(screen: LeaderboardScreen) -> list[tuple[str, ...]]:
    table = screen.query_one("#leaderboard-table")
    return [tuple(str(cell) for cell in table.get_row_at(row)[:4]) for row in range(table.row_count)]


@pytest.mark.asyncio
async def test_the_leaderboard_opens_from_the_runs_tab_sorts_and_opens_a_runs_dashboard(judged_home, torch_blocked):
    app = StudioApp()
    seen = record_notifications(app)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_runs_tab(pilot, rows=2)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LeaderboardScreen) and app.screen.shown, what="results")
        screen = app.screen
        assert screen.tasks == leaderboard()  # the CLI's rows, in the CLI's order
        assert shown(screen) == [
            ("sums", "1", "second", "60"),
            ("sums", "2", "/exports/sums-model", "-"),
            ("sums", "3", "second", "100"),
            ("sums", "4", "second", "100"),
            ("sums", "5", "first", "100"),
            ("words", "1", "first", "60"),
        ]
        assert "2 tasks, 6 results · by score" in str(screen.query_one("#leaderboard-title").render())
        await pilot.press("s")
        assert [row[2] for row in shown(screen)] == [
            "/exports/sums-model",
            "first",
            "second",
            "second",
            "second",
            "first",
        ]
        assert "by target" in str(screen.query_one("#leaderboard-title").render())
        await pilot.press("s", "s", "s")  # step, newest, and back to the score
        assert shown(screen)[0] == ("sums", "1", "second", "60")
        screen.query_one("#leaderboard-table").move_cursor(row=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: seen, what="a note")
        assert seen[-1][0] == "warning" and "/exports/sums-model is not a run" in seen[-1][1]
        screen.query_one("#leaderboard-table").move_cursor(row=0)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "run_dir", None), what="the best run's dashboard")
        assert app.screen.run_dir.name == "second"


@pytest.mark.asyncio
async def test_r_shows_the_checkpoints_ratings_as_the_cli_prints_them_sorts_them_and_opens_a_run(
    judged_home, torch_blocked
):
    """`r`: the playground's judged pairs as ratings, the rows of `leaderboard --ratings` (rating_cells), best first;
    `s` orders them by games, then by name; `enter` opens the rated run's dashboard; `r` again: the tasks."""
    from studio.playground_preferences import Answer, record_preference
    from studio.reports.ratings import preference_pairs, rating_cells, ratings

    judged = [(("second", 100), ("first", 100))] * 3 + [(("first", 100), ("second", 100))]
    judged += [(("first", 60), ("second", 100))]
    for chosen, rejected in judged:
        record_preference(Answer("hi", "a", *chosen), Answer("hi", "b", *rejected))
    app = StudioApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await open_runs_tab(pilot, rows=2)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LeaderboardScreen) and app.screen.shown, what="results")
        screen = app.screen
        await pilot.press("r")
        table = screen.query_one("#leaderboard-table")
        rows = [tuple(str(cell) for cell in table.get_row_at(row)) for row in range(table.row_count)]
        expected = ratings(preference_pairs())
        assert rows == [(str(rank), *rating_cells(rating)) for rank, rating in enumerate(expected, start=1)]
        assert [row[1] for row in rows] == ["first@60", "second@100", "first@100"]  # 1-0 against the 3-2 one
        title = str(screen.query_one("#leaderboard-title").render())
        assert title == "ratings of 3 checkpoints: Bradley-Terry over 5 judged pairs, Elo scale (mean 1000) · by rating"
        await pilot.press("s")  # by games: second@100 played 5, first@100 4, first@60 1
        assert [str(table.get_row_at(row)[1]) for row in range(3)] == ["second@100", "first@100", "first@60"]
        await pilot.press("s")
        assert [str(table.get_row_at(row)[1]) for row in range(3)] == ["first@100", "first@60", "second@100"]
        table.move_cursor(row=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "run_dir", None), what="the rated run's dashboard")
        assert app.screen.run_dir.name == "first"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, LeaderboardScreen), what="the leaderboard again")
        await pilot.press("r")
        assert "2 tasks, 6 results · by score" in str(app.screen.query_one("#leaderboard-title").render())


@pytest.mark.asyncio
async def test_an_empty_leaderboard_says_how_to_get_results(studio_home, torch_blocked):
    write_fixture_run("alone")
    app = StudioApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await open_runs_tab(pilot, rows=1)
        assert "l Leaderboard" in str(app.screen.query_one("KeyHints").render())
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LeaderboardScreen), what="the leaderboard")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "llm-studio evaluate RUN --task FILE" in str(app.screen.query_one("#leaderboard-title").render())
        assert app.screen.query_one("#leaderboard-table").row_count == 0
        await pilot.press("r")
        assert "press a or b for the better answer" in str(app.screen.query_one("#leaderboard-title").render())


async def show_leaderboard(pilot) -> None:
    await pilot.press("4")
    await pilot.app.workers.wait_for_complete()
    await pilot.press("l")
    await pilot.pause(0.1)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def test_leaderboard_snapshot(judged_home, snap_compare):
    assert snap_compare(StudioApp(), terminal_size=(110, 20), run_before=show_leaderboard)
