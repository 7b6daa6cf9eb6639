"""The studio's fine-tuning parts, driven with Pilot: a checkpoint folder picked on the Model tab shows what it is
and what each method needs; the Train tab's method fields say what trains; chat rows prepared on the Data tab show
the tokens the loss learns; a folder that cannot be used says why in one line."""

from __future__ import annotations

import json
import re

import pytest
from textual.widgets import Input, Select, Static

from studio.config import set_field
from studio.presets import load_preset
from tests.hf_models import CHATML, make_hf_model
from tests.test_app import SIZE, field, static_text
from widgets.app import StudioApp
from widgets.messages import CheckpointChosen
from widgets.panes.model import ModelPane
from widgets.screens.file_picker import FilePickerScreen
from widgets.token_sample import TokenSample

pytest.importorskip("transformers")


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "qwen"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    return folder


async def wait_for_text(pilot, widget, text: str, timeout: float = 30.0) -> str:
    waited = 0.0
    while text not in static_text(widget) and waited < timeout:
        await pilot.pause(0.1)
        waited += 0.1
    return static_text(widget)


@pytest.mark.asyncio
async def test_a_checkpoint_folder_picked_on_the_model_tab_shows_its_facts(studio_home, checkpoint, monkeypatch):
    monkeypatch.chdir(checkpoint.parent)
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.press("b")
        await pilot.pause(0.3)
        assert isinstance(app.screen, FilePickerScreen)
        await pilot.press("down")  # the first entry: the checkpoint folder
        await pilot.press("c")
        await pilot.pause()
        assert app.config.train.init_from == str(checkpoint)
        facts = await wait_for_text(pilot, app.query_one("#model-size", Static), "qlora")
        assert "qwen2 (Qwen2ForCausalLM)" in facts and "2 layers, width 64, 4 heads (2 key/value)" in facts
        assert "94.8K" in facts and "128 tokens" in facts and "chat template  yes" in facts
        assert "full" in facts and "lora" in facts
        await pilot.press("3")
        field(app, "train.method").query_one(Select).value = "lora"
        await pilot.pause()
        line = static_text(app.query_one("#train-method-size", Static))
        assert "of 94.8K parameters train" in line, line
        command = static_text(app.query_one("#train-command", Static))
        assert f"--init-from {checkpoint} --method lora" in command  # the flags the README writes


@pytest.mark.asyncio
async def test_a_folder_that_cannot_be_used_says_why_on_the_model_tab(studio_home, checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    config = load_preset("tiny")
    set_field(config, "train.init_from", str(checkpoint))
    app = StudioApp(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        size = app.query_one("#model-size", Static)
        text = await wait_for_text(pilot, size, "tokenizer.json")
        assert "has no tokenizer.json" in text and size.has_class("-error")


@pytest.mark.asyncio
async def test_chat_rows_prepared_on_the_data_tab_show_the_learned_tokens(studio_home, checkpoint, tmp_path):
    rows = tmp_path / "chat.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in (("Hi?", "Hello."), ("2+2?", "4"), ("Sky?", "Blue"))
        )
    )
    config = load_preset("tiny")
    set_field(config, "data.source", str(rows))
    set_field(config, "train.init_from", str(checkpoint))
    app = StudioApp(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        title = static_text(app.query_one("#data-sample-title"))
        assert "the tokens the loss learns are green" in title
        sample = app.query_one(TokenSample).content
        learned = "".join(sample.plain[span.start : span.end] for span in sample.spans if "success" in str(span.style))
        # every example's answer and end token, no more: three examples are too few to hold one out (issue 21)
        assert learned == "Hello.<|im_end|>4<|im_end|>Blue<|im_end|>"
        facts = static_text(app.query_one("#data-facts"))
        assert "held out" in facts and "nothing: everything trains" in facts


async def pick_checkpoint(pilot, folder) -> None:
    """What the file picker and the cache table do once a checkpoint is chosen."""
    pilot.app.query_one(ModelPane).post_message(CheckpointChosen(str(folder)))
    await pilot.pause()


@pytest.mark.asyncio
async def test_a_picked_checkpoint_is_the_model_and_trains_at_its_methods_rate(studio_home, checkpoint):
    """Issue 21, item 6: the Model form stops showing the preset's model (the checkpoint's is its own, vocabulary
    included: its facts say so) and the Train tab takes the method's learning rate, with its origin."""
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        note = app.query_one("#model-from-checkpoint", Static)
        assert field(app, "model.n_layer").display and not note.display
        await pick_checkpoint(pilot, checkpoint)
        shown = [
            key
            for key in ("model.arch", "model.n_layer", "model.n_embd", "model.vocab_size")
            if field(app, key).display
        ]
        assert shown == [] and field(app, "model.block_size").display and note.display
        facts = await wait_for_text(pilot, app.query_one("#model-size", Static), "qlora")
        assert re.search(r"^vocabulary +320 *$", facts, re.MULTILINE)  # its config's, not the preset's 2,048
        await pilot.press("3")
        assert app.config.train.lr == 2e-5 and field(app, "train.lr").query_one(Input).value == "2e-05"
        assert static_text(app.query_one("#train-lr-note", Static)) == "lr 2e-05 (full default)"


@pytest.mark.asyncio
async def test_a_rate_the_user_set_stays_when_a_checkpoint_is_picked(studio_home, checkpoint):
    config = load_preset("tiny")
    set_field(config, "train.lr", 1e-4)
    app = StudioApp(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pick_checkpoint(pilot, checkpoint)
        await pilot.press("3")
        assert app.config.train.lr == 1e-4
        assert static_text(app.query_one("#train-lr-note", Static)) == "lr 0.0001 (set)"
