"""The preference objectives in the studio (issue 22, item 7): the Train tab picks the objective and shows its own
keys, its memory line counts a full run's frozen reference, its command line parses back to the same config; the
Data tab counts a preference dataset's rows and what it skipped. The playground's two panels judged (item 5): a
choice becomes a TRL row of the studio's preference file, which the preference reader takes as it is."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from textual.widgets import Checkbox, Input, Select, Static, TextArea

from studio.cli.parser import build_parser, train_config
from studio.data.meta import DatasetMeta, DocumentCounts
from studio.data.preferences import PreferenceRow, read_row, row_shape
from studio.errors import StudioError
from studio.objectives import OBJECTIVES
from studio.playground_preferences import Answer, preference_row, preferences_file
from tests.helpers import open_playground
from tests.test_app import SIZE, field, paste_into, static_text, type_into
from tests.test_ui_playground import chat_run, no_worker  # noqa: F401 (fixtures)
from widgets.app import StudioApp
from widgets.dataset_facts import facts_table
from widgets.generation_panel import GenerationPanel
from widgets.panes.train import OBJECTIVE_KEYS
from widgets.screens.help import screen_keys


def shown_keys(app: StudioApp) -> set[str]:
    return {key for key in OBJECTIVE_KEYS if field(app, key).display}


@pytest.mark.asyncio
async def test_the_train_tab_picks_an_objective_shows_its_keys_and_counts_its_reference(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        assert shown_keys(app) == set()  # lm: none of the preference keys
        await type_into(pilot, "train.init_from", "some-run")
        sft_line = static_text(app.query_one("#train-method-size", Static))
        field(app, "train.objective").query_one(Select).value = "dpo"
        await pilot.pause()
        assert shown_keys(app) == {"train.beta", "train.label_smoothing", "train.precompute_reference"}
        dpo_line = static_text(app.query_one("#train-method-size", Static))
        assert "with a frozen reference copy" in dpo_line and "reference" not in sft_line
        field(app, "train.precompute_reference").query_one(Checkbox).value = True
        await pilot.pause()  # the reference's log-probabilities computed before training: no copy kept
        assert "reference" not in static_text(app.query_one("#train-method-size", Static))
        field(app, "train.precompute_reference").query_one(Checkbox).value = False
        await pilot.pause()
        assert app.config.train.lr == 1e-6  # the objective's default rate (studio.method_defaults)
        assert static_text(app.query_one("#train-lr-note", Static)) == "lr 1e-06 (dpo full default)"
        await type_into(pilot, "train.beta", "0.3")
        command = static_text(app.query_one("#train-command", Static))
        assert "--objective dpo" in command and "--set train.beta=0.3" in command
        parsed = train_config(build_parser().parse_args(shlex.split(command)[1:]))
        assert parsed.to_dict() == app.config.to_dict()
        field(app, "train.method").query_one(Select).value = "lora"
        await pilot.pause()  # LoRA's reference is the base with adapters off: nothing more in memory
        assert "reference" not in static_text(app.query_one("#train-method-size", Static))
        for objective in ("simpo", "kto"):
            field(app, "train.objective").query_one(Select).value = objective
            await pilot.pause()
            assert shown_keys(app) == set(OBJECTIVES[objective].keys)
        field(app, "train.objective").query_one(Select).value = "grpo"  # μ among GRPO's keys, on its command line
        await pilot.pause()
        assert shown_keys(app) == set(OBJECTIVES["grpo"].keys) and "train.grpo_iterations" in shown_keys(app)
        await type_into(pilot, "train.grpo_iterations", "2")
        command = static_text(app.query_one("#train-command", Static))
        assert "--set train.grpo_iterations=2" in command
        assert train_config(build_parser().parse_args(shlex.split(command)[1:])).train.grpo_iterations == 2


@pytest.mark.asyncio
async def test_the_train_tab_edits_a_reward_holding_a_pipe_as_the_command_line_does(studio_home):
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        field(app, "train.objective").query_one(Select).value = "grpo"
        await pilot.pause()
        await paste_into(pilot, "train.rewards", "regex:^(yes\\|no)$|length:4")
        assert app.config.train.rewards == ["regex:^(yes|no)$", "length:4"]
        assert field(app, "train.rewards").query_one(Input).value == "regex:^(yes\\|no)$|length:4"


def preference_meta() -> DatasetMeta:
    """What preparing 13 pair rows, 3 of them skipped, writes: 10 pairs, 20 examples."""
    return DatasetMeta(
        name="prefs", source="prefs.jsonl", kind="rows", format=1, key="k", content_hash="h",
        options={"tokenizer": "hf"}, files_read=1, binary_files_skipped=0, characters=900, bytes_replaced=0,
        documents=DocumentCounts(13, 10, {"missing_field": 1, "empty_answer": 0, "same_answers": 2, "overlong": 0}),
        tokens={"train": 300, "val": 60}, dtype="uint16", vocab_size=320, eot_id=2, tokenizer_hash="t",
        chars_per_token=2.5, created="2026-01-01T00:00:00+00:00", examples={"train": 16, "val": 4},
        row_format="pairs", truncated=1,
    )  # fmt: skip


def test_the_data_tabs_facts_count_a_preference_datasets_rows_and_skipped_ones():
    facts = [
        " ".join(line.split()) for line in static_text(Static(facts_table("prefs", preference_meta()))).splitlines()
    ]
    assert "rows 10 kept of 13 seen" in facts
    assert "format pairs, 8 train · 2 val, 1 truncated" in facts  # rows, not examples (two a pair)
    assert "dropped missing a field 1, chosen = rejected 2" in facts


async def both_answer(pilot, answers: dict[str, str]) -> None:
    """Each panel's worker answering the turn just sent (panel id -> its answer)."""
    for panel_id, text in answers.items():
        panel = pilot.app.query_one(panel_id, GenerationPanel)
        panel.post_message(GenerationPanel.Reply(panel, {"token": text, "tokens_per_s": 50.0}))
        done = {"tokens": 1, "tokens_per_s": 50.0, "stopped": False}
        panel.post_message(GenerationPanel.Reply(panel, {"done": done}))
    await pilot.pause()


@pytest.mark.asyncio
async def test_judging_the_two_panels_appends_a_trl_row_the_preference_reader_takes(chat_run, no_worker):  # noqa: F811
    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await open_playground(pilot, "What is 2+2?")
        await pilot.press("c")
        app.query_one("#panel-b", GenerationPanel).select("assistant", 100)
        app.query_one("#prompt", TextArea).focus()
        await pilot.press("ctrl+g", "escape")
        keys = dict(screen_keys(app.screen))  # what ? lists
        assert (keys["a"], keys["b"], keys["t"]) == ("A (left) better", "B (right) better", "Tie (not recorded)")
        await pilot.press("a")  # nothing answered yet: nothing to judge
        assert not preferences_file().exists()
        await both_answer(pilot, {"#panel-a": "4", "#panel-b": "5"})
        await pilot.press("t")  # a tie is not written
        assert not preferences_file().exists()
        app.query_one("#prompt", TextArea).text = "What is 2+2?"
        await pilot.press("n", "p", "ctrl+g", "escape")  # a new chat, both asked again
        await both_answer(pilot, {"#panel-a": "4", "#panel-b": "5"})
        await pilot.press("b", "a")  # B better; then A: the pair was judged already, nothing more is written
        rows = [json.loads(line) for line in preferences_file().read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "5"}],
            "rejected": [{"role": "assistant", "content": "4"}],
            "chosen_model": {"run": "assistant", "checkpoint": 100},
            "rejected_model": {"run": "assistant", "checkpoint": "latest"},
        }
    ]
    read = read_row(rows[0], row_shape(rows[0]), "row 1")  # as `prepare --objective dpo` reads the file
    assert read == PreferenceRow(rows[0]["prompt"], [rows[0]["chosen"], rows[0]["rejected"]])


RECORDER = """
import sys
from pathlib import Path
from studio.playground_preferences import Answer, record_preference
who, path = sys.argv[1], Path(sys.argv[2])
for i in range(200):
    prompt = [{"role": "user", "content": f"{who} {i}"}]
    record_preference(Answer(prompt, who * 20_000, who, i), Answer(prompt, "no", "other", "latest"), path)
"""


def test_two_studios_recording_at_once_write_every_row_whole_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "playground.jsonl"
    recorders = [subprocess.Popen([sys.executable, "-c", RECORDER, who, str(path)]) for who in "ab"]
    assert [recorder.wait(timeout=60) for recorder in recorders] == [0, 0]
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines.pop() == "" and "" not in lines  # no blank line: a recorder never saw the other's row half written
    rows = [json.loads(line) for line in lines]
    expected = sorted(f"{who} {i}" for who in "ab" for i in range(200))
    assert sorted(row["prompt"][0]["content"] for row in rows) == expected  # none lost
    assert all(row["chosen"][0]["content"] == row["chosen_model"]["run"] * 20_000 for row in rows)


def test_a_completions_row_holds_texts_and_different_prompts_are_refused():
    chosen, rejected = Answer("def f", "(x): return x", "a", 10), Answer("def f", "():", "b", "latest")
    row = preference_row(chosen, rejected)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("def f", "(x): return x", "():")
    assert read_row(row, row_shape(row), "row 1") == PreferenceRow(
        [{"role": "user", "content": "def f"}],
        [[{"role": "assistant", "content": "(x): return x"}], [{"role": "assistant", "content": "():"}]],
    )
    with pytest.raises(StudioError, match="different prompts"):
        preference_row(chosen, Answer("def g", "():", "b", "latest"))
