"""Knowledge distillation: a run learns from a teacher (alpha·T²·KL + (1 − alpha)·CE over the same positions).
A copy of the teacher has KL 0; alpha 0 is plain cross-entropy; another vocabulary is refused before launch; and a
small student learns more from a teacher than alone in the same steps."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from studio.cli.main import main
from studio.run_folder.layout import EVENTS, find_checkpoint, run_path

pytestmark = pytest.mark.slow  # starts trainer processes

SMALL = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2"]
STEPS = ["--set", "model.block_size=64", "--set", "train.batch_size=16", "--set", "train.sample_interval=0"]
STEPS += ["--set", "train.eval_steps=20", "--set", "train.log_interval=50", "--preset", "tiny"]


def events(name: str, kind: str) -> list[dict]:
    lines = (run_path(name) / EVENTS).read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == kind]


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    """A character-level tiny Llama trained 300 steps on 210 KB of the standard library: the teacher."""
    home = tmp_path_factory.mktemp("home")
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n\n".join(Path(m.__file__).read_text() for m in (argparse, collections, dataclasses)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        options = [*STEPS, "--tokenizer", "char", "--max-steps", "300", "--set", "train.eval_interval=300"]
        assert main(["train", "--data", str(corpus), "--name", "teacher", *options]) == 0
    return home, corpus


@pytest.fixture
def home(teacher_home, monkeypatch):
    monkeypatch.setenv("LLM_STUDIO_HOME", str(teacher_home[0]))
    return teacher_home[0]


def student(name: str, *extra: str, steps: int = 150) -> dict:
    """A small student on the teacher's dataset (its tokenizer): its last eval event."""
    options = [*STEPS, *SMALL, "--max-steps", str(steps), "--set", f"train.eval_interval={steps}"]
    assert main(["train", "--data", "corpus-char", "--name", name, *options, *extra]) == 0
    return events(name, "eval")[-1]


def test_a_copy_of_the_teacher_has_no_divergence(home):
    options = ["--init-from", "teacher", "--teacher", "teacher", "--set", "distill.alpha=1.0"]
    assert main(["train", "--data", "corpus-char", "--name", "copy", *STEPS, "--max-steps", "1", *options]) == 0
    (first,) = [event for event in events("copy", "train")]
    assert first["kd_loss"] < 1e-6 and first["loss"] == first["kd_loss"]
    assert first["ce_loss"] > 0.5  # the cross-entropy part is still logged


def test_alpha_zero_is_plain_cross_entropy(home):
    plain = student("alone", steps=10)
    taught = student("alpha0", "--teacher", "teacher", "--set", "distill.alpha=0.0", steps=10)
    assert plain["val_loss"] == taught["val_loss"]
    alone = load_file(find_checkpoint(run_path("alone")) / "model.safetensors")
    with_teacher = load_file(find_checkpoint(run_path("alpha0")) / "model.safetensors")
    assert all((alone[name] == with_teacher[name]).all() for name in alone)
    assert all(event["kd_loss"] > 0 for event in events("alpha0", "train"))  # the teacher was there, weighed 0


def test_a_teacher_with_another_vocabulary_is_refused(home, teacher_home, capsys):
    corpus = teacher_home[1]
    capsys.readouterr()
    options = ["--teacher", "teacher", "--tokenizer", "bpe", "--vocab-size", "300"]
    assert main(["train", "--data", str(corpus), "--name", "other-vocab", *STEPS, *options]) == 2
    err = capsys.readouterr().err
    assert "has another vocabulary than the student's data" in err and err.count("\n") == 1
    assert not run_path("other-vocab").exists()


def test_a_small_student_learns_more_with_the_teacher(home, capsys):
    alone = student("small-alone")
    taught = student(
        "small-taught", "--teacher", "teacher", "--set", "distill.alpha=0.7", "--set", "distill.temperature=1"
    )
    print(
        f"\nvalidation loss after 150 steps: alone {alone['val_loss']:.4f}, with the teacher {taught['val_loss']:.4f}"
    )
    assert taught["val_loss"] < alone["val_loss"]
    parts = events("small-taught", "train")[-1]
    assert parts["loss"] == pytest.approx(0.7 * parts["kd_loss"] + 0.3 * parts["ce_loss"], rel=1e-4)


@pytest.mark.asyncio
async def test_the_train_tab_picks_a_teacher_and_the_dashboard_charts_both_parts(home):
    from textual.widgets import Select, Static

    from tests.helpers import wait_for
    from widgets.app import StudioApp
    from widgets.loss_chart import LossChart
    from widgets.screens.dashboard import DashboardScreen

    student("charted", "--teacher", "teacher", steps=10)
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        picker = app.query_one("#train-teacher-run", Select)
        await wait_for(pilot, lambda: len(picker._options) > 1, what="the runs that can teach")
        assert {"charted", "teacher"} <= {value for _, value in picker._options[1:]}  # runs with a checkpoint
        picker.value = "teacher"
        await pilot.pause()
        assert app.config.distill.teacher == "teacher"
        assert "--teacher teacher" in str(app.query_one("#train-command", Static).render())
        app.push_screen(DashboardScreen(run_path("charted")))
        await wait_for(pilot, lambda: app.screen.query(LossChart) and app.screen.query_one(LossChart).curves)
        await app.workers.wait_for_complete()
        await pilot.pause()
        labels = [curve.label for curve in app.screen.query_one(LossChart).curves]
        assert {"train", "val", "ce", "kd"} <= set(labels), labels


@pytest.mark.asyncio
async def test_the_train_tab_counts_the_teacher_as_the_cli_and_the_trainer_do(home, capsys):
    from textual.widgets import Static

    from studio.formatting import format_bytes
    from studio.run_folder.layout import read_config
    from tests.helpers import wait_for
    from widgets.app import StudioApp

    capsys.readouterr()
    student("sized", "--teacher", "teacher", steps=1)
    printed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("model: "))
    recorded = next(event for event in events("sized", "status") if event["state"] == "running")["mem_estimate"]
    app = StudioApp(read_config(run_path("sized")))  # its teacher as resolved at launch: the teacher's checkpoint
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        method = app.query_one("#train-method-size", Static)
        await wait_for(pilot, lambda: "with a teacher of" in str(method.render()), what="the teacher's size")
        shown = str(method.render())
    figure = f"about {format_bytes(recorded)} per process"
    assert figure in printed and figure in shown, (printed, shown)
    teacher = printed[printed.index(", with a teacher of") : printed.index(";")]
    assert teacher in shown, (printed, shown)
