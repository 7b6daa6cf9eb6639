"""Long histories stay fast (issue 20, item 9): series are bounded, a run's fold is kept beside its events and
read back instead of the whole file, and a report of a long run stays small."""

from __future__ import annotations

import math

from studio.run_folder.layout import EVENTS, EVENTS_SUMMARY
from studio.run_folder.status import RunSummaries
from studio.run_folder.watch import RunWatcher
from tests.helpers import T0, write_fixture_run

LONG_RUN_STEPS = 20_000  # train events: many times the points a series holds


def long_run_events(steps: int = LONG_RUN_STEPS) -> list[dict]:
    events = [{"t": T0, "kind": "status", "step": 0, "state": "running", "max_steps": steps}]
    for step in range(1, steps + 1):
        loss = 4.0 * math.exp(-step / 5000) + 1.0
        events.append({"t": T0 + step, "kind": "train", "step": step, "loss": loss, "lr": 1e-3, "tokens_seen": step})
        if step % 100 == 0:
            events.append({"t": T0 + step, "kind": "eval", "step": step, "val_loss": loss + 0.1})
        if step % 10 == 0:
            events.append({"t": T0 + step, "kind": "sample", "step": step, "samples": [{"prompt": "a", "text": "b"}]})
    events.append({"t": T0 + steps, "kind": "status", "step": steps, "state": "finished"})
    return events


def test_a_long_run_holds_bounded_series_with_its_first_and_newest_points(studio_home):
    from studio.run_folder.history import SAMPLES_KEPT, SERIES_POINTS

    watcher = RunWatcher(write_fixture_run("long", events=long_run_events()))
    watcher.poll()
    view = watcher.view()
    loss = view.series["loss"]
    assert len(loss.steps) <= SERIES_POINTS and len(loss.steps) == len(loss.values)
    assert loss.steps[0] == 1 and loss.steps[-1] == LONG_RUN_STEPS and loss.steps == sorted(loss.steps)
    assert view.series["val_loss"].steps[-1] == LONG_RUN_STEPS and len(view.series["val_loss"].steps) == 200
    assert view.tokens_seen == LONG_RUN_STEPS and view.step == LONG_RUN_STEPS
    assert len(view.samples) == SAMPLES_KEPT and view.samples[-1][0] == LONG_RUN_STEPS


def test_the_listing_and_the_dashboard_start_from_the_summary_not_the_whole_file(studio_home):
    run_dir = write_fixture_run("long", events=long_run_events())
    first = RunSummaries().summarize(run_dir)  # reads the whole file once and keeps its fold beside it
    assert (run_dir / EVENTS_SUMMARY).exists()
    # Blank out the middle of the file in place (same inode, same end): a reader that parsed it again would
    # lose those events, one that starts from the summary does not.
    size = (run_dir / EVENTS).stat().st_size
    with open(run_dir / EVENTS, "r+b") as file:
        file.seek(size // 4)
        file.write(b" " * (size // 2))
    again = RunSummaries().summarize(run_dir)
    assert (again.step, again.train_loss, again.val_loss, again.status) == (
        first.step,
        first.train_loss,
        first.val_loss,
        "finished",
    )
    watcher = RunWatcher(run_dir)
    assert watcher.poll()
    middle = [step for step in watcher.view().series["loss"].steps if 0.4 < step / LONG_RUN_STEPS < 0.6]
    assert middle  # the points of the blanked middle are still there


def test_a_summary_of_another_file_is_not_trusted(studio_home):
    run_dir = write_fixture_run("long", events=long_run_events())
    RunSummaries().summarize(run_dir)
    (run_dir / EVENTS).write_text(
        '{"t": 1, "kind": "status", "step": 0, "state": "running"}\n{"t": 2, "kind": "train", "step": 7, "loss": 9.5}\n'
    )  # a new file under the same name
    run = RunSummaries().summarize(run_dir)
    assert (run.step, run.train_loss) == (7, 9.5)


def test_the_report_of_a_long_run_stays_small(studio_home, tmp_path):
    from studio.reports.run_page import write_report

    write_fixture_run("long", events=long_run_events())
    page = write_report(["long"], tmp_path / "report")
    assert page.stat().st_size < 200_000


def test_the_trainer_sums_up_at_a_checkpoint_only_past_a_few_megabytes(studio_home):
    from studio.run_folder.history import update_summary

    run_dir = write_fixture_run("short", events=long_run_events(100))
    update_summary(run_dir, at_least=1 << 20)  # a checkpoint of a short run: not worth a write
    assert not (run_dir / EVENTS_SUMMARY).exists()
    update_summary(run_dir, at_least=(run_dir / EVENTS).stat().st_size)
    assert (run_dir / EVENTS_SUMMARY).exists()
