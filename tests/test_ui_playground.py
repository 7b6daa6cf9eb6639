"""The playground with chat runs, on run folders written by hand (nothing is generated: the worker process is
replaced by replies posted as it would send them): chat mode and the checkpoint's sampling settings taken from the
run, the prompt cleared once a turn is sent, a line while a conversation continues, `ctrl+a` selecting all, and the
token view of an answer (`l`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Label, Select, Static, TextArea

from studio.config import RunConfig
from studio.data.chat import DEFAULT_CHAT_TEMPLATE
from studio.data.meta import DatasetMeta, DocumentCounts
from studio.output_folder import MARKER
from studio.run_folder.exports import record_export
from studio.run_folder.layout import checkpoint_name
from tests.helpers import open_playground
from widgets.app import StudioApp
from widgets.generation_panel import LOOK_TOP_K, GenerationPanel
from widgets.key_hints import KeyHints
from widgets.screens.help import screen_keys
from widgets.screens.token_look import TokenLookScreen

CHECKPOINT_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


def write_chat_dataset(home, name: str) -> None:
    meta = DatasetMeta(
        name=name, source="chat.jsonl", kind="rows", format=1, key="k", content_hash="h", options={},
        documents=DocumentCounts(4, 4), files_read=1, binary_files_skipped=0, characters=100, bytes_replaced=0,
        tokens={"train": 60, "val": 20}, dtype="uint16", vocab_size=320, eot_id=2, tokenizer_hash="t",
        chars_per_token=1.0, created="2026-01-01T00:00:00+00:00", examples={"train": 3, "val": 1},
        row_format="messages", chat_template=DEFAULT_CHAT_TEMPLATE,
    )  # fmt: skip
    (home / "datasets" / name).mkdir(parents=True)
    meta.save(home / "datasets" / name / "meta.json")


@pytest.fixture
def chat_run(studio_home, tmp_path):
    """Run `assistant`: adapted from a folder whose generation_config.json sets sampling, trained on chat rows."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, **CHECKPOINT_SAMPLING}))
    write_chat_dataset(studio_home, "chat-rows")
    config = RunConfig()
    config.data.dataset, config.train.init_from = "chat-rows", str(base)
    run_dir = studio_home / "runs" / "assistant"
    (run_dir / "checkpoints" / checkpoint_name(100)).mkdir(parents=True)
    (run_dir / "checkpoints" / "latest").write_text(checkpoint_name(100))
    config.save(run_dir / "config.toml")
    return run_dir


@pytest.fixture
def no_worker(monkeypatch):
    """The panels' requests, kept instead of sent to a worker process."""
    sent = []
    monkeypatch.setattr(GenerationPanel, "_send", lambda panel, request: sent.append(request))
    return sent


async def answer(pilot, text: str) -> None:
    """Panel A's worker answering the turn just sent with `text`."""
    panel = pilot.app.query_one("#panel-a", GenerationPanel)
    panel.post_message(GenerationPanel.Reply(panel, {"token": text, "tokens_per_s": 50.0}))
    panel.post_message(GenerationPanel.Reply(panel, {"done": {"tokens": 3, "tokens_per_s": 50.0, "stopped": False}}))
    await pilot.pause()


# a look inside the answer "4. It is", as the worker would send it: one token per probability band
LOOKS = [
    {"token_id": 52, "text": "4", "probability": 0.9731, "entropy": 0.1523,
     "alternatives": [["4", 0.9731], ["5", 0.0112], [" four", 0.0051]]},
    {"token_id": 14, "text": ".", "probability": 0.6204, "entropy": 1.0871,
     "alternatives": [[".", 0.6204], ["!", 0.2101], ["\n", 0.0733]]},
    {"token_id": 90, "text": " It", "probability": 0.2457, "entropy": 2.3318,
     "alternatives": [[" The", 0.3012], [" It", 0.2457], [" So", 0.1024]]},
    {"token_id": 77, "text": " is", "probability": 0.0412, "entropy": 3.9046,
     "alternatives": [[" was", 0.4410], [" has", 0.1893], [" will", 0.0977]]},
]  # fmt: skip


async def look_inside(pilot) -> None:
    """A turn answered, then `l` and the worker's looks."""
    await open_playground(pilot, "What is 2+2?")
    pilot.app.query_one("#prompt", TextArea).focus()
    await pilot.press("ctrl+g")
    await answer(pilot, "4. It is")
    await pilot.press("escape", "l")  # out of the prompt, where l is a letter
    panel = pilot.app.query_one("#panel-a", GenerationPanel)
    panel.post_message(GenerationPanel.Reply(panel, {"looks": LOOKS}))
    await pilot.pause()


def conversation_line(app) -> str:
    """The line that says a conversation continues ("" when it is hidden)."""
    line = app.query_one("#conversation", Static)
    return str(line.render()) if line.display else ""


@pytest.mark.asyncio
async def test_a_chat_run_opens_in_chat_mode_with_its_checkpoint_sampling_settings(chat_run):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "Hi")
        assert str(app.query_one("#playground-mode", Label).render()) == "chat"
        sampling = {field: app.query_one(f"#{field}", Input).value for field in ("temperature", "top_p", "top_k")}
        assert sampling == {"temperature": "0.7", "top_p": "0.8", "top_k": "20"}
        assert app.query_one("#repetition_penalty", Input).value == "1.05"
        assert app.query_one("#max_new_tokens", Input).value == "200"  # not the checkpoint's: the studio's


def export_folder(folder: Path, run: str, chat_template: str | None = None) -> Path:
    """A Hugging Face folder as `export` leaves it for `run` (its marker names the run), with a chat template or
    none."""
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / MARKER).write_text(json.dumps({"run": run, "step": 100, "files": ["config.json"]}))
    if chat_template:
        (folder / "chat_template.jinja").write_text(chat_template)
    return folder


@pytest.mark.asyncio
async def test_a_runs_exports_and_its_base_answer_beside_it(chat_run, no_worker, tmp_path):
    """The folders exported from a run that are still its own, and the folder it was adapted from, are picked
    beside it; a folder's request names its path, its mode is the folder's own (a template: chat)."""
    exported = export_folder(tmp_path / "exported", "assistant", DEFAULT_CHAT_TEMPLATE)
    record_export(chat_run, exported, 100)
    record_export(chat_run, export_folder(tmp_path / "taken", "another"), 100)  # another run's export since
    record_export(chat_run, tmp_path / "deleted", 100)
    (tmp_path / "base" / "config.json").write_text("{}")  # chat_run's base: no template
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "Hi")
        panel = app.query_one("#panel-a", GenerationPanel)
        options = panel.query_one("#run", Select)._options[1:]  # after the blank "run" prompt
        assert [(str(label), value) for label, value in options] == [
            ("assistant", "assistant"),
            ("assistant ▸ export exported (step 100)", str(exported)),
            ("assistant ▸ base base", str(tmp_path / "base")),
        ]
        assert panel.run_name == "assistant"  # the newest run, not a folder
        panel.query_one("#run", Select).value = str(tmp_path / "base")
        await pilot.pause()
        assert str(app.query_one("#playground-mode", Label).render()) == "completion"
        panel.query_one("#run", Select).value = str(exported)
        await pilot.pause()
        assert str(app.query_one("#playground-mode", Label).render()) == "chat"
        app.query_one("#prompt", TextArea).focus()
        await pilot.press("ctrl+g")
        request = no_worker[-1]["generate"]
        assert request["target"] == str(exported) and request["checkpoint"] is None
        assert request["messages"] == [{"role": "user", "content": "Hi"}]


@pytest.mark.asyncio
async def test_a_sent_turn_clears_the_prompt_and_a_line_says_the_conversation_continues(chat_run, no_worker):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "Hi")
        assert conversation_line(app) == ""
        app.query_one("#prompt", TextArea).focus()
        await pilot.press("ctrl+g")
        assert app.query_one("#prompt", TextArea).text == ""
        assert no_worker[-1]["generate"]["messages"] == [{"role": "user", "content": "Hi"}]
        await answer(pilot, "Hello!")
        assert (
            conversation_line(app) == "continuing a conversation of 1 turn — n starts a new one (ctrl+n in the prompt)"
        )
        await pilot.press(*"How are you?", "ctrl+g")
        await answer(pilot, "Fine.")
        assert conversation_line(app).startswith("continuing a conversation of 2 turns")
        await pilot.press("ctrl+n")
        assert conversation_line(app) == "" and app.query_one("#panel-a", GenerationPanel).history == []
        await pilot.press("escape", "m")  # completion mode: the prompt stays for the next continuation
        app.query_one("#prompt", TextArea).text = "def "
        await pilot.press("g")
        assert app.query_one("#prompt", TextArea).text == "def "
        assert no_worker[-1]["generate"]["prompt"] == "def "


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["#prompt", "#temperature"])
async def test_ctrl_a_selects_everything_in_a_prompt(chat_run, field):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "line one\nline two")
        app.query_one(field).focus()
        await pilot.press("end", "ctrl+a")
        widget = app.query_one(field)
        text = widget.text if isinstance(widget, TextArea) else widget.value
        assert widget.selected_text == text and text


@pytest.mark.asyncio
async def test_l_asks_the_worker_for_a_look_only_once_an_answer_is_done_and_the_view_walks_its_tokens(
    chat_run, no_worker
):
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_playground(pilot, "What is 2+2?")
        panel = app.query_one("#panel-a", GenerationPanel)
        assert dict(screen_keys(app.screen))["l"] == "Look inside"  # what ? lists
        assert "l Look inside" in app.screen.query_one(KeyHints).hints().plain
        await pilot.press("l")
        status = str(panel.query_one(".generation-status").render())
        assert status == "nothing to look inside yet: generate an answer first (g), then press l" and no_worker == []
        await look_inside(pilot)
        assert [request for request in no_worker if "look" in request] == [{"look": {"top_k": LOOK_TOP_K}}]
        assert "look" not in no_worker[0]  # generating asked for no look: it goes as fast as before
        screen = app.screen
        assert isinstance(screen, TokenLookScreen)
        assert screen.query_one("#token-look-answer", Static).content.plain == "4. It is"
        facts = screen.query_one("#token-look-facts", Static).content.plain.splitlines()
        assert facts[:3] == ["token        1 of 4: '4'", "probability  0.9731", "entropy      0.1523 nats"]
        assert facts[3:] == ["#1           0.9731  '4'", "#2           0.0112  '5'", "#3           0.0051  ' four'"]
        await pilot.press("right", "right", "right", "right")  # past the last token: it stays there
        facts = screen.query_one("#token-look-facts", Static).content.plain.splitlines()
        assert facts[:2] == ["token        4 of 4: ' is'", "probability  0.0412"]
        await pilot.press("left")
        assert screen.query_one("#token-look-facts", Static).content.plain.startswith("token        3 of 4: ' It'")
        await pilot.press("escape")
        assert not isinstance(app.screen, TokenLookScreen)
        assert str(panel.query_one(".generation-status").render()) == "looked inside 4 tokens"


@pytest.mark.asyncio
async def test_l_looks_inside_the_panel_holding_the_focus(chat_run, no_worker):
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        await open_playground(pilot, "What is 2+2?")
        await pilot.press("c")
        panel_a, panel_b = app.query_one("#panel-a", GenerationPanel), app.query_one("#panel-b", GenerationPanel)
        panel_b.query_one(".output-text", TextArea).focus()
        await pilot.press("l")
        assert str(panel_b.query_one(".generation-status").render()).startswith("nothing to look inside yet")
        assert str(panel_a.query_one(".generation-status").render()) == "a new conversation"  # A was not asked


def attention_of(index: int, layer: int, head: int) -> dict:
    """The worker's reply to an `attend` for token `index` of LOOKS' answer (a model of 2 layers of 4 heads)."""
    context = ["<|user|>", "What", " is", " 2", "+", "2", "?", "<|assistant|>", *[look["text"] for look in LOOKS]]
    context = context[: 8 + index]
    weights = [0.05 * (1 + (position + layer + head) % 3) for position in range(len(context))]
    weights = [weight / sum(weights) for weight in weights]
    token = LOOKS[index]["text"]
    return {"index": index, "token": token, "layer": layer, "head": head, "layers": 2, "heads": 4,
            "context": context, "weights": weights}  # fmt: skip


def attention_lines(screen) -> list[str]:
    return screen.query_one("#token-look-attention", Static).content.plain.splitlines()


@pytest.mark.asyncio
async def test_a_shows_where_the_model_looked_for_the_cursors_token_and_asks_again_as_the_choice_moves(
    chat_run, no_worker
):
    """`a` asks the panel's worker for the attention behind the cursor's token (layer and head counted from 0 in the
    request, from 1 on screen); moving the token, the layer or the head asks again, within the model's counts once a
    reply said them; a reply for an earlier choice is not drawn; an error is said in the view."""
    app = StudioApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await look_inside(pilot)
        screen, panel = app.screen, app.query_one("#panel-a", GenerationPanel)
        hints = screen.query_one(KeyHints).hints().plain
        assert "a Attention" in hints and "Layer" not in hints  # the layer and head keys once it is shown
        assert not screen.query_one("#token-look-attention", Static).display
        await pilot.press("a")
        assert no_worker[-1] == {"attend": {"token": 0, "layer": 0, "head": 0}}
        assert "Layer −" in screen.query_one(KeyHints).hints().plain
        assert attention_lines(screen) == ["asking the model for layer 1, head 1..."]
        panel.post_message(GenerationPanel.Reply(panel, {"attention": attention_of(0, 0, 0)}))
        await pilot.pause()
        lines = attention_lines(screen)
        assert lines[0] == "layer 1 of 2 (up/down) · head 1 of 4 ([ ]) · choosing '4'"
        assert lines[1] == "<|user|>What is 2+2?<|assistant|>"
        assert lines[2].startswith("0.200 ████████████████████  ' is' (token 3 of the context)")
        assert len(lines) == 2 + 5
        await pilot.press("down", "down", "down")  # past the last layer: it stays on layer 2
        assert no_worker[-1] == {"attend": {"token": 0, "layer": 1, "head": 0}}
        await pilot.press("right_square_bracket", "right")
        assert no_worker[-2:] == [
            {"attend": {"token": 0, "layer": 1, "head": 1}},
            {"attend": {"token": 1, "layer": 1, "head": 1}},
        ]
        panel.post_message(GenerationPanel.Reply(panel, {"attention": attention_of(0, 1, 1)}))  # an earlier choice
        await pilot.pause()
        assert attention_lines(screen) == ["asking the model for layer 2, head 2..."]
        panel.post_message(GenerationPanel.Reply(panel, {"attention": attention_of(1, 1, 1)}))
        await pilot.pause()
        assert attention_lines(screen)[0] == "layer 2 of 2 (up/down) · head 2 of 4 ([ ]) · choosing '.'"
        panel.post_message(GenerationPanel.Reply(panel, {"error": "the model process ran out of memory"}))
        await pilot.pause()
        assert attention_lines(screen) == ["error: the model process ran out of memory"]
        await pilot.press("a")
        assert not screen.query_one("#token-look-attention", Static).display
        asked = len(no_worker)
        await pilot.press("up", "right")  # hidden: nothing is asked
        assert len(no_worker) == asked


def test_token_view_snapshot(chat_run, no_worker, snap_compare):
    async def run_before(pilot) -> None:
        await look_inside(pilot)
        await pilot.press("right", "right")  # the cursor on ' It', whose alternatives hold a likelier token
        await pilot.press("a")
        panel = pilot.app.query_one("#panel-a", GenerationPanel)
        panel.post_message(GenerationPanel.Reply(panel, {"attention": attention_of(2, 0, 0)}))
        await pilot.pause(0.2)

    assert snap_compare(StudioApp(), terminal_size=(120, 40), run_before=run_before)


def test_playground_in_chat_mode_snapshot(chat_run, no_worker, snap_compare):
    async def run_before(pilot) -> None:
        await open_playground(pilot, "What is 2+2?")
        app.query_one("#prompt", TextArea).focus()
        await pilot.press("ctrl+g")
        await answer(pilot, "4")
        await pilot.press(*"And 3+3?", "escape")  # out of the prompt: no blinking cursor in the picture
        await pilot.pause(0.2)

    app = StudioApp()
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
