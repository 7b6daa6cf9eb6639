"""Snapshots of the Data, Model and Train tabs at 80x24 and 160x48, and of the help screen.

Deterministic by construction: a private studio home, a fixed corpus under a relative path (the working
folder is the test's), and nothing focused, so no cursor blinks.
"""

from __future__ import annotations

import pytest
from textual.widgets import Select

from studio.config import set_field
from studio.method_defaults import apply_method_defaults
from studio.presets import load_preset
from tests.helpers import write_fixture_run
from widgets.app import StudioApp
from widgets.config_field import ConfigField
from widgets.lr_preview import LrPreview
from widgets.messages import CheckpointChosen
from widgets.panes.model import ModelPane
from widgets.panes.train import TrainPane

SIZES = [(80, 24), (160, 48)]
CORPUS = "".join(f"def area_{i}(width, height):\n    return width * height + {i}\n\n" for i in range(200))


@pytest.fixture
def studio(studio_home, tmp_path, monkeypatch) -> StudioApp:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    config = load_preset("tiny")
    set_field(config, "data.source", "corpus.txt")
    set_field(config, "data.tokenizer", "char")
    return StudioApp(config)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_data_tab_after_prepare(snap_compare, studio, size):
    async def prepare(pilot):
        await pilot.press("p")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(studio, terminal_size=size, run_before=prepare)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_model_tab_with_an_invalid_head_count(snap_compare, studio, size):
    async def edit(pilot):
        await pilot.press("2")
        studio.query_one("#model-form").query("Input")[1].value = "3"  # heads: 128 is not divisible by 3
        await pilot.pause()

    assert snap_compare(studio, terminal_size=size, run_before=edit)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_model_tab_with_a_checkpoint(snap_compare, studio, size, tmp_path, monkeypatch):
    """The checkpoint's model is its own: the form keeps the context only. Its facts (read by a worker from a real
    folder, under a temporary path) are left unread here; tests/test_app_finetune.py checks them."""
    (tmp_path / "qwen").mkdir()
    monkeypatch.setattr(ModelPane, "read_checkpoint_folder", lambda pane, config: None)

    async def pick(pilot):
        await pilot.press("2")
        studio.query_one(ModelPane).post_message(CheckpointChosen("qwen"))
        await pilot.pause()

    assert snap_compare(studio, terminal_size=size, run_before=pick)


async def train_tab_drawn(pilot) -> None:
    """Wait until the Train tab's learning-rate curve is drawn and the tab has the focus."""
    preview = pilot.app.query_one(LrPreview)
    while preview.shown is None or preview.redraw_timer is not None:  # drawn after a short debounce
        await pilot.pause(0.05)
    while not isinstance(pilot.app.focused, TrainPane):  # focus (and the footer's keys) follow the tab
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_train_tab(snap_compare, studio, size):
    async def show(pilot):
        await pilot.press("3")
        await studio.workers.wait_for_complete()  # the prepared dataset's epochs, read by a worker
        await train_tab_drawn(pilot)

    assert snap_compare(studio, terminal_size=size, run_before=show)


def test_train_tab_queuing_a_stage(snap_compare, studio):
    """A run chosen to start after: init from is that run (the full fine-tuning rate with it), the hint under
    Launch says when and from what the run starts, the command line ends with --after."""
    write_fixture_run("pretrain-1")

    async def show(pilot):
        await pilot.press("3")
        await studio.workers.wait_for_complete()  # the runs it offers, read by a worker
        studio.query_one("#train-after", Select).value = "pretrain-1"
        await train_tab_drawn(pilot)

    assert snap_compare(studio, terminal_size=(160, 48), run_before=show)


def test_help_screen(snap_compare, studio):
    assert snap_compare(studio, terminal_size=(80, 24), press=["question_mark"])


def test_train_tab_aligning_with_dpo(snap_compare, studio):
    """A preference objective chosen: its keys (β, label smoothing; not SimPO's or KTO's), its default rate, the
    memory line with its frozen reference, the command line with --objective dpo."""
    for key, value in (("train.init_from", "sft-run"), ("train.objective", "dpo"), ("train.beta", "0.3")):
        set_field(studio.config, key, value)
    apply_method_defaults(studio.config)

    async def show(pilot):
        await pilot.press("3")
        form = studio.query_one("#train-form")
        form.scroll_to_widget(next(f for f in studio.query(ConfigField) if f.config_key == "train.objective"),
                              animate=False, top=True)  # fmt: skip
        await train_tab_drawn(pilot)

    assert snap_compare(studio, terminal_size=(160, 48), run_before=show)
