"""The event stream: append, read incrementally, skip torn lines, drop superseded history after a resume."""

import json

from studio.run_folder.events import EventWriter, current_history, read_events, read_new_events


def test_incremental_reads_leave_a_torn_last_line_for_later(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.write("train", 1, loss=3.0)
    events, offset = read_new_events(path)
    assert [e["loss"] for e in events] == [3.0]
    with open(path, "a") as file:
        file.write('{"kind": "train", "step": 2, "lo')  # the writer is mid-line
    events, offset2 = read_new_events(path, offset)
    assert events == [] and offset2 == offset
    with open(path, "a") as file:
        file.write('ss": 2.5}\n')
    events, _ = read_new_events(path, offset2)
    assert events[0]["loss"] == 2.5


def test_a_damaged_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "train", "step": 1}\nnot json\n{"kind": "eval", "step": 2}\n')
    assert [e["step"] for e in read_events(path)] == [1, 2]


def test_missing_file_reads_as_empty(tmp_path):
    assert read_new_events(tmp_path / "none.jsonl", 0) == ([], 0)


def test_resume_supersedes_metrics_after_the_checkpoint():
    events = [{"kind": "train", "step": s} for s in (10, 20, 30)]
    events.append({"kind": "status", "step": 20, "state": "resumed"})
    events.append({"kind": "train", "step": 30})
    steps = [(e["kind"], e["step"]) for e in current_history(events)]
    assert steps == [("train", 10), ("train", 20), ("status", 20), ("train", 30)]
    assert json.dumps(events)  # plain data


def test_a_run_summary_reads_only_new_events_and_honours_a_resume(tmp_path):
    from studio.run_folder.history import History

    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    tally = History()
    for step in (10, 20, 30):
        writer.write("train", step, loss=5.0 - step / 10)
    writer.write("eval", 30, val_loss=2.5)
    tally.read(tmp_path)
    assert (tally.step, tally.series["loss"].last(), tally.series["val_loss"].last()) == (30, 2.0, 2.5)
    offset = tally.offset
    writer.write("status", 20, state="resumed")  # back to the step-20 checkpoint: step 30's metrics are gone
    tally.read(tmp_path)
    assert tally.offset > offset and tally.step == 20 and tally.last_state == "resumed"
    assert tally.series["loss"].steps == [10, 20] and tally.series["val_loss"].last() is None
    writer.write("train", 30, loss=1.9)
    tally.read(tmp_path)
    assert (tally.step, tally.series["loss"].last()) == (30, 1.9)


def test_every_objectives_eval_figures_survive_a_read_and_reach_the_charts(tmp_path):
    from studio.objectives import OBJECTIVES
    from studio.run_folder.history import History

    figures = {metric.key: 0.25 for objective in OBJECTIVES.values() for metric in objective.eval_metrics}
    EventWriter(tmp_path / "events.jsonl").write("eval", step=10, **figures)
    (event,) = read_events(tmp_path / "events.jsonl")
    assert {key: event.get(key) for key in figures} == figures  # a DPO run's pair accuracy and margin included
    history = History()
    history.apply(event)
    assert history.series["val_pair_acc"].values == [0.25] and history.series["val_margin"].values == [0.25]
