"""A fine-tuning run's learning rate follows its method (studio/method_defaults.py): the CLI takes it unless --set
chose one, says where it came from, and warns when a chosen rate is far from the method's; the Train tab does the
same. A run from scratch keeps its preset's rate."""

from __future__ import annotations

import json
import shlex

import pytest
from textual.widgets import Select, Static

from studio.cli.parser import build_parser, train_command_line, train_config
from studio.method_defaults import lr_note, lr_warning
from tests.test_app import SIZE, field, static_text, type_into
from widgets.app import StudioApp

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")


def config_of(*argv: str):
    return train_config(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize(("method", "lr"), [("lora", 2e-4), ("dora", 2e-4), ("qlora", 2e-4), ("full", 2e-5)])
def test_fine_tuning_takes_its_methods_learning_rate(method, lr):
    config = config_of("--init-from", "some-run", "--preset", "finetune", "--method", method)
    assert (config.train.lr, config.train.min_lr) == (lr, float(f"{lr / 10:.6g}"))  # 2e-06, as the form shows it
    assert lr_note(config) == f"lr {lr!r} ({method} default)" and lr_warning(config) == ""


def test_a_chosen_rate_is_kept_and_warned_about_when_far_from_the_methods():
    lora = config_of("--init-from", "some-run", "--preset", "finetune", "--method", "lora", "--set", "train.lr=3e-5")
    assert lora.train.lr == 3e-5 and lr_note(lora) == "lr 3e-05 (set)"
    assert lr_warning(lora) == (
        "train.lr 3e-05 is 7× below what lora fine-tuning needs (about 0.0002): the model may learn nothing"
    )
    full = config_of("--init-from", "some-run", "--set", "train.lr=1e-3", "--set", "train.min_lr=0")
    assert full.train.min_lr == 0 and "50× above what full fine-tuning needs" in lr_warning(full)
    assert lr_warning(config_of("--init-from", "some-run", "--method", "lora", "--set", "train.lr=1e-4")) == ""


def test_a_run_from_scratch_keeps_its_presets_rate():
    config = config_of("--preset", "tiny")
    assert config.train.lr == 2e-3 and lr_note(config) == "lr 0.002 (preset tiny)" and lr_warning(config) == ""


def test_the_cli_prints_the_rate_and_its_warning(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("studio.cli.commands.start", lambda *args, **kwargs: 0)  # what prints before the launch
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)), encoding="utf-8")
    argv = ["train", "--data", str(corpus), "--max-steps", "1", "--set", "train.lr=0.5", "--set", "train.min_lr=0"]
    code, out, err = run_cli(*argv, "--name", "scratch")
    assert code == 0 and "lr 0.5 (set)\n" in out and "warning: train.lr" not in err  # from scratch: no method


@pytest.mark.asyncio
async def test_the_train_tab_shows_where_the_rate_came_from_and_follows_the_method(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        note = app.query_one("#train-lr-note", Static)
        assert static_text(note) == f"lr {app.config.train.lr!r} (preset {app.config.preset})"
        await type_into(pilot, "train.init_from", "some-run")
        field(app, "train.method").query_one(Select).value = "lora"
        await pilot.pause()
        assert app.config.train.lr == 2e-4 and static_text(note) == "lr 0.0002 (lora default)"
        # the method's rate is what `train` takes anyway: the twin reads as the README writes it (item 6)
        assert static_text(app.query_one("#train-command", Static)).endswith("--init-from some-run --method lora")
        await type_into(pilot, "train.lr", "3e-5")
        assert static_text(note).splitlines()[1].startswith("⚠ train.lr 3e-05 is 7× below what lora fine-tuning")
        field(app, "train.method").query_one(Select).value = "full"
        await pilot.pause()
        assert app.config.train.lr == 2e-5 and static_text(note) == "lr 2e-05 (full default)"


def test_the_command_line_names_a_fine_tunes_rate_only_when_it_is_not_the_methods():
    config = config_of("--init-from", "some-run", "--preset", "finetune", "--method", "lora")
    assert "train.lr" not in train_command_line(config)
    config.train.lr = 3e-5
    command = train_command_line(config)
    assert "--set train.lr=3e-05 --set train.min_lr=2e-05" in command  # min_lr: the method's, not a tenth of 3e-5
    assert config_of(*shlex.split(command)[2:]).to_dict() == config.to_dict()


def test_the_command_line_of_a_run_in_epochs_leaves_the_steps_to_prepare():
    config = config_of("--preset", "tiny", "--epochs", "3")
    config.train.max_steps = 77
    command = train_command_line(config)
    assert "--epochs 3" in command and "--max-steps" not in command  # both would be refused
    assert config_of(*shlex.split(command)[2:]).train.epochs == 3


def test_a_remembered_checkpoint_opens_at_its_methods_rate(studio_home):
    remembered = {"preset": "tiny", "train.init_from": "some-run", "train.method": "lora"}
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "remembered.json").write_text(json.dumps(remembered), encoding="utf-8")
    config = StudioApp().config  # the rate is not remembered: a checkpoint's is its method's
    assert config.train.lr == 2e-4 and lr_note(config) == "lr 0.0002 (lora default)"


@pytest.mark.parametrize(
    ("objective", "method", "lr"),
    [("dpo", "full", 1e-6), ("dpo", "lora", 5e-6), ("kto", "qlora", 5e-6), ("grpo", "full", 1e-6)],
)
def test_an_alignment_objective_trains_at_its_familys_far_lower_rate(objective, method, lr):
    argv = ("--init-from", "some-run", "--objective", objective, "--method", method)
    config = config_of(*argv)
    assert (config.train.lr, config.train.min_lr) == (lr, pytest.approx(lr / 10))
    assert lr_note(config) == f"lr {lr!r} ({objective} {method} default)" and lr_warning(config) == ""
    sft_rate = config_of(*argv, "--set", "train.lr=2e-4")
    assert f"is {2e-4 / lr:.0f}× above what {objective} {method} fine-tuning needs" in lr_warning(sft_rate)
    command = train_command_line(config)
    assert "train.lr" not in command and config_of(*shlex.split(command)[2:]).to_dict() == config.to_dict()


def test_a_stage_after_a_run_trains_at_the_fine_tuning_rate_from_the_cli_and_a_pipeline(tmp_path):
    """`train --after RUN` starts from RUN, so its rate is a fine-tune's, as the studio's form sets it once "start
    after" is chosen; a pipeline's later stages likewise."""
    after = config_of("--preset", "tiny", "--after", "pre", "--objective", "dpo")
    assert after.train.init_from == "pre" and after.train.lr == 1e-6 and lr_note(after) == "lr 1e-06 (dpo full default)"
    from studio.cli.parser import stage_arguments

    stage = train_config(stage_arguments({"preset": "tiny", "method": "lora"}), after="pre")
    assert stage.train.init_from == "pre" and stage.train.lr == 2e-4
    own = config_of("--preset", "tiny", "--after", "pre", "--init-from", "elsewhere")
    assert own.train.init_from == "elsewhere"  # --init-from says otherwise
