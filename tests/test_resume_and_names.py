"""Issue 20, item 10: `--name ''` is refused, and a resume with no steps left is refused with the step the run
is at (one line, before any trainer starts)."""

from __future__ import annotations

from studio.run_folder.layout import EVENTS
from tests.helpers import TINY_TRAIN


def test_an_empty_name_is_refused(run_cli, code_corpus, studio_home):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--max-steps", "5", "--name", "")
    assert code == 2 and "run name '' is not allowed" in err and "Traceback" not in err
    assert not (studio_home / "runs").exists() or not any((studio_home / "runs").iterdir())


def test_a_resume_without_steps_left_is_refused_with_the_step(run_cli, code_corpus, studio_home):
    code, _, _ = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--max-steps", "20", "--name", "done")
    assert code == 0
    events = (studio_home / "runs" / "done" / EVENTS).read_bytes()
    code, _, err = run_cli("resume", "done")
    assert code == 2 and "run done has reached its 20 steps" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("resume", "done", "--max-steps", "10")
    assert code == 2 and "run done is at step 20" in err and len(err.strip().splitlines()) == 1
    assert (studio_home / "runs" / "done" / EVENTS).read_bytes() == events  # no trainer started
