"""The run queue and sweeps: entries in order, cancel, pause; bad sweeps refused whole; and end to end, a sweep's
runs trained one at a time by the queue runner with no studio open."""

from __future__ import annotations

import os
import sys
import time

import pytest

from studio.errors import StudioError
from studio.paths import queue_dir, runs_dir
from studio.queue import entries as run_queue
from studio.queue.sweep import name_labels, read_sweep, sweep_of
from studio.run_folder.events import read_events
from studio.run_folder.layout import run_path
from studio.run_folder.lock import is_locked, try_lock
from studio.run_folder.status import summarize, trainer_alive
from studio.runs.control import create_run, stop_run
from tests.helpers import TINY_TRAIN, kill_queue_runner, record_runner_starts, tiny_config


def created_runs(*names: str) -> None:
    for name in names:
        create_run(tiny_config(), name)


def waiting() -> list[str]:
    return [entry.run for entry in run_queue.waiting_entries()]


# ---- entries, cancel, pause (no runner: nothing is started) -----------------------------------------------------
def test_entries_wait_in_the_order_they_were_added_and_are_taken_once(studio_home):
    created_runs("a", "b", "c")
    assert [run_queue.add_entry(name) for name in ("a", "b", "c")] == [1, 2, 3]
    assert waiting() == ["a", "b", "c"]
    first = run_queue.next_entry()
    assert first.run == "a" and run_queue.take_entry(first)
    assert not run_queue.take_entry(first)  # a runner and a cancel never both have it
    run_queue.add_entry("a")
    assert waiting() == ["b", "c", "a"]


def test_cancel_takes_a_waiting_run_out_and_removes_its_unlaunched_folder(studio_home):
    created_runs("a", "b")
    run_queue.add_entry("a")
    run_queue.add_entry("b")
    run_queue.cancel("a")
    assert waiting() == ["b"] and not run_path("a").exists() and run_path("b").exists()
    with pytest.raises(StudioError, match="not in the queue"):
        run_queue.cancel("a")


def test_pause_holds_the_queue_no_runner_starts_and_queued_runs_show_as_queued(studio_home):
    created_runs("a", "other")
    run_queue.pause()
    assert run_queue.enqueue("a") == 1
    assert run_queue.next_entry() is None and not is_locked(queue_dir())  # no runner was started
    state = run_queue.queue_state()
    assert state.paused and [entry.run for entry in state.waiting] == ["a"] and state.current is None
    runs = {run.name: run.status for run in run_queue.mark_queued([summarize(run_path(n)) for n in ("a", "other")])}
    assert runs == {"a": "queued", "other": "created"}


def test_queue_command_lists_cancels_and_says_what_to_do_with_a_run_not_waiting(run_cli):
    created_runs("a", "b")
    run_queue.pause()
    run_queue.enqueue("a")
    run_queue.enqueue("b")
    code, out, _ = run_cli("queue")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["1", "a", "waiting"] and "paused" in out
    code, _, err = run_cli("queue", "cancel", "zzz")
    assert code == 2 and err.count("\n") == 1 and "`llm-studio queue`" in err
    code, _, err = run_cli("queue", "cancel")
    assert code == 2 and "queue cancel RUN" in err
    assert run_cli("queue", "cancel", "a")[0] == 0 and waiting() == ["b"]


def test_a_killed_runner_is_noticed_and_looking_at_the_queue_starts_a_new_one(run_cli, monkeypatch):
    created_runs("a", "b")
    run_queue.add_entry("a")
    run_queue.add_entry("b")
    kill_queue_runner()
    started = record_runner_starts(monkeypatch)
    code, out, err = run_cli("queue")
    assert code == 0 and started == [[sys.executable, "-m", "studio.queue.runner"]]
    assert err == "note: the queue's runner had stopped (killed?) while runs waited: started a new one, they go on\n"
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [["1", "a", "waiting"], ["2", "b", "waiting"]]
    assert run_cli("runs")[2].startswith("note: the queue's runner had stopped")  # `runs` shows queued runs too
    alive = try_lock(queue_dir())  # a runner at work: nothing started, nothing said
    code, _, err = run_cli("queue")
    assert code == 0 and err == "" and len(started) == 2
    os.close(alive)
    run_queue.pause()  # a paused queue waits on purpose
    assert run_cli("queue")[2] == "" and len(started) == 2


# ---- sweeps: planned whole, refused whole -------------------------------------------------------------------------
def test_a_grid_value_holds_a_comma_written_as_backslash_comma_and_a_list_value_keeps_its_escapes():
    """A GRPO sweep over regex rewards: `\\,` is a comma within one value (the values are split on the others), and
    what is left is the list's own text, read by split_list as --set reads it (`\\|` a | within a pattern)."""
    from studio.config import RunConfig
    from studio.queue.sweep import SweepRun, parse_axis, sweep_config

    axis = parse_axis(r"train.rewards=regex:^\d{1\,3}$|length:20, regex:a\|b")
    assert axis.texts == [r"regex:^\d{1,3}$|length:20", r"regex:a\|b"]
    config = sweep_config(RunConfig(), SweepRun("s", {"train.rewards": axis.texts[0]}))
    assert config.train.rewards == [r"regex:^\d{1,3}$", "length:20"]
    config = sweep_config(RunConfig(), SweepRun("s", {"train.rewards": axis.texts[1]}))
    assert config.train.rewards == ["regex:a|b"]


def test_name_labels_are_the_short_key_unless_two_keys_share_it():
    assert name_labels(["train.lr", "model.n_layer"]) == ["lr", "n_layer"]
    assert name_labels(["data.vocab_size", "model.vocab_size"]) == ["data.vocab_size", "model.vocab_size"]


@pytest.mark.parametrize(
    "grid, words",
    [
        (["train.nope=1,2"], "unknown key 'train.nope'"),
        (["train.lr=1e-3,fast"], "train.lr must be a number"),
        (["train.lr"], "write it as section.key=v1,v2"),
        (["model.n_head=3"], "must be divisible by model.n_head"),
        (["train.lr=1e-3", "train.lr=2e-3"], "each key once"),
        (["train.lr=1e-3,1e-3"], "the same run name"),
    ],
)
def test_a_bad_grid_is_one_line_and_nothing_is_created_or_queued(run_cli, code_corpus, grid, words):
    options = [word for option in grid for word in ("--grid", option)]
    code, out, err = run_cli("sweep", "s", *TINY_TRAIN, "--data", code_corpus, *options)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not runs_dir().exists() and not queue_dir().exists()


def test_a_sweep_over_a_taken_run_name_keeps_the_existing_run(run_cli, code_corpus):
    created_runs("s-lr0.01")
    code, _, err = run_cli("sweep", "s", *TINY_TRAIN, "--data", code_corpus, "--grid", "train.lr=1e-3,0.01")
    assert code == 2 and "already exists" in err
    assert run_path("s-lr0.01").exists() and not run_path("s-lr1e-3").exists() and not queue_dir().exists()


# ---- end to end: real trainer processes, no studio -----------------------------------------------------------------
@pytest.fixture
def queue_cleanup(studio_home):
    """Whatever happens in the test, no runner starts anything more and no run outlives it."""
    yield
    run_queue.pause()
    for run_dir in runs_dir().glob("*"):
        if trainer_alive(run_dir):
            stop_run(run_dir, timeout=10)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_and_end(name: str) -> tuple[float, float]:
    """When the run's trainer said it was running, and when it said it had finished."""
    states = [(e["t"], e["state"]) for e in read_events(run_path(name) / "events.jsonl") if e["kind"] == "status"]
    return next(t for t, s in states if s == "running"), next(t for t, s in states if s == "finished")


SHORT = ["--max-steps", "10", "--set", "train.log_interval=5", "--set", "train.eval_interval=10"]


@pytest.mark.slow
def test_a_sweep_of_four_runs_trains_them_one_at_a_time_and_all_finish(run_cli, code_corpus, queue_cleanup):
    grid = ["--grid", "train.lr=1e-3,1e-2", "--grid", "model.n_layer=1,2"]
    code, out, err = run_cli("sweep", "s", *TINY_TRAIN, *SHORT, "--data", code_corpus, *grid)
    assert code == 0, err
    names = ["s-lr1e-3-n_layer1", "s-lr1e-3-n_layer2", "s-lr1e-2-n_layer1", "s-lr1e-2-n_layer2"]
    assert [line.strip() for line in out.splitlines() if line.startswith("  ")] == names
    assert read_sweep("s").runs[1].values == {"train.lr": "1e-3", "model.n_layer": "2"}
    assert sweep_of("s-lr1e-2-n_layer1").name == "s"
    config = summarize(run_path(names[3]))
    assert config.max_steps == 10
    wait_until(lambda: all(summarize(run_path(n)).status == "finished" for n in names), 120, "the four runs")
    spans = [start_and_end(name) for name in names]
    gaps = [following[0] - previous[1] for previous, following in zip(spans, spans[1:])]
    assert all(gap > 0 for gap in gaps), f"runs overlapped: {spans}"
    wait_until(lambda: not is_locked(queue_dir()), 10, "the runner to exit")
    assert waiting() == [] and run_queue.queue_state().empty
    code, out, _ = run_cli("runs", "--sweep", "s")
    rows = [line.split() for line in out.splitlines()[1:]]
    val_losses = [float(row[-2]) for row in rows]
    assert sorted(row[0] for row in rows) == sorted(names) and val_losses == sorted(val_losses)
    assert rows[0][1:3] in (["1e-3", "1"], ["1e-3", "2"], ["1e-2", "1"], ["1e-2", "2"])
    print(f"\nspans {[(round(a, 2), round(b, 2)) for a, b in spans]}; gaps (end event to next start) {gaps} s")


@pytest.mark.slow
def test_pause_holds_the_queue_and_resume_continues_it(run_cli, code_corpus, queue_cleanup):
    assert run_cli("queue", "pause")[0] == 0
    code, out, err = run_cli("train", *TINY_TRAIN, *SHORT, "--data", code_corpus, "--name", "held", "--queue")
    assert code == 0 and "queued (position 1)" in out, err
    time.sleep(1.0)
    assert summarize(run_path("held")).status == "created" and not (run_path("held") / "pid").exists()
    assert "queued" in run_cli("runs")[1]
    assert run_cli("queue", "resume")[0] == 0
    wait_until(lambda: summarize(run_path("held")).status == "finished", 60, "the queued run")
    log = queue_dir() / "runner.log"  # the runner notes the end once the run's last process has let go of its lock
    wait_until(lambda: "run held ended: finished" in log.read_text(), 30, "the runner to note the end")
