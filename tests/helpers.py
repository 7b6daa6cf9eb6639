"""Helpers the tests share: tiny training options, homes with trained runs, hand-written run folders, a killed
queue runner, waiting."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import studio.queue.entries
from studio.config import RunConfig, set_field
from studio.paths import queue_dir, runs_dir
from studio.presets import load_preset
from studio.run_folder.layout import LOCK

# A model small enough that a trainer process does 100 steps in a few seconds on 2 cores, on characters.
TINY_SETTINGS = {
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.block_size": 32,
    "train.batch_size": 8,
    "train.warmup_steps": 5,
    "train.log_interval": 5,
    "train.eval_interval": 10,
    "train.eval_steps": 2,
    "train.sample_interval": 20,
    "train.sample_tokens": 8,
}
TINY_TRAIN = ["--preset", "tiny", "--tokenizer", "char"]  # the same, as `llm-studio train` options
TINY_TRAIN += [word for key, value in TINY_SETTINGS.items() for word in ("--set", f"{key}={value}")]


def tiny_config(changes: dict[str, object] | None = None) -> RunConfig:
    """TINY_TRAIN as a config, as the studio would launch it, with `changes` (section.key: value) on top."""
    config = load_preset("tiny")
    for key, value in {"data.tokenizer": "char", **TINY_SETTINGS, **(changes or {})}.items():
        set_field(config, key, value)
    return config


ADD_FUNCTION = "def add(a, b):\n    return a + b\n\n"


def train_runs(tmp_path_factory, corpus_text: str, runs: dict[str, list[str]]) -> Path:
    """A studio home for a test module holding tiny runs trained once through the CLI (name -> extra args)."""
    from studio.cli.main import main

    home = tmp_path_factory.mktemp("home")
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        for name, extra in runs.items():
            assert main(["train", *TINY_TRAIN, "--data", str(corpus), "--name", name, *extra]) == 0
    return home


T0 = 1_700_000_000.0


def fixture_events(max_steps: int = 100, failed_at: int | None = None) -> list[dict]:
    """A run of `max_steps` steps: train every 5, eval every 20, samples every 50; finished, or failed."""
    events = [{"t": T0, "kind": "status", "step": 0, "state": "running", "max_steps": max_steps}]
    last = failed_at if failed_at is not None else max_steps
    for step in range(0, last + 1, 5):
        if step:
            events.append(
                {
                    "t": T0 + step,
                    "kind": "train",
                    "step": step,
                    "loss": round(4.0 * math.exp(-step / 40) + 1.0, 4),
                    "lr": 1e-3,
                    "grad_norm": 0.5,
                    "tokens_per_s": 12000.0,
                    "tokens_seen": step * 256,
                    "mfu": 0.02,
                }
            )
        if step % 20 == 0:
            events.append(
                {"t": T0 + step, "kind": "eval", "step": step, "val_loss": round(4.2 * math.exp(-step / 45) + 1.1, 4)}
            )
        if step % 50 == 0:
            events.append(
                {
                    "t": T0 + step,
                    "kind": "sample",
                    "step": step,
                    "samples": [{"prompt": "def ", "text": f"f{step}(x):"}, {"prompt": "The ", "text": f"cat {step}"}],
                }
            )
    if failed_at is not None:
        events.append(
            {
                "t": T0 + last,
                "kind": "error",
                "step": last,
                "message": "out of memory at step 40: lower train.batch_size",
            }
        )
        events.append({"t": T0 + last, "kind": "status", "step": last, "state": "failed"})
    else:
        events.append({"t": T0 + last, "kind": "status", "step": last, "state": "finished"})
    return events


def with_memory(events: list[dict], estimate: int, baseline: int, peak: int) -> list[dict]:
    """The events of a CPU run whose trainer reported its memory (studio.train.memory): the estimate and the
    runtime's baseline when it started, and a peak RSS rising to `peak` by the last train event."""
    trains = [event for event in events if event["kind"] == "train"]
    for index, event in enumerate(trains, 1):
        event["mem_peak"] = baseline + (peak - baseline) * index // len(trains)
    events[0].update(mem_estimate=estimate, mem_measure="rss", mem_baseline=baseline)
    return events


def write_fixture_run(
    name: str, events: list[dict] | None = None, log: str = "step 100 loss 1.2\n", preset: str = "tiny"
) -> Path:
    """A run folder under the current LLM_STUDIO_HOME: config.toml, events.jsonl, trainer.log (no process)."""
    run_dir = runs_dir() / name
    run_dir.mkdir(parents=True)
    config = RunConfig(preset=preset)
    config.train.max_steps = 100
    config.data.dataset = "fixture-data"
    config.save(run_dir / "config.toml")
    write_events(run_dir, fixture_events() if events is None else events)
    (run_dir / "trainer.log").write_text(log, encoding="utf-8")
    return run_dir


def record_this_process_as_trainer(run_dir: Path) -> None:
    """The run's recorded process is this one: the run reads as alive (starting, or running after its event)."""
    from studio.run_folder.status import process_start

    (run_dir / "pid").write_text(f"{os.getpid()} {process_start(os.getpid())}\n", encoding="utf-8")


def write_events(run_dir: Path, events: list[dict], mode: str = "a") -> None:
    with open(run_dir / "events.jsonl", mode, encoding="utf-8") as file:
        file.writelines(json.dumps(event) + "\n" for event in events)


def kill_queue_runner() -> None:
    """The queue as a killed runner leaves it: its lock file, held by a process that is gone (the kernel let go)."""
    folder = queue_dir()
    folder.mkdir(parents=True, exist_ok=True)
    hold = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(); time.sleep(60)"
    runner = subprocess.Popen([sys.executable, "-c", hold, str(folder / LOCK)], stdout=subprocess.PIPE, text=True)
    runner.stdout.readline()  # it holds the lock
    runner.kill()
    runner.wait()
    runner.stdout.close()


def record_runner_starts(monkeypatch) -> list[list[str]]:
    """The commands of the queue runners started from now on, recorded instead of started (they would train)."""
    started: list[list[str]] = []
    monkeypatch.setattr(studio.queue.entries, "start_holding", lambda command, *_: started.append(command))
    return started


async def wait_for(pilot, condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Let the app run until condition() holds; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def open_playground(pilot, prompt: str, **sampling: str) -> None:
    """Tab 5 with its runs loaded, the prompt written and the sampling controls set."""
    from textual.widgets import Input, TextArea

    await pilot.press("5")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    pilot.app.query_one("#prompt", TextArea).text = prompt
    for field, value in sampling.items():
        pilot.app.query_one(f"#{field}", Input).value = value


async def playground_answer(pilot, run: str, text: str) -> str:
    """What panel A of the playground shows once `run` has answered `text` (a generation or a prediction)."""
    from textual.widgets import TextArea

    from widgets.generation_panel import GenerationPanel

    await open_playground(pilot, text)
    panel = pilot.app.query_one("#panel-a", GenerationPanel)
    panel.select(run)
    await pilot.press("ctrl+g")
    await pilot.pause()
    await wait_for(pilot, lambda: not panel.busy, timeout=60.0, what="the playground's answer")
    return panel.query_one(".output-text", TextArea).text
