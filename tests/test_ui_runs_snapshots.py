"""Snapshots of the Runs pane and a run's dashboard inside the whole studio, at 80x24 and 160x48.

Deterministic: fixture run folders with fixed events and file times, a fixed clock for the ages, fixed CPU / RAM
figures for the hardware panel and no GPU.
"""

from __future__ import annotations

import os

import pytest

import widgets.hardware_panel
import widgets.panes.runs
from studio.hardware import CpuStats
from studio.run_folder.layout import read_config
from tests.helpers import T0, fixture_events, with_memory, write_fixture_run
from widgets.app import StudioApp
from widgets.screens.dashboard import DashboardScreen

SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def fixed_runs(studio_home, monkeypatch):
    runs = [
        write_fixture_run("shakes-small"),
        write_fixture_run(
            "code-tiny",
            events=with_memory(fixture_events(failed_at=40), 130 * 2**20, 330 * 2**20, 520 * 2**20),
            preset="small",
            log="Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory\n",
        ),
    ]
    for age_hours, run_dir in zip((5, 2), runs):  # the finished run is older: it lists first
        for path in run_dir.iterdir():
            os.utime(path, (T0 - 3600 * age_hours, T0 - 3600 * age_hours))
    monkeypatch.setattr(widgets.panes.runs, "clock", lambda: T0)
    monkeypatch.setattr(widgets.hardware_panel, "gpu_stats", lambda: [])
    monkeypatch.setattr(widgets.hardware_panel, "POLL_SECONDS", 3600)  # one reading: the CPU chart stays hidden
    monkeypatch.setattr(
        widgets.hardware_panel,
        "cpu_stats",
        lambda: CpuStats(cores=16, utilization=12.0, ram_used=18 * 1024**3, ram_total=128 * 1024**3),
    )
    return runs


async def show_runs(pilot) -> None:
    await pilot.press("4")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def open_run(row: int):
    async def run_before(pilot) -> None:
        await show_runs(pilot)
        await pilot.press(*["down"] * row, "enter")
        await pilot.app.workers.wait_for_complete()
        assert isinstance(pilot.app.screen, DashboardScreen) and pilot.app.screen.view is not None
        await pilot.pause(0.5)  # past one chart redraw tick

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_runs_pane(fixed_runs, snap_compare, size):
    assert snap_compare(StudioApp(), terminal_size=size, run_before=show_runs)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_of_a_finished_run(fixed_runs, snap_compare, size):
    assert snap_compare(StudioApp(), terminal_size=size, run_before=open_run(0))


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_of_a_failed_run(fixed_runs, snap_compare, size):
    assert snap_compare(StudioApp(), terminal_size=size, run_before=open_run(1))


def test_dashboard_of_a_private_run(fixed_runs, snap_compare):
    """DP-SGD's ε spent: a line on the loss chart and "ε 7.9 of 8 at δ 1e-05" at the end of the metrics line."""
    events = fixture_events()
    for event in events:
        if event["kind"] == "train":
            event["epsilon"] = round(8 * (event["step"] / 100) ** 0.5 * 0.99, 4)
    run_dir = write_fixture_run("private-tiny", events=events)
    config = read_config(run_dir)
    config.train.privacy_epsilon = 8.0
    config.save(run_dir / "config.toml")
    for path in run_dir.iterdir():
        os.utime(path, (T0 - 3600, T0 - 3600))  # the newest: it lists last
    assert snap_compare(StudioApp(), terminal_size=(160, 48), run_before=open_run(2))


async def export_as_gguf(pilot) -> None:
    """The export dialog over the Runs pane, GGUF chosen with q8_0 (the folder fixed: the home is temporary)."""
    await show_runs(pilot)
    await pilot.press("e")
    await pilot.pause()
    pilot.app.screen.query_one("#export-folder").value = "~/exports/shakes-small"
    pilot.app.screen.query_one("#export-format").value = "gguf"
    await pilot.pause()
    pilot.app.screen.query_one("#export-quant").value = "q8_0"
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
def test_export_dialog_with_gguf(fixed_runs, snap_compare, size):
    assert snap_compare(StudioApp(), terminal_size=size, run_before=export_as_gguf)
