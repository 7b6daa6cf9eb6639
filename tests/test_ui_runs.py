"""The Runs pane, a run's dashboard, compare, delete and export, driven headless with Pilot.

Most tests use run folders written by hand (tests/test_run_watch.py): fixed events, no process. One test launches a
real tiny CPU run, stops it from the dashboard and resumes it from the Runs pane.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from textual.widgets import Input, TabbedContent

from studio.cli.main import main
from studio.config import RunConfig
from studio.run_folder.history import History
from studio.run_folder.layout import run_path
from studio.run_folder.status import summarize, trainer_pid
from studio.runs.control import launch, stop_run
from studio.runs.prepare import prepare_run
from tests.helpers import (
    fixture_events,
    record_this_process_as_trainer,
    tiny_config,
    wait_for,
    with_memory,
    write_fixture_run,
)
from widgets.app import StudioApp, live_runs
from widgets.loss_chart import LossChart
from widgets.messages import RunLaunched
from widgets.panes.train import TrainPane
from widgets.run_table import RunTable
from widgets.screens.compare import CompareScreen
from widgets.screens.confirm import ConfirmScreen
from widgets.screens.dashboard import POLL_SECONDS, DashboardScreen
from widgets.screens.export_dialog import ExportDialog
from widgets.screens.file_picker import FilePickerScreen
from widgets.screens.help import HelpScreen

SIZE = (160, 48)
pytestmark = pytest.mark.asyncio


def record_notifications(app: StudioApp) -> list[tuple[str, str]]:
    """Every notify() as (severity, message), passed on to the app as usual."""
    seen: list[tuple[str, str]] = []
    notify = app.notify

    def recording(message, *args, severity="information", **kwargs):
        seen.append((severity, str(message)))
        return notify(message, *args, severity=severity, **kwargs)

    app.notify = recording
    return seen


async def open_runs_tab(pilot, rows: int) -> RunTable:
    await pilot.press("4")
    table = pilot.app.query_one(RunTable)
    await wait_for(pilot, lambda: table.row_count == rows, what=f"{rows} rows in the runs table")
    return table


def chart_curves(screen) -> dict[str, tuple]:
    return {curve.label: curve for curve in screen.query_one(LossChart).curves}


async def test_runs_pane_lists_runs_and_the_dashboard_charts_their_events(studio_home, torch_blocked):
    write_fixture_run("alpha")
    write_fixture_run("beta", events=fixture_events()[:12], preset="small")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=2)
        assert table.has_focus
        assert [str(cell).strip() for cell in table.get_row("alpha")][1:6] == [
            "alpha",
            "finished",
            "100/100",
            "1.3283",
            "1.5551",
        ]
        assert table.get_row("beta")[7:] == ["small", "fixture-data"]
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen) and app.screen.run_dir == run_path("alpha")
        await wait_for(pilot, lambda: "train" in chart_curves(app.screen), what="loss points")
        curves = chart_curves(app.screen)
        assert curves["train"].steps == tuple(range(5, 101, 5)) and not curves["train"].points
        assert curves["val"].steps == (0, 20, 40, 60, 80, 100) and curves["val"].points
        assert curves["train"].values[-1] == 1.3283
        header = str(app.screen.query_one("#run-header").render())
        assert "run: alpha · finished · step 100/100 · 100%" in header and "tokens seen 25.6K" in header
        samples = str(app.screen.query_one("#samples Static").render())
        assert samples.index("@100") < samples.index("@50") < samples.index("@0")  # newest first
        assert "def f100(x):" in samples
        assert not app.screen.query_one("#run-error").display
        chart = app.screen.query_one(LossChart)
        await pilot.press("l", "m")
        assert chart.log_scale and chart.smoothing
        await pilot.press("escape")
        assert table.has_focus and not isinstance(app.screen, DashboardScreen)


async def test_one_run_is_counted_as_one_run(studio_home):
    write_fixture_run("alpha")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        assert str(app.query_one("#runs-hint").render()).startswith("1 run · enter opens a run")


async def test_leaving_a_dashboard_opened_from_a_text_field_gives_the_keys_back_to_the_tabs(studio_home):
    write_fixture_run("alpha")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await pilot.pause()
        run_name = app.query_one("#train-run-name", Input)
        run_name.focus()
        app.query_one(TrainPane).post_message(RunLaunched(run_path("alpha")))  # as a launch from the field does
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the dashboard")
        await pilot.press("escape", "5")
        assert app.query_one("#tabs", TabbedContent).active == "playground"
        assert run_name.value == ""


def write_classifier_run(name: str) -> None:
    """A finished classifier's run: its eval events score accuracy and F1 (0.5 at step 0, 0.875 and 0.75 last)."""
    events = fixture_events()
    for event in (e for e in events if e["kind"] == "eval"):
        last = event["step"] == 100
        event.update(val_acc=0.875 if last else 0.5, val_f1=0.75 if last else 0.5)
    run_dir = write_fixture_run(name, events=events)
    config = RunConfig.load(run_dir / "config.toml")
    config.train.task = "classify"
    config.save(run_dir / "config.toml")


async def test_a_classifiers_accuracy_and_f1_stand_beside_its_loss_on_their_own_axis(studio_home, capsys):
    write_classifier_run("sentiment")
    scores = "val_acc 87.5% · macro-F1 0.750"
    assert main(["runs"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "VAL LOSS  VAL SCORES" in header and scores in row
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=1)
        assert table.get_row("sentiment")[-1] == scores
        await pilot.press("enter")
        await wait_for(pilot, lambda: "val acc" in chart_curves(app.screen), what="the scores charted")
        assert str(app.screen.query_one("#run-header").render()).endswith(f"val loss 1.5551   {scores}")
        curves = chart_curves(app.screen)
        assert curves["val acc"].share and curves["val F1"].share and not curves["val"].share


def write_grpo_run(name: str) -> Path:
    """A finished GRPO run: its train events carry the sampled answers' reward (rising from 0.2 to 0.7), its eval
    events the held-out answers' (and no loss)."""
    events = fixture_events()
    for event in events:
        if event["kind"] == "train":
            event.update(reward=round(0.2 + 0.005 * event["step"], 4), reward_std=0.1)
        elif event["kind"] == "eval":
            del event["val_loss"]
            event.update(val_reward=0.25 if event["step"] < 100 else 0.75, val_reward_std=0.2)
    run_dir = write_fixture_run(name, events=events)
    config = RunConfig.load(run_dir / "config.toml")
    config.train.objective, config.train.rewards = "grpo", ["regex:[a-z]+"]
    config.save(run_dir / "config.toml")
    return run_dir


async def test_a_grpo_runs_train_reward_is_charted_beside_its_val_reward(studio_home):
    run_dir = write_grpo_run("aligned")
    history = History()
    history.read(run_dir)
    assert history.series["reward"].steps[:2] == [5, 10] and history.series["reward"].last() == 0.7
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "train reward" in chart_curves(app.screen), what="the train reward charted")
        curves = chart_curves(app.screen)
        train, val = curves["train reward"], curves["val reward"]
        assert train.values == tuple(history.series["reward"].values) and train.share and not train.points
        assert val.values == (0.25, 0.25, 0.25, 0.25, 0.25, 0.75) and val.share and val.points


async def test_eval_task_scores_are_charted_and_listed_last_and_best(studio_home, tmp_path, capsys):
    events = fixture_events()
    for event in (e for e in events if e["kind"] == "eval"):  # steps 0, 20, ... 100: acc 0.25 up to 0.85, then 0.75
        event["tasks"] = {"meals": {"acc": 0.75 if event["step"] == 100 else 0.25 + event["step"] / 100 * 0.75,
                                    "acc_norm": 0.3},
                          "sums": {"exact_match": 0.1, "token_f1": 0.2}}  # fmt: skip
    write_fixture_run("tasked", events=events)
    scores = "meals acc 0.750 (best 0.850) · sums exact_match 0.100 (best 0.100)"
    assert main(["runs"]) == 0
    assert scores in capsys.readouterr().out.splitlines()[1]
    assert main(["report", "tasked", "--out", str(tmp_path / "report")]) == 0
    assert scores in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=1)
        assert table.get_row("tasked")[-1] == scores
        await pilot.press("enter")
        await wait_for(pilot, lambda: "meals acc" in chart_curves(app.screen), what="the task scores charted")
        curves = chart_curves(app.screen)
        assert curves["meals acc"].share and curves["meals acc"].values[-1] == 0.75
        assert curves["sums exact_match"].share and "meals acc_norm" not in curves  # a task's headline score only


async def test_help_lists_the_keys_of_the_screen_it_is_opened_on_and_scrolls(studio_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fixture_run("alpha")
    app = StudioApp()
    async with app.run_test(size=(80, 24)) as pilot:

        async def keys_here() -> str:
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
            shown = " | ".join(what for _, what in app.screen.keys_here)
            await pilot.press("escape")
            return shown

        data = await keys_here()
        assert "Prepare" in data and "Browse" in data
        await pilot.press("5")
        await pilot.pause()
        assert "Prompt" in await keys_here()
        await pilot.press("1")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePickerScreen), what="the file dialog")
        picker = await keys_here()
        assert "Choose highlighted" in picker and "Parent folder" in picker
        await pilot.press("escape")
        await open_runs_tab(pilot, rows=1)
        assert "Mark" in await keys_here()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the dashboard")
        dashboard = await keys_here()
        assert all(what in dashboard for what in ("Back", "Stop", "Checkpoint", "Log scale", "Smoothing"))
        await pilot.press("question_mark")
        scroll = app.screen.query_one("#help")
        await pilot.press("end")
        await pilot.pause()
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == scroll.max_scroll_y


async def test_a_failed_run_leads_with_its_error_and_the_log(studio_home):
    write_fixture_run("broken", events=fixture_events(failed_at=40), log="Traceback (most recent call last):\nOOM\n")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        await pilot.press("enter")
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None, what="the first poll")
        banner = screen.query_one("#run-error")
        assert banner.display and screen.has_class("-failed")
        assert str(banner.render()) == "failed: out of memory at step 40: lower train.batch_size"
        assert screen.query_one("#log-tail").lines[-1] == "OOM"


async def test_compare_overlays_the_marked_runs(studio_home):
    write_fixture_run("one")
    write_fixture_run("two", events=fixture_events(failed_at=60))
    write_fixture_run("three")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=3)
        seen = record_notifications(app)
        await pilot.press("v")
        assert seen[-1][0] == "warning" and not isinstance(app.screen, CompareScreen)  # nothing marked yet
        await pilot.press("space", "down", "space", "v")
        assert isinstance(app.screen, CompareScreen)
        await wait_for(pilot, lambda: chart_curves(app.screen), what="the compared curves")
        curves = chart_curves(app.screen)
        assert set(curves) == {"one train", "one val", "two train", "two val"}
        assert curves["two train"].steps[-1] == 60 and curves["one train"].steps[-1] == 100
        assert curves["one train"].color != curves["two train"].color


async def test_delete_asks_first(studio_home):
    keep, doomed = write_fixture_run("keep"), write_fixture_run("doomed")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=2)
        await pilot.press("down", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert doomed.exists() and table.row_count == 2
        await pilot.press("d", "y")
        await wait_for(pilot, lambda: table.row_count == 1, what="the deleted run to leave the table")
        assert not doomed.exists() and keep.exists() and table.get_row_at(0)[1] == "keep"


@contextlib.asynccontextmanager
async def runs_tab_on_a_doomed_run():
    """The studio on its Runs tab with two runs, the cursor on `doomed` (which the test removes as a shell would)."""
    write_fixture_run("keep")
    doomed = write_fixture_run("doomed")
    app = StudioApp()
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=2)
        table.move_cursor(row=[*table.runs].index("doomed"))
        yield app, pilot, table, seen, doomed


@pytest.mark.parametrize("keys", [("c",), ()], ids=["checkpoint key", "next poll"])
async def test_a_run_deleted_from_a_shell_closes_its_dashboard_with_a_note(studio_home, torch_blocked, keys):
    async with runs_tab_on_a_doomed_run() as (app, pilot, table, seen, doomed):
        await pilot.press("enter")
        dashboard = app.screen
        await wait_for(pilot, lambda: dashboard.view is not None, what="the dashboard")
        shutil.rmtree(doomed)  # `rm -r` from a shell while the dashboard is open
        await pilot.press(*keys)
        await wait_for(pilot, lambda: not isinstance(app.screen, DashboardScreen), what="the dashboard to close")
        assert seen[-1] == ("warning", "run doomed no longer exists (its folder was removed); back to the runs")
        await wait_for(pilot, lambda: [*table.runs] == ["keep"], what="the runs list without it")
        await pilot.pause(2 * POLL_SECONDS)
        assert seen[-1][1].startswith("run doomed no longer exists") and not any(s == "error" for s, _ in seen)


async def test_a_run_removed_before_its_row_is_opened_gives_a_note(studio_home, torch_blocked):
    async with runs_tab_on_a_doomed_run() as (app, pilot, table, seen, doomed):
        shutil.rmtree(doomed)  # `rm -r` from a shell before the table's next refresh
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, DashboardScreen) and seen[-1][0] == "warning" and "doomed" in seen[-1][1]


async def test_export_runs_the_cli_and_shows_its_last_line(studio_home):
    write_fixture_run("exportable")
    out = studio_home / "exported"
    command = [sys.executable, "-m", "studio.cli", "export", "exportable", "--out", str(out)]
    expected = subprocess.run(command, capture_output=True, text=True).stderr.strip().splitlines()[-1]
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        seen = record_notifications(app)
        await pilot.press("e")
        assert isinstance(app.screen, ExportDialog)
        folder = app.screen.query_one("#export-folder")
        assert folder.value == str(studio_home / "exports" / "exportable")
        folder.value = str(out)
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: any(severity == "error" for severity, _ in seen), timeout=60, what="the export's result"
        )
        assert ("error", expected) in seen  # the run has no checkpoint: the CLI's own one-line reason


async def test_the_export_dialog_offers_gguf_and_its_quantisation(studio_home, monkeypatch):
    write_fixture_run("exportable")
    commands = []

    def recorded(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="for Ollama: ollama create exportable\n", stderr="")

    monkeypatch.setattr("widgets.panes.runs.subprocess.run", recorded)
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        seen = record_notifications(app)
        await pilot.press("e")
        dialog = app.screen
        assert isinstance(dialog, ExportDialog) and dialog.query_one("#export-quant").disabled
        dialog.query_one("#export-format").value = "gguf"
        await pilot.pause()
        assert not dialog.query_one("#export-quant").disabled
        dialog.query_one("#export-quant").value = "q8_0"
        dialog.query_one("#export-folder").value = str(studio_home / "gguf")
        await pilot.click("#export")
        await wait_for(pilot, lambda: len(seen) >= 2, what="the export's result")
    (command,) = commands
    assert command[-7:] == ["exportable", "--out", str(studio_home / "gguf"), "--format", "gguf", "--quant", "q8_0"]
    assert seen[-1] == ("information", "for Ollama: ollama create exportable")


@pytest.fixture
def live_run(studio_home, code_corpus):
    config = tiny_config({"train.max_steps": 100_000, "train.checkpoint_interval": 1000})
    config.data.source = str(code_corpus)
    run_dir = prepare_run(config, "live")
    launch(run_dir)
    yield run_dir
    stop_run(run_dir, timeout=30)


@pytest.mark.slow
async def test_a_real_run_stops_from_the_dashboard_and_resumes_from_the_runs_pane(live_run, torch_blocked):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the live run's dashboard")
        await pilot.pause()  # composed
        screen = app.screen  # the studio opened on it: the one live run
        assert "1 run training" in app.sub_title
        await wait_for(
            pilot,
            lambda: len(chart_curves(screen).get("train", ()).steps or ()) >= 2,
            timeout=90,
            what="train loss points from the live run",
        )
        assert screen.view.status == "running"
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.view.status == "stopped", timeout=90, what="the run to stop")
        stopped_at = screen.view.step
        assert trainer_pid(live_run) is None and summarize(live_run).status == "stopped"
        await pilot.press("escape")
        await open_runs_tab(pilot, rows=1)
        seen = record_notifications(app)
        out = live_run.parent.parent / "exported"
        await pilot.press("e")
        app.screen.query_one("#export-folder").value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(seen) >= 2, timeout=120, what="the export to finish")  # "exporting…", result
        assert seen[-1][0] == "information" and (out / "config.json").exists(), seen
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and app.screen is not screen,
            timeout=30,
            what="the resumed run's dashboard",
        )
        resumed = app.screen
        await wait_for(
            pilot,
            lambda: (
                resumed.view is not None
                and resumed.view.status in ("running", "finished")
                and resumed.view.step > stopped_at
            ),
            timeout=90,
            what="the resumed run to train on",
        )
        assert chart_curves(resumed)["train"].steps[0] == 5  # the whole history, not only the new part


async def test_a_damaged_run_shows_as_damaged_and_does_not_open(studio_home):
    write_fixture_run("fine")
    broken = write_fixture_run("broken")
    (broken / "config.toml").write_text("[train\n", encoding="utf-8")
    with open(broken / "events.jsonl", "a", encoding="utf-8") as events:
        events.write('[1, 2]\n"text"\n{"kind": "train", "step": "x"}\n')
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        table = await open_runs_tab(pilot, rows=2)
        assert str(table.get_row("broken")[2]).strip() == "damaged"
        seen = record_notifications(app)
        table.move_cursor(row=[*table.runs].index("broken"))
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, DashboardScreen)
        assert seen[-1][0] == "error" and seen[-1][1].startswith("run broken is damaged: cannot read")


def pretend_live(name: str) -> None:
    """A run folder whose recorded process is alive (this one) and whose last status is running."""
    run_dir = write_fixture_run(name, events=fixture_events()[:10])
    record_this_process_as_trainer(run_dir)


async def test_the_studio_opens_on_the_dashboard_of_the_one_run_training(studio_home):
    write_fixture_run("done")
    pretend_live("one")
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the live run's dashboard")
        assert app.screen.run_dir.name == "one" and app.sub_title.endswith("· 1 run training")


@pytest.mark.parametrize("first_read_held", [False, True])
async def test_the_studio_opens_on_the_runs_tab_when_several_runs_train(studio_home, monkeypatch, first_read_held):
    """Held: the read started at mount does not come back before the periodic one (on a loaded machine the periodic
    read cancelled it before it began, once in a few full runs, and the studio stayed on the Data tab)."""
    if first_read_held:
        release, reads = threading.Event(), []

        def first_read_held_back():
            reads.append(None)
            if len(reads) == 1:
                release.wait(timeout=300)  # until the test ends (the finally below)
            return live_runs()

        monkeypatch.setattr("widgets.app.LIVE_RUNS_SECONDS", 0.2)
        monkeypatch.setattr("widgets.app.live_runs", first_read_held_back)
    write_fixture_run("done")
    pretend_live("one")
    pretend_live("two")
    app = StudioApp()
    try:
        async with app.run_test(size=SIZE) as pilot:
            tabs = app.query_one("#tabs", TabbedContent)
            # in two steps, so that a failure says which: the two live runs not found, or found and the tab not shown
            await wait_for(pilot, lambda: app.live_runs == 2, timeout=60.0, what="the two live runs counted")
            await wait_for(pilot, lambda: tabs.active == "runs", timeout=30.0, what=f"the Runs tab (on {tabs.active})")
            assert not isinstance(app.screen, DashboardScreen) and app.sub_title.endswith("· 2 runs training")
    finally:
        if first_read_held:
            release.set()


async def test_quitting_while_a_run_trains_says_it_goes_on_and_how_to_stop_it(studio_home):
    pretend_live("one")
    app = StudioApp()
    messages = []
    exit_app = app.exit
    app.exit = lambda *args, message=None, **kwargs: messages.append(message) or exit_app(*args, **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the live run's dashboard")
        await pilot.press("escape")  # the tabs mount once shown: quitting before fails in Textual
        await wait_for(pilot, lambda: app.query(RunTable), what="the tabs")
        await pilot.press("q")
    assert messages == [
        "1 run still training (one): they go on without the studio. Follow them with `llm-studio runs` or by "
        "opening the studio again; stop one with `llm-studio stop NAME`."
    ]


async def test_a_finished_runs_hardware_panel_shows_what_the_run_recorded_not_the_machine_now(studio_home, monkeypatch):
    import widgets.hardware_panel
    from widgets.hardware_panel import HardwarePanel

    machine_reads = []
    monkeypatch.setattr(widgets.hardware_panel, "gpu_stats", lambda: machine_reads.append("gpu") or [])
    monkeypatch.setattr(widgets.hardware_panel, "POLL_SECONDS", 0.05)
    write_fixture_run("done", events=with_memory(fixture_events(), 130 * 2**20, 330 * 2**20, 520 * 2**20))
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_runs_tab(pilot, rows=1)
        await pilot.press("enter")
        panel = app.screen.query_one(HardwarePanel)
        titled = lambda: panel.border_title == "hardware during the run"  # noqa: E731
        await wait_for(pilot, titled, timeout=5, what="the panel titled as the run's history")
        assert panel.machine == "the run finished: its memory as its trainer recorded it, step by step"
        reads = len(machine_reads)
        await pilot.pause(0.3)
        assert len(machine_reads) == reads  # the machine is no longer read
        chart = app.screen.query_one("#run-memory", LossChart)
        assert chart.display and not app.screen.query_one("#machine-history").display
        peak = {curve.label: curve for curve in chart.curves}["peak RSS"]
        assert peak.steps == tuple(range(5, 101, 5)) and peak.values[-1] == 520 / 1024


async def test_without_a_gpu_the_hardware_panel_charts_cpu_ram_and_the_trainers_memory(studio_home, monkeypatch):
    import widgets.hardware_panel

    monkeypatch.setattr(widgets.hardware_panel, "gpu_stats", lambda: [])
    monkeypatch.setattr(widgets.hardware_panel, "POLL_SECONDS", 0.05)
    pretend_live("cpu-run")  # its trainer is this process
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the live run's dashboard")
        await pilot.pause()
        chart = app.screen.query_one("#machine-history", LossChart)
        await wait_for(pilot, lambda: chart.display and len(chart.curves[2].steps) >= 3, what="three readings")
        cpu, ram, trainer = chart.curves
        assert (cpu.label, ram.label, trainer.label) == ("CPU", "RAM", "trainer")
        assert all(0 <= value <= 100 for curve in chart.curves for value in curve.values)
        assert 0 < trainer.values[-1] < ram.values[-1]  # this process's share, inside the machine's
        assert not app.screen.query_one("#run-memory").display  # GPU memory: none logged on a CPU


async def test_quitting_at_once_on_a_live_runs_dashboard_exits_cleanly(studio_home):
    """The tabs under the dashboard have not mounted yet: nothing mounts once the app exits (MountError before)."""
    pretend_live("one")
    app = StudioApp()
    app.animation_level = "none"  # Pilot's press would wait forever for the tabs' underline, stopped by the exit
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the live run's dashboard")
        await pilot.press("q")
    assert app.return_code == 0
