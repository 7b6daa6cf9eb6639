"""RunWatcher on hand-written run folders (tests.helpers.write_fixture_run): incremental reads, a torn last line,
a resume, the log tail."""

from __future__ import annotations

import json
import math

from studio.run_folder.watch import RunWatcher
from tests.helpers import T0, fixture_events, write_events, write_fixture_run


def test_a_finished_run_reads_whole(studio_home):
    watcher = RunWatcher(write_fixture_run("done"))
    assert watcher.poll()
    view = watcher.view()
    assert view.status == "finished" and view.step == 100 and view.max_steps == 100
    assert view.series["loss"].steps == list(range(5, 101, 5))
    assert view.series["val_loss"].steps == [0, 20, 40, 60, 80, 100]
    assert view.series["tokens_seen"].last() == 100 * 256 and view.tokens_seen == 25600
    assert [step for step, _ in view.samples] == [0, 50, 100]
    assert view.error is None and view.eta_seconds is None  # finished: nothing left to estimate
    assert view.log_lines == ["step 100 loss 1.2"]
    assert not watcher.poll()  # nothing new


def test_polls_read_only_new_bytes_and_leave_a_torn_line_for_later(studio_home):
    run_dir = write_fixture_run("growing", events=[{"t": T0, "kind": "status", "step": 0, "state": "running"}], log="")
    watcher = RunWatcher(run_dir)
    watcher.poll()
    with open(run_dir / "events.jsonl", "a") as file:
        file.write(json.dumps({"kind": "train", "step": 5, "loss": 3.0}) + "\n")
        file.write('{"kind": "train", "step": 10, "lo')  # the trainer is mid-line
    with open(run_dir / "trainer.log", "a") as file:
        file.write("first line\nsecond li")
    assert watcher.poll()
    assert watcher.series["loss"].steps == [5]
    assert list(watcher.log_lines) == ["first line"]
    with open(run_dir / "events.jsonl", "a") as file:
        file.write('ss": 2.5}\n')
    with open(run_dir / "trainer.log", "a") as file:
        file.write("ne\n")
    assert watcher.poll()
    assert watcher.series["loss"].values == [3.0, 2.5]
    assert list(watcher.log_lines) == ["first line", "second line"]


def test_a_resume_drops_the_superseded_points(studio_home):
    run_dir = write_fixture_run("resumed", events=fixture_events()[:-1], log="")  # no final status: crashed
    watcher = RunWatcher(run_dir)
    watcher.poll()
    assert watcher.series["loss"].steps[-1] == 100
    write_events(
        run_dir,
        [
            {"t": T0 + 200, "kind": "status", "step": 60, "state": "resumed"},
            {"t": T0 + 201, "kind": "status", "step": 60, "state": "running", "max_steps": 150},
            {"t": T0 + 205, "kind": "train", "step": 65, "loss": 1.5},
        ],
    )
    watcher.poll()
    assert watcher.series["loss"].steps == list(range(5, 61, 5)) + [65]
    assert watcher.series["val_loss"].steps == [0, 20, 40, 60]
    assert [step for step, _ in watcher.samples] == [0, 50]
    assert watcher.step == 65 and watcher.max_steps == 150


def test_a_failed_run_keeps_its_error(studio_home):
    watcher = RunWatcher(write_fixture_run("failed", events=fixture_events(failed_at=40)))
    watcher.poll()
    assert watcher.status == "failed"
    assert watcher.view().error == "out of memory at step 40: lower train.batch_size"


def test_a_run_whose_process_died_reads_as_crashed(studio_home):
    run_dir = write_fixture_run("crashed", events=fixture_events()[:5])
    (run_dir / "pid").write_text("999999999 1.0\n")  # a pid that is not alive
    watcher = RunWatcher(run_dir)
    watcher.poll()
    assert watcher.status == "crashed"


def test_eta_comes_from_the_recent_step_rate(studio_home):
    run_dir = write_fixture_run("eta", events=fixture_events()[:8])
    watcher = RunWatcher(run_dir)
    watcher.poll()
    watcher.status = "running"  # as if its process were alive
    # one second per step in the fixture, at step 20 of 100
    assert watcher.step == 20 and math.isclose(watcher.eta_seconds(), 80.0)
