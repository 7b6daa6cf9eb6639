"""The preference objectives in the studio (issue 22, item 7): the Train tab picks the objective and shows its own
keys, its memory line counts a full run's frozen reference, its command line parses back to the same config; the
Data tab counts a preference dataset's rows and what it skipped."""

from __future__ import annotations

import shlex

import pytest
from textual.widgets import Select, Static

from studio.cli.parser import build_parser, train_config
from studio.data.meta import DatasetMeta, DocumentCounts
from studio.objectives import OBJECTIVES
from tests.test_app import SIZE, field, static_text, type_into
from widgets.app import StudioApp
from widgets.dataset_facts import facts_table
from widgets.panes.train import OBJECTIVE_KEYS


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
        assert shown_keys(app) == {"train.beta", "train.label_smoothing"}
        dpo_line = static_text(app.query_one("#train-method-size", Static))
        assert "with a frozen reference copy" in dpo_line and "reference" not in sft_line
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
