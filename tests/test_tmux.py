"""The real `llm-studio` in a real terminal (tmux): follow a live run, kill the studio, start it again, re-attach.

The run is started headless (`llm-studio train --detach`); the studio is driven with send-keys and read with
capture-pane. Killing the studio must not touch the run (a detached process group), and the studio started
again shows it running with its history.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from studio.run_folder.layout import run_path
from studio.run_folder.status import trainer_pid
from studio.runs.control import stop_run
from tests.helpers import TINY_TRAIN

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOSS_SHOWN = re.compile(r"train loss \d+\.\d{4}")
BRAILLE = re.compile("[\u2801-\u28ff]")

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)"),
    pytest.mark.slow,
]


class Terminal:
    """One tmux server of our own (-L), so other tmux users on the machine are never touched."""

    def __init__(self, env: dict[str, str]):
        self.socket = f"llm-studio-test-{uuid.uuid4().hex[:8]}"
        self.env = env

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def start_studio(self) -> None:
        # COLUMNS / LINES (pytest sets them) would override the terminal's real size
        command = " ".join(
            ["env", "-u", "COLUMNS", "-u", "LINES"]
            + [f"{key}={self.env[key]}" for key in ("LLM_STUDIO_HOME", "PYTHONPATH")]
            + [sys.executable, "-m", "studio.cli"]
        )
        self.tmux("new-session", "-d", "-s", "studio", "-x", "160", "-y", "48", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "studio")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "studio", *keys)

    def wait_for(self, condition, what: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def detached_run(studio_home, code_corpus):
    env = dict(
        os.environ,
        LLM_STUDIO_HOME=str(studio_home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "studio.cli",
            "train",
            *TINY_TRAIN,
            "--data",
            str(code_corpus),
            "--name",
            "live",
            "--max-steps",
            "100000",
            "--detach",
            "--set",
            "train.sample_interval=100000",
        ],  # one sample, at step 0: shown only from history
        env=env,
        check=True,
        capture_output=True,
    )
    yield env
    stop_run(run_path("live"), timeout=30)


def open_live_run(terminal: Terminal) -> str:
    """The studio opens on the dashboard of the one live run by itself."""
    return terminal.wait_for(
        lambda screen: (
            "run: live · running" in screen and LOSS_SHOWN.search(screen) and len(BRAILLE.findall(screen)) > 10
        ),
        "the run's dashboard with its loss",
        timeout=90,
    )


def test_the_studio_follows_a_run_dies_and_reattaches(detached_run):
    terminal = Terminal(detached_run)
    try:
        terminal.start_studio()
        first = open_live_run(terminal)
        first_step = int(re.search(r"step (\d+)/100000", first).group(1))
        terminal.kill()  # SIGHUP to the studio; the run is its own process group
        time.sleep(1.0)
        assert trainer_pid(run_path("live")) is not None, "killing the studio must not touch the run"
        terminal = Terminal(detached_run)
        terminal.start_studio()
        again = open_live_run(terminal)
        assert int(re.search(r"step (\d+)/100000", again).group(1)) >= first_step
        assert "@0" in again  # the history from the start: the samples of step 0
    finally:
        terminal.kill()
