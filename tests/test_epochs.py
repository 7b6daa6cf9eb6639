"""Epochs beside steps (studio/epochs.py): `--epochs N` becomes max_steps when the data is prepared, from the
training set's size, the batch, accumulation and processes; given with --max-steps it is refused; the CLI and the
dashboard say both."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from studio.config import RunConfig
from studio.data.prepare import open_dataset
from studio.epochs import steps_and_epochs, steps_for_epochs
from studio.run_folder.layout import read_config, run_path
from studio.run_folder.watch import RunWatcher
from widgets.run_header import title_line


def test_steps_and_epochs_of_examples_and_of_text():
    config = RunConfig()
    config.train.batch_size, config.train.grad_accum, config.train.max_steps = 8, 1, 300
    examples = SimpleNamespace(examples={"train": 5, "val": 0}, tokens={"train": 120, "val": 0})
    assert steps_and_epochs(config, examples) == "300 steps ≈ 480 epochs of 5 examples"
    config.train.batch_size, config.train.grad_accum, config.train.num_processes = 1, 2, 2  # 4 examples a step
    config.train.epochs = 3
    assert steps_for_epochs(config, examples) == 4  # 15 examples, 4 a step: the last step's partly a fourth epoch
    text = SimpleNamespace(examples={}, tokens={"train": 10_000, "val": 500})
    config.train.epochs, config.model.block_size = 2.0, 100  # 400 tokens a step
    assert steps_for_epochs(config, text) == 50
    assert steps_and_epochs(config, text, 25) == "25 steps ≈ 1.0 epochs of 10,000 tokens"


@pytest.mark.parametrize(
    ("objective", "meta", "steps", "line"),
    [  # 23 pairs (46 examples), or 19 prompts; 4 a step, 2 epochs
        ("dpo", {"train": 46, "val": 2}, 12, "12 steps ≈ 2.1 epochs of 23 pairs"),  # was 23 steps ≈ 2.0 of 46 examples
        ("kto", {"train": 46, "val": 2}, 23, "23 steps ≈ 2.0 epochs of 46 examples"),  # KTO reads each answer apart
        ("grpo", {"train": 19, "val": 1}, 10, "10 steps ≈ 2.1 epochs of 19 prompts"),
    ],
)
def test_epochs_of_an_alignment_objective_count_what_a_batch_holds(objective, meta, steps, line):
    config = RunConfig()
    config.train.objective, config.train.batch_size, config.train.grad_accum, config.train.epochs = objective, 4, 1, 2
    dataset = SimpleNamespace(examples=meta, tokens={"train": 1_000, "val": 50})
    config.train.max_steps = steps_for_epochs(config, dataset)
    assert (config.train.max_steps, steps_and_epochs(config, dataset)) == (steps, line)


def test_epochs_become_max_steps_at_prepare_and_the_cli_says_both(run_cli, code_corpus, monkeypatch):
    monkeypatch.setattr("studio.cli.commands.start", lambda *args, **kwargs: 0)  # what prints before the launch
    options = ["--data", code_corpus, "--set", "data.tokenizer=char", "--set", "train.batch_size=4"]
    code, out, err = run_cli("train", *options, "--epochs", "0.5", "--name", "half")
    assert code == 0, err
    config = read_config(run_path("half"))
    train_tokens = open_dataset(config.data.dataset).meta.tokens["train"]
    assert config.train.max_steps == math.ceil(0.5 * train_tokens / (4 * config.model.block_size))
    length = f"{config.train.max_steps:,} steps ≈ 0.5 epochs of {train_tokens:,} tokens"
    assert f"length: {length}\n" in out
    assert length in title_line(RunWatcher(run_path("half")).view()).plain  # the dashboard's title says it too


def test_epochs_and_max_steps_together_are_one_line(run_cli, code_corpus):
    code, out, err = run_cli("train", "--data", code_corpus, "--epochs", "2", "--max-steps", "10", "--name", "both")
    assert code == 2 and err.count("\n") == 1
    assert err.endswith("error: --max-steps and --epochs both say how long to train: give one of them\n")
    assert not run_path("both").exists()


@pytest.mark.asyncio
async def test_the_train_tab_says_the_epochs_its_steps_make_once_the_data_is_prepared(studio_home, tmp_path):
    from studio.runs.prepare import prepare_data
    from tests.test_app import static_text
    from widgets.app import StudioApp

    (tmp_path / "corpus.txt").write_text("def area(width, height):\n    return width * height\n" * 200)
    config = RunConfig()
    config.data.source, config.data.tokenizer, config.train.max_steps = str(tmp_path / "corpus.txt"), "char", 300
    app = StudioApp(config)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await app.workers.wait_for_complete()
        await pilot.pause()
        length = app.query_one("#train-length")
        assert static_text(length) == "length: 300 steps; epochs once the data is prepared"
        meta = prepare_data(config).meta
        await pilot.press("1", "3")  # the Train tab looks again when shown
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert static_text(length) == f"length: {steps_and_epochs(config, meta)}"
        assert " epochs of " in static_text(length)
