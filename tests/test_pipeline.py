"""Stages chained (`train --after RUN`, `llm-studio pipeline FILE.toml`): each stage a normal run, started by the
queue runner from the previous stage's final checkpoint when that one finishes; a stage that did not finish
cancels the ones after it, saying why; a mistake in any stage is refused before anything is queued."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from studio.config import RunConfig
from studio.paths import datasets_dir, queue_dir, runs_dir
from studio.queue import entries as run_queue
from studio.queue.runner import start_and_wait
from studio.run_folder.events import EventWriter
from studio.run_folder.layout import EVENTS, latest_checkpoint, read_config, run_path
from studio.run_folder.lock import is_locked
from studio.run_folder.status import RunInfo, summarize
from studio.runs.control import create_run
from tests.helpers import TINY_SETTINGS, tiny_config
from tests.test_queue import queue_cleanup, wait_until  # noqa: F401 (a fixture, used by name)

STAGE_ONE = {  # the tiny studio preset, on characters, a context long enough for the chat and preference rows
    "name": "pre",
    "preset": "tiny",
    "tokenizer": "char",
    "max_steps": 10,
    "set": [f"{key}={value}" for key, value in {**TINY_SETTINGS, "model.block_size": 64}.items()],
}


def write_inputs(folder: Path) -> dict[str, Path]:
    """Generated text to pretrain on, chat rows to fine-tune on, preference rows to align on."""
    text = "".join(f"The answer to question {i} is yes. Answers are short.\n" for i in range(200))
    question = [{"role": "user", "content": "Question {}?"}]
    chats = [{"messages": [*question, {"role": "assistant", "content": "yes yes"}]} for _ in range(24)]
    pairs = [
        {"prompt": question, "chosen": [{"role": "assistant", "content": "yes yes"}],
         "rejected": [{"role": "assistant", "content": "no no"}]}
        for _ in range(24)
    ]  # fmt: skip
    files = {"text": folder / "text.txt", "chat": folder / "chat.jsonl", "pref": folder / "pref.jsonl"}
    files["text"].write_text(text, encoding="utf-8")
    for key, rows in (("chat", chats), ("pref", pairs)):
        rows = [json.loads(json.dumps(row).replace("{}", str(i))) for i, row in enumerate(rows)]
        files[key].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return files


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings are written alike in TOML


def write_pipeline(path: Path, stages: list[dict]) -> Path:
    tables = ["[[stage]]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in s.items()) for s in stages]
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


def three_stages(inputs: dict[str, Path]) -> list[dict]:
    return [
        {**STAGE_ONE, "data": str(inputs["text"])},
        {"name": "sft", "data": str(inputs["chat"]), "max_steps": 4},
        {"name": "dpo", "data": str(inputs["pref"]), "objective": "dpo", "max_steps": 4},
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("queue_cleanup")
def test_three_stages_run_unattended_each_from_the_previous_ones_final_checkpoint(run_cli, tmp_path):
    pipeline = write_pipeline(tmp_path / "chain.toml", three_stages(write_inputs(tmp_path)))
    code, out, err = run_cli("pipeline", pipeline)
    assert code == 0, err
    assert [line.strip() for line in out.splitlines() if line.startswith("  ")] == ["pre", "sft", "dpo"]
    wait_until(lambda: summarize(run_path("dpo")).status in ("finished", "failed", "cancelled"), 120, "the stages")
    assert [summarize(run_path(name)).status for name in ("pre", "sft", "dpo")] == ["finished"] * 3
    for previous, stage in (("pre", "sft"), ("sft", "dpo")):
        assert read_config(run_path(stage)).train.init_from == str(latest_checkpoint(run_path(previous)).resolve())
    assert read_config(run_path("dpo")).train.objective == "dpo"
    wait_until(lambda: not is_locked(queue_dir()), 10, "the runner to exit")
    log = (queue_dir() / "runner.log").read_text()
    assert log.index("run pre ended: finished") < log.index("run sft started") < log.index("run dpo started")


@pytest.mark.slow
@pytest.mark.usefixtures("queue_cleanup")
def test_a_failed_first_stage_cancels_the_rest_with_the_reason(run_cli, tmp_path):
    pipeline = write_pipeline(tmp_path / "chain.toml", three_stages(write_inputs(tmp_path)))
    run_cli("queue", "pause")
    assert run_cli("pipeline", pipeline)[0] == 0
    assert "2  sft  after pre" in run_cli("queue")[1]
    shutil.rmtree(datasets_dir() / read_config(run_path("pre")).data.dataset)  # the first stage fails at once
    run_cli("queue", "resume")
    wait_until(lambda: summarize(run_path("dpo")).status == "cancelled", 60, "the last stage to be cancelled")
    assert summarize(run_path("pre")).status == "failed"
    assert summarize(run_path("sft")).status_line == "cancelled: pre failed"
    assert summarize(run_path("dpo")).status_line == "cancelled: sft cancelled"
    _, out, _ = run_cli("runs")
    assert "cancelled: pre failed" in out and "cancelled: sft cancelled" in out
    assert not (run_path("sft") / "pid").exists() and run_queue.waiting_entries() == []


@pytest.mark.parametrize(
    ("stage_two", "words"),
    [
        ({"name": "sft", "data": "chat.jsonl", "max_stepz": 4}, "stage 2 (sft): unknown key 'max_stepz'"),
        ({"name": "sft", "data": "missing.jsonl"}, "stage 2 (sft): "),
        ({"name": "sft", "data": "chat.jsonl", "max_steps": "four"}, "stage 2 (sft): argument --max-steps"),
        ({"name": "sft", "data": "chat.jsonl", "set": ["train.nope=1"]}, "stage 2 (sft): "),
    ],
    ids=["bad-key", "missing-data", "bad-value", "bad-config-key"],
)
def test_a_mistake_in_any_stage_is_one_line_naming_it_and_nothing_is_queued(run_cli, tmp_path, stage_two, words):
    inputs = write_inputs(tmp_path)
    stage_two = {**stage_two, "data": str(tmp_path / stage_two["data"])}
    pipeline = write_pipeline(tmp_path / "chain.toml", [{**STAGE_ONE, "data": str(inputs["text"])}, stage_two])
    code, out, err = run_cli("pipeline", pipeline)
    assert code == 2 and err.startswith(f"llm-studio: error: {words}") and len(err.splitlines()) == 1, err
    assert run_queue.waiting_entries() == [] and not any(runs_dir().glob("*/config.toml"))


# ---- the rule, in process: entries and run folders written by hand, no trainer -----------------------------------
def ended(name: str, state: str) -> None:
    create_run(tiny_config(), name)
    events = EventWriter(run_path(name) / EVENTS)
    events.write("status", 0, state=state)
    events.close()


@pytest.mark.parametrize("state", ["failed", "stopped"])
def test_a_stage_after_a_run_that_did_not_finish_is_cancelled_and_never_launched(studio_home, state, monkeypatch):
    ended("pre", state)
    create_run(RunConfig(), "sft")
    run_queue.add_entry("sft", after="pre")
    monkeypatch.setattr("studio.queue.runner.launch", lambda run_dir: pytest.fail("a cancelled stage launched"))
    (entry,) = run_queue.waiting_entries()
    assert entry.after == "pre"
    start_and_wait(entry)
    run = summarize(run_path("sft"))
    assert (run.status, run.error, run.status_line) == ("cancelled", f"pre {state}", f"cancelled: pre {state}")
    assert run_queue.waiting_entries() == []


@pytest.mark.parametrize(
    ("command", "reason"), [(["queue", "cancel", "sft"], "sft cancelled"), (["delete", "sft", "--yes"], "sft deleted")]
)
def test_removing_a_waiting_run_cancels_the_stages_after_it_now_with_the_reason(run_cli, studio_home, command, reason):
    for name in ("pre", "sft", "dpo", "rlhf", "other"):
        create_run(tiny_config(), name)
    run_queue.pause()
    for name, after in (("pre", None), ("sft", "pre"), ("dpo", "sft"), ("rlhf", "dpo"), ("other", None)):
        run_queue.add_entry(name, after)
    code, out, err = run_cli(*command)
    assert code == 0 and "cancelled the stages after it: dpo, rlhf" in out, err
    assert [entry.run for entry in run_queue.waiting_entries()] == ["pre", "other"]  # delete left sft's entry behind
    assert not run_path("sft").exists()
    assert summarize(run_path("dpo")).status_line == f"cancelled: {reason}"  # was: waited, then "sft damaged"
    assert summarize(run_path("rlhf")).status_line == "cancelled: dpo cancelled"


def test_train_after_queues_a_stage_that_waits_for_its_run(run_cli, tmp_path):
    inputs = write_inputs(tmp_path)
    run_cli("queue", "pause")
    stage_one = [f"--{key.replace('_', '-')}={value}" for key, value in STAGE_ONE.items() if key != "set"]
    stage_one += [word for setting in STAGE_ONE["set"] for word in ("--set", setting)]
    assert run_cli("train", *stage_one, "--data", inputs["text"], "--queue")[0] == 0
    code, out, err = run_cli("train", "--data", inputs["chat"], "--max-steps", "4", "--name", "sft", "--after", "pre")
    assert code == 0 and "queued (position 2, starts when pre has finished)" in out, err
    assert [(entry.run, entry.after) for entry in run_queue.waiting_entries()] == [("pre", None), ("sft", "pre")]
    assert read_config(run_path("sft")).train.init_from == str(run_path("pre").resolve())  # until pre has finished
    assert "2  sft  after pre" in run_cli("queue")[1]


def test_a_stage_may_follow_runs_training_queued_or_finished_newest_first():
    base = RunInfo("", Path(), "created", 0, 10, None, None, "tiny", "data", 0.0, 0.0, None)
    states = ["finished", "failed", "stopped", "running", "starting", "queued", "created", "crashed", "cancelled"]
    runs = [dataclasses.replace(base, name=state, status=state, created=float(age)) for age, state in enumerate(states)]
    runs.append(dataclasses.replace(base, name="damaged", status="damaged", created=99.0))
    assert run_queue.runs_to_follow(runs) == ["queued", "starting", "running", "finished"]
