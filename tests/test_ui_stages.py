"""Stages chained from the studio: the Train tab's "start after" beside Launch queues a run after another, as
`llm-studio train --after RUN` does (its command line says so), and the Runs tab's queue line says whom each stage
waits for.

The runs are really prepared (tiny data, characters); nothing trains: a run launched "now" has this process
recorded as its trainer, and the queue runner's start is recorded, not made (tests/test_pipeline.py runs chains)."""

from __future__ import annotations

import os
import shlex

import pytest
from textual.widgets import Input, Select

import studio.runs.control
from studio.queue import entries as run_queue
from studio.run_folder.layout import read_config, run_path
from studio.runs.control import create_run
from tests.helpers import (
    fixture_events,
    record_runner_starts,
    record_this_process_as_trainer,
    tiny_config,
    wait_for,
    write_fixture_run,
)
from tests.test_app import LaunchRecordingApp, field, parse_back, paste_into, static_text
from tests.test_pipeline import write_inputs
from tests.test_ui_runs import pretend_live
from widgets.app import StudioApp
from widgets.panes.train import NOW, TrainPane

SIZE = (160, 48)


def offered(app: StudioApp) -> list[str]:
    """The runs "start after" offers, in its order, after "now"."""
    return [value for _, value in app.query_one("#train-after", Select)._options if value != NOW]


@pytest.fixture
def launched_here(monkeypatch) -> list[str]:
    """Runs launched from now on: recorded, with this process as their trainer (they read as training)."""
    launched = []

    def launch(run_dir):
        launched.append(run_dir.name)
        record_this_process_as_trainer(run_dir)

    monkeypatch.setattr(studio.runs.control, "launch", launch)
    return launched


async def launch_stage(pilot, name: str, after: str, source: str, objective: str = "lm") -> str:
    """Fill the form for one stage as a user would, launch it, and return the command line it showed."""
    app = pilot.app
    await paste_into(pilot, "data.source", source)
    field(app, "train.objective").query_one(Select).value = objective
    app.query_one("#train-run-name", Input).value = name
    if after != NOW:
        await wait_for(pilot, lambda: after in offered(app), what=f"{after} offered to start after")
    app.query_one("#train-after", Select).value = after
    await pilot.pause()
    command = static_text(app.query_one("#train-command"))
    await pilot.press("ctrl+l")
    await app.workers.wait_for_complete()
    await pilot.pause()
    return command


@pytest.mark.asyncio
async def test_three_stages_chained_from_the_train_tab_each_wait_for_the_one_before(
    studio_home, tmp_path, torch_blocked, monkeypatch, launched_here
):
    inputs = write_inputs(tmp_path)
    runner_starts = record_runner_starts(monkeypatch)
    app = LaunchRecordingApp(tiny_config({"data.source": str(inputs["text"]), "model.block_size": 64}))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        status = app.query_one("#train-status")
        command = await launch_stage(pilot, "pre", NOW, str(inputs["text"]))
        assert command.endswith("--name pre") and "--after" not in command and "--init-from" not in command
        assert parse_back(command).to_dict() == app.config.to_dict()
        assert launched_here == ["pre"] and app.launched == [run_path("pre")]  # "now" starts it at once
        assert "run pre started" in static_text(status)

        stages = {"sft": ("pre", inputs["chat"], "lm"), "dpo": ("sft", inputs["pref"], "dpo")}
        for name, (after, source, objective) in stages.items():
            command = await launch_stage(pilot, name, after, str(source), objective)
            assert static_text(status) == f"queued {name} after {after} (starts from its final checkpoint)"
            assert shlex.split(command)[-4:] == ["--name", name, "--after", after]
            config = parse_back(command)  # the config the stage was launched with, init_from set by the choice
            assert config.to_dict() == app.config.to_dict() and config.data.source == str(source)
            assert (config.train.init_from, config.train.objective) == (after, objective)
        assert launched_here == ["pre"] and app.launched == [run_path("pre")]  # stages are queued, not started

        assert [(entry.run, entry.after) for entry in run_queue.waiting_entries()] == [("sft", "pre"), ("dpo", "sft")]
        assert runner_starts  # a runner is asked for, as `train --after` asks
        for after, stage in (("pre", "sft"), ("sft", "dpo")):  # each from the run before, until that one finishes
            assert read_config(run_path(stage)).train.init_from == str(run_path(after).resolve())
        assert read_config(run_path("dpo")).train.objective == "dpo"
        assert offered(app) == ["dpo", "sft", "pre"]  # newest first, the queued stages among them

        await pilot.press("4")
        line = app.query_one("#queue-line")
        await wait_for(pilot, lambda: "waiting" in str(line.render()), what="the queue line")
        assert "2 waiting: sft (after pre), dpo (after sft)" in str(line.render())


@pytest.mark.asyncio
async def test_start_after_offers_runs_training_queued_or_finished_and_is_read_again_when_the_tab_shows(
    studio_home, tmp_path, torch_blocked
):
    app = StudioApp(tiny_config({"data.source": str(write_inputs(tmp_path)["text"])}))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await app.workers.wait_for_complete()
        assert offered(app) == [] and app.query_one("#train-after", Select).value == NOW
        write_fixture_run("done")
        write_fixture_run("broke", fixture_events(failed_at=40))  # a stage after it would only be cancelled
        pretend_live("live")
        create_run(tiny_config(), "idle")  # created, never queued: nothing would start it
        create_run(tiny_config(), "waits")
        run_queue.pause()
        run_queue.add_entry("waits")
        for age, name in enumerate(["done", "broke", "live", "idle", "waits"]):
            os.utime(run_path(name) / "config.toml", (1_700_000_000 + age, 1_700_000_000 + age))
        await pilot.press("1")
        await pilot.press("3")
        await wait_for(pilot, lambda: offered(app), what="the runs read again")
        assert offered(app) == ["waits", "live", "done"]
        app.query_one("#train-after", Select).value = "done"
        await pilot.pause()
        assert app.config.train.init_from == "done"  # what `--after done` derives: not asked for as well
        hint = static_text(app.query_one("#train-after-hint"))
        assert hint == "Launch queues it to start when done has finished, from its final checkpoint (init from is done)"
        assert app.query_one(TrainPane).command_line().endswith("--init-from done --after done")
        app.query_one("#train-after", Select).value = NOW
        await pilot.pause()
        assert not app.query_one("#train-after-hint").display
        assert "--after" not in app.query_one(TrainPane).command_line()
