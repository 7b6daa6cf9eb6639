"""--report-to: trackers get a copy of what events.jsonl holds (Accelerate's tracker integration)."""

from __future__ import annotations

import pytest

from studio.run_folder.events import read_events
from studio.run_folder.layout import run_path
from tests.helpers import TINY_TRAIN


@pytest.mark.slow
def test_tensorboard_holds_the_same_loss_points_as_the_events(run_cli, code_corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "tb", "--max-steps", 20,
                             "--report-to", "tensorboard")  # fmt: skip
    assert code == 0, err
    logs = run_path("tb") / "trackers"
    assert f"tensorboard --logdir {logs}" in out
    events = read_events(run_path("tb") / "events.jsonl")
    [folder] = [path for path in logs.iterdir() if path.is_dir()]
    board = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    for kind, name in (("train", "loss"), ("eval", "val_loss")):
        logged = [(e["step"], e[name]) for e in events if e["kind"] == kind]
        board_points = [(point.step, point.value) for point in board.Scalars(f"{kind}/{name}")]
        assert [step for step, _ in board_points] == [step for step, _ in logged] and len(logged) >= 2
        assert [value for _, value in board_points] == pytest.approx([value for _, value in logged], rel=1e-6)
    assert "samples/text_summary" in board.Tags()["tensors"]


def test_an_unknown_or_missing_tracker_is_one_line(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--report-to", "tensorbored")
    assert code == 2 and err.count("\n") == 1 and "'tensorbored' is not a tracker" in err
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--report-to", "trackio")
    assert code == 2 and err.count("\n") == 1 and "trackio is not installed; pip install trackio" in err
