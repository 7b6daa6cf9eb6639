"""The studio's Data, Model and Train tabs driven through Pilot, and the command line the Train tab shows."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest
from rich.console import Console
from textual.content import Content
from textual.widgets import Checkbox, Input, Select, TabbedContent

from studio.cli.parser import build_parser, train_command_line, train_config
from studio.config import set_field
from studio.formatting import format_count
from studio.method_defaults import apply_method_defaults
from studio.presets import load_preset, preset_vocab
from studio.sizing.sizes import param_count
from tests.helpers import tiny_config
from widgets.app import StudioApp
from widgets.config_field import ConfigField
from widgets.dataset_facts import DatasetFacts
from widgets.lr_preview import LrPreview
from widgets.messages import RunLaunched
from widgets.screens.file_picker import FilePickerScreen
from widgets.screens.help import HelpScreen
from widgets.source_preview import SourcePreview
from widgets.status_line import StatusLine
from widgets.token_sample import TokenSample

SIZE = (120, 40)
CORPUS = "".join(f"def function_{i}(value):\n    return value * {i} + {i % 7}\n\n" for i in range(300))


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def field(app: StudioApp, key: str) -> ConfigField:
    return next(f for f in app.query(ConfigField) if f.config_key == key)


async def type_into(pilot, key: str, text: str) -> None:
    """Replace a field's text as a user would: focus, clear, type; then let the handlers run."""
    editor = field(pilot.app, key).query_one(Input)
    editor.focus()
    editor.value = ""
    await pilot.press(*text)
    await pilot.press("escape")
    await pilot.pause()


async def paste_into(pilot, key: str, text: str) -> None:
    """Set a field's text at once (typing a long path key by key only slows the test)."""
    field(pilot.app, key).query_one(Input).value = text
    await pilot.pause()


def static_text(widget) -> str:
    """The text a Static shows, whether it holds a string, Content or a Rich renderable (a table)."""
    content = widget.content
    if isinstance(content, (str, Content)):
        return str(content)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


# ---- the command line -----------------------------------------------------------------------------
def parse_back(command: str):
    words = shlex.split(command)
    assert words[:2] == ["llm-studio", "train"]
    return train_config(build_parser().parse_args(words[1:]))


def test_train_command_line_of_an_untouched_preset_names_only_preset_and_data():
    assert train_command_line(load_preset("tiny")) == "llm-studio train --preset tiny --data python-stdlib"


def test_train_command_line_parses_back_to_the_same_config(tmp_path):
    config = load_preset("small")
    edits = {
        "model.n_layer": 3,
        "model.dropout": 0.15,
        "model.tie_embeddings": False,
        "data.tokenizer": "char",
        "data.source": str(tmp_path / "my corpus.txt"),
        "data.dedup": False,
        "train.lr": 3e-4,
        "train.schedule": "wsd",
        "train.sample_prompts": ["Once upon", "it's 'quoted'"],
        "train.init_from": "some run",
        "train.compile": True,
    }
    for key, value in edits.items():
        set_field(config, key, value)
    command = train_command_line(config)
    assert "--set model.n_layer=3" in command and "train.lr=0.0003" in command
    assert "model.n_head" not in command  # unchanged from the preset: not repeated
    assert parse_back(command).to_dict() == config.to_dict()


def test_train_command_line_of_a_fine_tune_reads_as_the_readme_writes_it():
    config = load_preset("finetune")
    set_field(config, "train.init_from", "Qwen/Qwen2.5-0.5B-Instruct")
    set_field(config, "train.method", "lora")
    apply_method_defaults(config)  # as train_config and the Train tab do: the method's learning rate
    command = train_command_line(config, name="my run")
    assert command == (
        "llm-studio train --preset finetune --data python-stdlib --init-from Qwen/Qwen2.5-0.5B-Instruct "
        "--method lora --name 'my run'"
    )
    assert parse_back(command.removesuffix(" --name 'my run'")).to_dict() == config.to_dict()


def test_train_command_line_of_a_stage_queues_it_after_its_run():
    config = load_preset("finetune")
    set_field(config, "train.init_from", "pre")
    apply_method_defaults(config)
    command = train_command_line(config, name="sft", after="pre")
    assert command.endswith("--init-from pre --name sft --after pre")
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.name, args.after) == ("sft", "pre") and train_config(args).to_dict() == config.to_dict()


# ---- app shell ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_opens_on_the_builtin_corpus_and_tiny_preset_and_switches_tabs(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        assert app.config.preset == "tiny" and app.config.data.source == "python-stdlib"
        assert app.sub_title == "tiny · python-stdlib"
        tabs = app.query_one(TabbedContent)
        for key, tab in (("2", "model"), ("3", "train"), ("4", "runs"), ("5", "playground"), ("1", "data")):
            await pilot.press(key)
            assert tabs.active == tab
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        theme = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != theme


@pytest.mark.asyncio
async def test_command_palette_opens_runs(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"open runs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "runs"


# ---- 1 Data ---------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_prepare_shows_facts_and_token_boundaries(studio_home, small_corpus):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await paste_into(pilot, "data.source", str(small_corpus))
        field(app, "data.tokenizer").query_one(Select).value = "char"
        await pilot.pause()
        assert app.config.data.source == str(small_corpus) and app.config.data.tokenizer == "char"
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        facts = static_text(app.query_one(DatasetFacts))
        assert "small-char" in facts and "1 kept of 1 seen" in facts
        meta = json.loads((studio_home / "datasets" / "small-char" / "meta.json").read_text())
        assert f"characters      {meta['characters']:,}" in facts
        assert f"{meta['tokens']['train']:,} train · {meta['tokens']['val']:,} val" in facts
        assert f"{meta['vocab_size']} (char)" in facts
        sample = app.query_one(TokenSample).content
        assert sample.plain.startswith("def function_0(value):↵")
        assert len(sample.spans) >= 100  # one background span per token: char tokens, so many
        assert "is ready" in static_text(app.query_one("#data-status", StatusLine))


@pytest.mark.asyncio
async def test_a_prepared_source_shows_as_prepared_until_the_source_changes(studio_home, small_corpus):
    from studio.runs.prepare import prepare_data

    config = tiny_config({"data.source": str(small_corpus), "data.tokenizer": "char"})
    prepare_data(config)  # by an earlier studio, or the CLI
    app = StudioApp(config)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#data-status", StatusLine)
        assert "dataset small-char is prepared" in static_text(status)
        assert "small-char" in static_text(app.query_one(DatasetFacts))
        await paste_into(pilot, "data.source", "python-stdlib")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert static_text(status).startswith("Not prepared yet")
        assert static_text(app.query_one(DatasetFacts)) == "" and app.query_one(TokenSample).content.plain == ""


@pytest.mark.asyncio
async def test_a_row_source_previews_its_columns_and_marks_the_fields(studio_home, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pylist([{"review": f"good film {i}\nreally", "stars": i} for i in range(8)]), rows)
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        preview = app.query_one(SourcePreview)
        assert not preview.display  # the built-in corpus has no rows
        await paste_into(pilot, "data.source", str(rows))
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = static_text(preview)
        assert preview.display and "reviews.parquet: 2 columns, the first 5 rows" in shown
        assert "review" in shown and "good film 0↵really" in shown and "(text)" not in shown
        await paste_into(pilot, "data.text_field", "review")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "review (text)" in static_text(preview)
        (tmp_path / "broken.parquet").write_bytes(b"PAR1 broken")
        await paste_into(pilot, "data.source", str(tmp_path / "broken.parquet"))
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert preview.has_class("-error") and "not a readable parquet file" in static_text(preview)
        await paste_into(pilot, "data.source", "python-stdlib")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not preview.display


@pytest.mark.asyncio
async def test_prepare_error_is_one_line_in_the_pane(studio_home, tmp_path):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await paste_into(pilot, "data.source", str(tmp_path / "missing.txt"))
        await pilot.click("#data-prepare")
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#data-status", StatusLine)
        assert status.has_class("-error") and "missing.txt" in static_text(status)
        assert app.is_running


@pytest.mark.asyncio
async def test_an_empty_source_is_marked_and_not_prepared(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await paste_into(pilot, "data.source", "")
        await pilot.pause()  # the pane marks the field once the app has passed the change on
        assert field(app, "data.source").has_class("-invalid")
        await pilot.click("#data-prepare")
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#data-status", StatusLine)
        assert status.has_class("-error") and "data.source is empty" in static_text(status)
        assert not (studio_home / "datasets").exists() or not any((studio_home / "datasets").iterdir())


@pytest.mark.asyncio
async def test_the_studio_remembers_the_last_source_model_task_and_method(studio_home, small_corpus, tmp_path):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await paste_into(pilot, "data.source", str(small_corpus))
        await pilot.press("3")
        await pilot.pause()
        await paste_into(pilot, "train.init_from", str(tmp_path))
        field(app, "train.task").query_one(Select).value = "classify"
        field(app, "train.method").query_one(Select).value = "lora"
        await pilot.pause()
    assert json.loads((studio_home / "remembered.json").read_text())["train.method"] == "lora"
    again = StudioApp()
    assert again.config.data.source == str(small_corpus) and again.config.train.init_from == str(tmp_path)
    assert again.config.train.task == "classify" and again.config.train.method == "lora"


@pytest.mark.asyncio
async def test_a_checkbox_reads_on_or_off_without_colour(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        checkbox = field(app, "data.strict").query_one(Checkbox)
        shown = checkbox.render().plain
        checkbox.value = not checkbox.value
        await pilot.pause()
        marks = {checkbox.value: checkbox.render().plain, not checkbox.value: shown}
        assert "✓" in marks[True] and "✓" not in marks[False] and "X" not in marks[False]


@pytest.mark.asyncio
async def test_browse_picks_a_file(studio_home, small_corpus, monkeypatch):
    monkeypatch.chdir(small_corpus.parent)
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await pilot.pause(0.3)
        assert isinstance(app.screen, FilePickerScreen)
        await pilot.press("down")  # the first entry under the root: small.txt, the only file
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, FilePickerScreen)
        assert app.config.data.source == str(small_corpus)


@pytest.mark.asyncio
async def test_bad_cleaning_value_is_marked(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        # pasted: typed, its first key "0" is now a valid fraction, and a valid edit of a Data field loses the focus
        await paste_into(pilot, "data.val_fraction", "0.7")
        assert field(app, "data.val_fraction").has_class("-invalid")
        assert "below 0.5" in static_text(field(app, "data.val_fraction").query_one(".field-error"))
        await type_into(pilot, "data.val_fraction", "0.1")
        assert not field(app, "data.val_fraction").has_class("-invalid")


def shown_params(app: StudioApp) -> str:
    return format_count(param_count(app.config.model, preset_vocab(app.config)))


# ---- 2 Model --------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_preset_choice_validation_and_live_size(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#model-presets")
        table.focus()
        table.move_cursor(row=table.get_row_index("small"))
        await pilot.press("enter")
        await pilot.pause()
        assert app.config.preset == "small" and app.config.model.n_embd == load_preset("small").model.n_embd
        assert field(app, "model.n_embd").query_one(Input).value == str(app.config.model.n_embd)
        assert f"parameters     {shown_params(app)}" in static_text(app.query_one("#model-size"))
        before = shown_params(app)

        await type_into(pilot, "model.n_layer", "2")
        assert app.config.model.n_layer == 2 and shown_params(app) != before
        assert f"parameters     {shown_params(app)}" in static_text(app.query_one("#model-size"))

        await type_into(pilot, "model.n_head", "5")
        for key in ("model.n_head", "model.n_embd"):  # the message names both
            assert field(app, key).has_class("-invalid")
        assert "divisible" in static_text(field(app, "model.n_head").query_one(".field-error"))
        assert "divisible" in static_text(app.query_one("#model-size"))

        await type_into(pilot, "model.n_layer", "two")
        assert "whole number" in static_text(field(app, "model.n_layer").query_one(".field-error"))
        assert app.config.model.n_layer == 2  # the refused value never reaches the config

        await type_into(pilot, "model.n_head", "4")
        assert not field(app, "model.n_embd").has_class("-invalid")


# ---- 3 Train --------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_train_fields_update_command_and_lr_curve(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await pilot.pause(0.3)
        preview = app.query_one(LrPreview)
        assert preview.shown is not None and preview.shown.schedule == "cosine"
        await type_into(pilot, "train.lr", "0.005")
        field(app, "train.schedule").query_one(Select).value = "linear"
        await type_into(pilot, "train.report_to", "tensorboard")
        await pilot.pause(0.4)
        command = static_text(app.query_one("#train-command"))
        assert "--set train.lr=0.005" in command and "--set train.schedule=linear" in command
        assert app.config.train.report_to == ["tensorboard"] and "--set train.report_to=tensorboard" in command
        assert preview.shown.schedule == "linear" and preview.shown.lr == 0.005
        assert parse_back(command).to_dict() == app.config.to_dict()


@pytest.mark.asyncio
async def test_sharding_on_the_train_tab_lowers_the_estimate_per_process_and_reaches_the_command(studio_home):
    """The `small` preset on 2 processes: FSDP's share of the weights, gradients and optimizer state shows in the
    per-process estimate at once, and the command line carries it. At batch 1 the activations are small enough that
    the estimate shows in MB, to a tenth (in GB, the share could hide in the rounding)."""
    app = StudioApp(load_preset("small"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await type_into(pilot, "train.batch_size", "1")
        await type_into(pilot, "train.num_processes", "2")
        await pilot.pause(0.3)
        whole = static_text(app.query_one("#train-method-size"))
        field(app, "train.sharding").query_one(Select).value = "fsdp"
        await pilot.pause(0.3)
        shared = static_text(app.query_one("#train-method-size"))
        assert estimate(shared) < estimate(whole) - 50 * 1024**2, (whole, shared)
        command = static_text(app.query_one("#train-command"))
        assert "--sharding fsdp" in command and "--num-processes 2" in command  # their own flags
        assert parse_back(command).to_dict() == app.config.to_dict()


def estimate(line: str) -> int:
    """The bytes of the Train tab's `about 2.2 GB per process`."""
    from studio.cli.parser import parse_size

    return parse_size(line.split("about ")[1].split(" per process")[0])


class LaunchRecordingApp(StudioApp):
    """Records RunLaunched instead of opening the run's dashboard (another test file's subject)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.launched: list[Path] = []

    def on_run_launched(self, message: RunLaunched) -> None:
        message.prevent_default()  # the base class's handler would push the dashboard
        self.launched.append(message.run_dir)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_launch_from_the_train_tab_starts_a_run(studio_home, small_corpus, torch_blocked):
    from studio.runs.control import stop_run

    config = tiny_config({"data.source": str(small_corpus), "train.max_steps": 20})
    app = LaunchRecordingApp(config)
    run_dir = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await type_into(pilot, "train.seed", "7")
            await pilot.press("ctrl+l")
            await app.workers.wait_for_complete()
            await pilot.pause()
            run_dir = next(iter((studio_home / "runs").iterdir()), None)
            assert run_dir is not None and (run_dir / "config.toml").is_file() and (run_dir / "pid").is_file()
            assert app.launched == [run_dir]
            assert f"run {run_dir.name} started" in static_text(app.query_one("#train-status"))
            assert "seed = 7" in (run_dir / "config.toml").read_text()
    finally:
        if run_dir is not None:
            stop_run(run_dir, timeout=60)


@pytest.mark.asyncio
async def test_launch_error_is_one_line(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        app.query_one("#train-run-name", Input).value = "bad name!"
        await pilot.click("#train-launch")
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#train-status", StatusLine)
        assert status.has_class("-error") and "not allowed" in static_text(status)
        assert not list((studio_home / "runs").glob("*"))
