"""The studio's view of the run queue and of sweeps, driven headless with Pilot, and their snapshots.

Run folders, queue entries and the sweep file are written by hand: fixed events, no process, no runner (a runner's
start is recorded, not made)."""

from __future__ import annotations

import os
import sys

import pytest

import widgets.panes.runs
from studio.queue import entries as run_queue
from studio.queue.sweep import Sweep, SweepRun, write_sweep
from studio.runs.control import create_run
from tests.helpers import (
    T0,
    fixture_events,
    kill_queue_runner,
    record_runner_starts,
    tiny_config,
    wait_for,
    write_fixture_run,
)
from tests.test_ui_runs import chart_curves, open_runs_tab, record_notifications
from widgets.app import StudioApp
from widgets.run_table import RunTable
from widgets.screens.compare import CompareScreen
from widgets.screens.sweep import SweepScreen

LR_VALUES = {"s-lr1e-3": ("1e-3", 0.4), "s-lr3e-3": ("3e-3", 0.0), "s-lr1e-2": ("1e-2", 0.9)}  # val loss offsets


def events_with_val_offset(offset: float) -> list[dict]:
    return [
        {**event, "val_loss": round(event["val_loss"] + offset, 4)} if event["kind"] == "eval" else event
        for event in fixture_events()
    ]


@pytest.fixture
def sweep_home(studio_home, monkeypatch):
    """A finished sweep of three runs (the middle one best), a run of no sweep, and two runs waiting in a paused
    queue (one of them the sweep's fourth)."""
    runs = [write_fixture_run(name, events_with_val_offset(offset)) for name, (_, offset) in LR_VALUES.items()]
    runs.append(write_fixture_run("lonely"))
    for name in ("s-lr3e-2", "next-up"):
        runs.append(create_run(tiny_config(), name))
    for age, run_dir in enumerate(runs):
        for path in run_dir.iterdir():
            os.utime(path, (T0 - 3600 * (10 - age), T0 - 3600 * (10 - age)))
    values = {**{name: text for name, (text, _) in LR_VALUES.items()}, "s-lr3e-2": "3e-2"}
    write_sweep(Sweep("s", ["train.lr"], [SweepRun(name, {"train.lr": text}) for name, text in values.items()]))
    run_queue.pause()
    run_queue.add_entry("s-lr3e-2")
    run_queue.add_entry("next-up")
    monkeypatch.setattr(widgets.panes.runs, "clock", lambda: T0)


@pytest.mark.asyncio
async def test_the_runs_tab_shows_the_queue_in_order_and_paused(sweep_home, torch_blocked):
    app = StudioApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs_tab(pilot, rows=6)
        line = str(app.query_one("#queue-line").render())
        assert "2 waiting: s-lr3e-2, next-up" in line and "paused" in line
        assert str(table.get_row("next-up")[2]) == "queued" and str(table.get_row("lonely")[2]) == "finished"
        run_queue.cancel("next-up")
        run_queue.cancel("s-lr3e-2")
        run_queue.resume()
        app.query_one(widgets.panes.runs.RunsPane).refresh_runs()
        await wait_for(pilot, lambda: not app.query_one("#queue-line").display, what="the queue line to hide")


@pytest.mark.asyncio
async def test_the_runs_tab_shows_what_a_waiting_stage_waits_for_and_why_a_cancelled_one_never_started(
    studio_home, torch_blocked
):
    write_fixture_run("pre")
    for name in ("sft", "dpo", "old-sft"):
        create_run(tiny_config(), name)
    run_queue.pause()
    run_queue.add_entry("sft", after="pre")
    run_queue.add_entry("dpo", after="sft")
    run_queue.cancel_stage("old-sft", "pre failed")
    app = StudioApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs_tab(pilot, rows=4)
        assert "2 waiting: sft (after pre), dpo (after sft)" in str(app.query_one("#queue-line").render())
        assert str(table.get_row("sft")[2]) == "queued"
        assert str(table.get_row("old-sft")[2]) == "cancelled: pre failed"


@pytest.mark.asyncio
async def test_the_runs_tab_starts_a_runner_for_a_queue_whose_runner_was_killed(studio_home, monkeypatch):
    for name in ("first", "second"):
        create_run(tiny_config(), name)
        run_queue.add_entry(name)
    kill_queue_runner()
    started = record_runner_starts(monkeypatch)
    app = StudioApp()
    seen = record_notifications(app)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_runs_tab(pilot, rows=2)
        await wait_for(pilot, lambda: seen, what="a note")
        assert seen[0] == (
            "warning",
            "the queue's runner had stopped (killed?) while runs waited: started a new one, they go on",
        )
        assert started[0] == [sys.executable, "-m", "studio.queue.runner"]
        assert "2 waiting: first, second" in str(app.query_one("#queue-line").render())


@pytest.mark.asyncio
async def test_a_sweep_opens_sorted_by_final_val_loss_and_compares_all_its_started_runs(sweep_home, torch_blocked):
    app = StudioApp()
    seen = record_notifications(app)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_runs_tab(pilot, rows=6)
        table.move_cursor(row=list(table.runs).index("lonely"))
        await pilot.press("w")
        await wait_for(pilot, lambda: seen, what="a note")
        assert seen[-1][0] == "warning" and "belongs to no sweep" in seen[-1][1]
        table.move_cursor(row=list(table.runs).index("s-lr1e-2"))
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.results, what="the sweep")
        sweep_table = app.screen.query_one("#sweep-table")
        order = [sweep_table.get_row_at(row)[1] for row in range(sweep_table.row_count)]
        assert order == ["s-lr3e-3", "s-lr1e-3", "s-lr1e-2", "s-lr3e-2"]  # the queued one, without a loss, last
        assert sweep_table.get_row_at(0)[2] == "3e-3" and str(sweep_table.get_row_at(3)[3]) == "queued"
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the compare view")
        await wait_for(pilot, lambda: len(chart_curves(app.screen)) == 6, what="train and val curves of 3 runs")
        assert {label.split()[0] for label in chart_curves(app.screen)} == {"s-lr3e-3", "s-lr1e-3", "s-lr1e-2"}
        await pilot.press("escape")
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "run_dir", None), what="the best run's dashboard")
        assert app.screen.run_dir.name == "s-lr3e-3"


# ---- snapshots ------------------------------------------------------------------------------------------------
async def show_runs(pilot) -> None:
    await pilot.press("4")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


async def show_sweep(pilot) -> None:
    await show_runs(pilot)
    table = pilot.app.query_one(RunTable)
    table.move_cursor(row=list(table.runs).index("s-lr1e-3"))
    await pilot.press("w")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)
    await pilot.app.workers.wait_for_complete()


def test_runs_tab_with_a_paused_queue(sweep_home, snap_compare):
    assert snap_compare(StudioApp(), terminal_size=(100, 24), run_before=show_runs)


def test_sweep_results(sweep_home, snap_compare):
    assert snap_compare(StudioApp(), terminal_size=(100, 24), run_before=show_sweep)
