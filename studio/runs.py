"""Run folders: create, launch, find, follow, stop, delete. Torch-free: the studio and the CLI share it.

A run is a detached process group started here; from then on the folder is the only contract (DESIGN.md).
Status comes from the last `status` event plus whether the launched process is still alive, so a killed
trainer reads as `crashed`, never as `running` forever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from studio.config import RunConfig
from studio.errors import StudioError
from studio.events import read_new_events
from studio.hardware import gpu_count
from studio.paths import child_process_env, runs_dir

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
FINAL_STATES = ("finished", "stopped", "failed")
STOP_FILE = "STOP"  # the trainer polls for these files every step (studio.train.worker)
CHECKPOINT_FILE = "CHECKPOINT"


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # created, starting, running, finished, stopped, failed, crashed
    step: int
    max_steps: int
    train_loss: float | None
    val_loss: float | None
    preset: str
    data: str
    created: float
    updated: float
    error: str | None


# ---- creating and launching ------------------------------------------------------------------------
def run_path(name: str) -> Path:
    return runs_dir() / name


def existing_run(name: str) -> Path:
    path = run_path(name)
    if not (path / "config.toml").exists():
        known = ", ".join(sorted(p.name for p in list_run_dirs())[:8]) or "none yet"
        raise StudioError(f"no run named {name!r} (runs: {known}); see `llm-studio runs`")
    return path


def default_run_name(config: RunConfig) -> str:
    stem = f"{config.preset}-{time.strftime('%m%d-%H%M%S')}"
    name, suffix = stem, 2
    while run_path(name).exists():
        name, suffix = f"{stem}-{suffix}", suffix + 1
    return name


def check_new_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise StudioError(f"run name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (80 at most)")
    if run_path(name).exists():
        raise StudioError(f"run {name!r} already exists; pick another --name, "
                          f"or continue it with `llm-studio resume {name}`")


def create_run(config: RunConfig, name: str) -> Path:
    """A new run folder holding config.toml; an existing run is never touched."""
    check_new_name(name)
    path = run_path(name)
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # created by someone else since the check
        check_new_name(name)
        raise
    config.save(path / "config.toml")
    return path


def launch(run_dir: Path, resume: bool = False) -> int:
    """Start the trainer in its own process group, detached from this process; returns its pid."""
    config = RunConfig.load(run_dir / "config.toml")
    command, env = trainer_command(run_dir, config, resume)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    with open(run_dir / "trainer.log", "ab") as log:
        process = subprocess.Popen(command, env=env, cwd=run_dir, start_new_session=True,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    started = psutil.Process(process.pid).create_time()
    (run_dir / "pid").write_text(f"{process.pid} {started}\n", encoding="utf-8")
    return process.pid


def trainer_command(run_dir: Path, config: RunConfig, resume: bool) -> tuple[list[str], dict[str, str]]:
    """One process: the worker itself. Several: `accelerate launch`, on CPUs through gloo."""
    worker = ["-m", "studio.train.worker", str(run_dir)] + (["--resume"] if resume else [])
    env = child_process_env()
    processes = config.train.num_processes
    if processes == 1:
        return [sys.executable, *worker], env
    if gpu_count() < processes:
        env["ACCELERATE_USE_CPU"] = "1"  # without it, --multi_gpu on a CPU box starts N separate world-size-1 runs
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_processes", str(processes), "--num_machines", "1",
                "--mixed_precision", config.train.mixed_precision, "--dynamo_backend", "no",
                "--main_process_port", str(_free_port())]
    return [*launcher, *worker], env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- checkpoints (the layout only; studio.train.checkpoint reads and writes them) ---------------------
def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None when the run has none yet."""
    pointer = checkpoints_dir(run_dir) / "latest"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = checkpoints_dir(run_dir) / name
    return path if path.is_dir() else None


def find_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint of `step`, or the latest; a StudioError naming what exists when there is none."""
    if step is None:
        found = latest_checkpoint(run_dir)
    else:
        found = checkpoints_dir(run_dir) / checkpoint_name(step)
        found = found if found.is_dir() else None
    if found is None:
        saved = ", ".join(str(s) for s in list_checkpoint_steps(run_dir)) or "none"
        raise StudioError(f"run {run_dir.name} has no checkpoint{'' if step is None else f' at step {step}'} "
                          f"(saved steps: {saved}); train longer or pick a saved step")
    return found


def verify_checkpoint(checkpoint: Path) -> None:
    """Check every safetensors header of a checkpoint (torch-free), so a damaged one is refused up front."""
    from safetensors import safe_open

    for path in [checkpoint / "model.safetensors", *sorted(checkpoint.glob("*.safetensors"))]:
        try:
            with safe_open(str(path), framework="numpy") as file:
                file.keys()
        except Exception as error:  # safetensors raises several types for a damaged file
            reason = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
            raise StudioError(f"checkpoint file {path} is unreadable or corrupt ({reason}); delete the folder "
                              f"{checkpoint.name} to fall back to an earlier checkpoint") from None


def list_checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in checkpoints_dir(run_dir).glob("step-*") if p.is_dir())



# ---- status ------------------------------------------------------------------------------------------
def trainer_pid(run_dir: Path) -> int | None:
    """The launched process's pid while it is alive (the same pid and start time as recorded), else None."""
    try:
        pid_text, started = (run_dir / "pid").read_text(encoding="utf-8").split()
        process = psutil.Process(int(pid_text))
        if abs(process.create_time() - float(started)) < 1.0 and process.status() != psutil.STATUS_ZOMBIE:
            return process.pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def derive_status(last_state: str | None, alive: bool, launched: bool) -> str:
    """A run's status from its last status event's state and whether its process lives."""
    if alive:
        return "running" if last_state in ("running", "resumed") else "starting"
    if last_state in FINAL_STATES:
        return last_state
    return "crashed" if launched else "created"


@dataclass
class EventTally:
    """What a run summary needs from events.jsonl, folded in as the file grows: the studio refreshes its runs
    table every few seconds, and re-reading every run's whole history each time would grow with the runs."""

    offset: int = 0
    step: int = 0
    state: str | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # the newest train, eval and error events

    def read(self, path: Path) -> None:
        events, self.offset = read_new_events(path, self.offset)
        for event in events:
            self.fold(event)

    def fold(self, event: dict[str, Any]) -> None:
        kind, step = event.get("kind"), event.get("step", 0)
        if kind == "status":
            self.state = event.get("state")
            if self.state == "resumed":  # the interrupted attempt's metrics after the checkpoint are superseded:
                # blank until the resumed attempt logs again (seconds), rather than keeping every event
                self.step = step
                self.last = {k: e for k, e in self.last.items() if e.get("step", 0) <= step and k != "error"}
        if kind in ("train", "eval", "error"):
            self.last[kind] = event
        self.step = max(self.step, step)


_tallies: dict[tuple[Path, int], EventTally] = {}  # by folder and events file inode: a run made anew starts over


def summarize(run_dir: Path) -> RunInfo:
    config = RunConfig.load(run_dir / "config.toml")
    events_file = run_dir / "events.jsonl"
    try:
        key = (run_dir.resolve(), events_file.stat().st_ino)
    except FileNotFoundError:
        key = (run_dir.resolve(), -1)
    tally = _tallies.setdefault(key, EventTally())
    tally.read(events_file)
    status = derive_status(tally.state, trainer_pid(run_dir) is not None, (run_dir / "pid").exists())
    train, val, error = (tally.last.get(kind) for kind in ("train", "eval", "error"))
    return RunInfo(
        name=run_dir.name, path=run_dir, status=status, step=tally.step,
        max_steps=config.train.max_steps,
        train_loss=train["loss"] if train else None,
        val_loss=val["val_loss"] if val else None,
        preset=config.preset, data=config.data.dataset or config.data.source,
        created=(run_dir / "config.toml").stat().st_mtime,
        updated=events_file.stat().st_mtime if events_file.exists() else (run_dir / "config.toml").stat().st_mtime,
        error=error["message"] if error and status == "failed" else None,
    )


def list_run_dirs() -> list[Path]:
    root = runs_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.toml").exists())


def list_runs() -> list[RunInfo]:
    return sorted((summarize(p) for p in list_run_dirs()), key=lambda run: run.created)


# ---- control -----------------------------------------------------------------------------------------
def request_checkpoint(run_dir: Path) -> None:
    (run_dir / CHECKPOINT_FILE).touch()


def stop_run(run_dir: Path, timeout: float = 120.0) -> str:
    """Ask the trainer to checkpoint and exit (every rank); signal it if it does not within `timeout`."""
    pid = trainer_pid(run_dir)
    if pid is None:
        return summarize(run_dir).status
    (run_dir / STOP_FILE).touch()
    if not wait_for_exit(run_dir, timeout):
        os.killpg(pid, signal.SIGTERM)  # the worker's handler checkpoints too; a launcher forwards it
        if not wait_for_exit(run_dir, 30.0):
            os.killpg(pid, signal.SIGKILL)
            wait_for_exit(run_dir, 5.0)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    return summarize(run_dir).status


def wait_for_exit(run_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while trainer_pid(run_dir) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def delete_run(run_dir: Path) -> None:
    if trainer_pid(run_dir) is not None:
        raise StudioError(f"run {run_dir.name} is still training; stop it first with `llm-studio stop {run_dir.name}`")
    shutil.rmtree(run_dir)
    for key in [key for key in _tallies if key[0] == run_dir.resolve()]:
        del _tallies[key]
