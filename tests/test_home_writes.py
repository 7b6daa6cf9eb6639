"""Every file of the home is written whole or not at all, and a run's config changes only under its lock: two
resumes at once, or a reader while a file is rewritten, never see an empty config.toml, and an empty or cut one
reads as damaged, never as the defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from studio.config import RunConfig
from studio.paths import child_process_env
from studio.run_folder.layout import read_config, run_path
from studio.run_folder.lock import try_lock
from studio.run_folder.status import RunInfo, summarize
from studio.runs.control import wait_for_exit
from tests.helpers import TINY_TRAIN, write_fixture_run


def test_a_reader_never_sees_config_toml_empty_or_half_written_while_it_is_rewritten(tmp_path):
    path = tmp_path / "config.toml"
    config = RunConfig()
    config.data.dataset, config.train.max_steps = "corpus", 20
    config.save(path)
    rewriting = threading.Event()
    rewriting.set()

    def rewrite() -> None:
        while rewriting.is_set():
            config.save(path)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [RunConfig.load(path) for _ in range(500)]
    finally:
        rewriting.clear()
        writer.join()
    assert all(read == config for read in seen)


@pytest.mark.parametrize(
    "content",
    ["", 'preset = "tiny"\n\n[model]\nn_layer = 2\n\n[data]\ndataset = "corpus"\n'],  # emptied; cut short
    ids=["empty", "cut-short"],
)
def test_an_empty_or_cut_config_is_damaged_never_the_defaults(studio_home, run_cli, content):
    run_dir = write_fixture_run("cut")
    (run_dir / "config.toml").write_text(content, encoding="utf-8")
    assert summarize(run_dir).status == "damaged"
    code, _, err = run_cli("resume", "cut", "--max-steps", 200)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "damaged" in err, err
    assert (run_dir / "config.toml").read_text(encoding="utf-8") == content  # nothing rewritten from defaults


def test_resume_changes_the_config_only_under_the_runs_lock(studio_home, run_cli, monkeypatch):
    """A trainer started since resume looked at the run's status (stale here) holds the lock: the config it
    trains with stays as it is, and resume says the run is training."""
    run_dir = write_fixture_run("busy")
    before = (run_dir / "config.toml").read_text(encoding="utf-8")
    looked_stopped = RunInfo(**{**summarize(run_dir).__dict__, "status": "stopped"})
    monkeypatch.setattr("studio.runs.prepare.summarize", lambda _: looked_stopped)
    monkeypatch.setattr("studio.runs.prepare.usable_checkpoint", lambda *_, **__: (run_dir / "step-0000010", None))
    lock = try_lock(run_dir)  # as the other trainer holds it
    try:
        code, _, err = run_cli("resume", "busy", "--max-steps", 500)
    finally:
        os.close(lock)
    assert code == 2 and "already training" in err
    assert (run_dir / "config.toml").read_text(encoding="utf-8") == before


@pytest.mark.slow
def test_resume_race_keeps_the_config_whole_and_starts_one_trainer(studio_home, code_corpus, run_cli):
    """The issue's race: `resume R --max-steps N --detach` twice at once, then the config read back, round after
    round. A few rounds here; `RESUME_RACE_ROUNDS=30 pytest tests/test_home_writes.py -k race` for the issue's 30."""
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "race", "--max-steps", 4)
    assert code == 0, err
    run_dir = run_path("race")
    trained = read_config(run_dir)
    command = [sys.executable, "-m", "studio.cli", "resume", "race", "--detach", "--max-steps"]
    for max_steps in range(6, 6 + 2 * int(os.environ.get("RESUME_RACE_ROUNDS", "3")), 2):
        resumes = [subprocess.Popen([*command, str(max_steps)], env=child_process_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
        outcomes = sorted((process.wait(timeout=120), process.stderr.read()) for process in resumes)
        assert [code for code, _ in outcomes] == [0, 2], (max_steps, outcomes)
        assert wait_for_exit(run_dir, timeout=120)
        config = read_config(run_dir)
        assert config.train.max_steps == max_steps and config.data == trained.data, max_steps
        assert summarize(run_dir).step == max_steps


def test_the_home_and_everything_in_it_are_readable_by_their_owner_only(studio_home, run_cli, tmp_path):
    """Issue 25: a home left open by an older version is closed, and what prepare, a run's creation and the queue
    write in it (folders, meta.json, token files, config.toml, entries) is 0700 / 0600, whatever the umask was."""
    import os
    import stat

    from studio.presets import load_preset
    from studio.runs.prepare import prepare_run

    os.umask(0o022)
    studio_home.mkdir(mode=0o755)
    corpus = tmp_path / "notes.txt"
    corpus.write_text("private notes of a support desk\n" * 200, encoding="utf-8")
    assert run_cli("prepare", corpus, "--tokenizer", "char", "--name", "notes")[0] == 0
    config = load_preset("tiny")
    config.data.source = "notes"
    prepare_run(config, "private-run")
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in [studio_home, *studio_home.rglob("*")]}
    assert any(path.name == "config.toml" for path in modes) and any(path.name == "train.bin" for path in modes)
    assert {str(path): mode for path, mode in modes.items() if mode != (0o700 if path.is_dir() else 0o600)} == {}
