"""Acting on run folders: create one, launch its trainer, ask it to checkpoint or stop, delete it. Torch-free.

A run is a detached process group started here; from then on the folder is the only contract
(docs/ARCHITECTURE.md). The studio and the CLI both act through these functions.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from studio.atomic_write import write_atomically
from studio.config import RunConfig, TrainConfig
from studio.errors import StudioError
from studio.hardware import gpu_count
from studio.paths import child_process_env
from studio.run_folder.layout import (
    CHECKPOINT_REQUEST,
    CONFIG,
    PID,
    STOP,
    TRAINER_LOG,
    check_new_name,
    checkpoint_step,
    read_config,
    run_path,
)
from studio.run_folder.lock import INHERITED_LOCK, lock_holders, start_holding, take_lock, try_lock
from studio.run_folder.status import process_start, summarize, trainer_alive, trainer_pid


# ---- creating and launching ------------------------------------------------------------------------
def create_run(config: RunConfig, name: str) -> Path:
    """A new run folder holding config.toml; an existing run is never touched."""
    check_new_name(name)
    path = run_path(name)
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # created by someone else since the check
        check_new_name(name)
        raise
    config.save(path / CONFIG)
    return path


def launch(run_dir: Path, resume_from: Path | None = None, max_steps: int | None = None) -> int:
    """Start the trainer in its own process group, detached from this process; returns its pid. The run's lock
    is taken first and handed to the trainer (studio.run_folder.lock): a run already training is refused.
    `max_steps` (resume --max-steps, checked by the caller) is written into config.toml under the lock, so no
    trainer ever runs while its config changes, and two resumes never rewrite it at once."""
    lock = take_lock(run_dir)
    try:
        config = read_config(run_dir)
        if max_steps is not None:
            config.train.max_steps = max_steps
            config.save(run_dir / CONFIG)
        command, env = trainer_command(run_dir, config, resume_from)
        (run_dir / STOP).unlink(missing_ok=True)
        env[INHERITED_LOCK] = str(lock)
        process = start_holding(command, env, run_dir, run_dir / TRAINER_LOG, lock)
    finally:
        os.close(lock)  # the trainer holds it now
    write_atomically(run_dir / PID, f"{process.pid} {process_start(process.pid)}\n")
    return process.pid


def trainer_command(run_dir: Path, config: RunConfig, resume_from: Path | None) -> tuple[list[str], dict[str, str]]:
    """One process: the worker itself. Several, or several machines: `accelerate launch`, on CPUs through gloo."""
    resume = ["--resume", str(checkpoint_step(resume_from))] if resume_from else []
    worker = ["-m", "studio.train", str(run_dir), *resume]
    env = child_process_env()
    train = config.train
    if train.world_size == 1:
        return [sys.executable, *worker], env
    if gpu_count() < train.num_processes:
        env["ACCELERATE_USE_CPU"] = "1"  # without it, --multi_gpu on a CPU box starts N separate world-size-1 runs
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(train.world_size),  # Accelerate counts the processes of every machine
        "--mixed_precision",  # only quiets the launcher: each worker gives Accelerator its precision, which wins
        "no" if train.mixed_precision == "auto" else train.mixed_precision,
        "--dynamo_backend",
        "no",
        *_machines(train),
    ]
    return [*launcher, *worker], env


def _machines(train: TrainConfig) -> list[str]:
    """Where the processes meet: a free local port on one machine; the main machine's address and port on
    several, each machine giving its rank."""
    if train.num_machines == 1:
        return ["--num_machines", "1", "--main_process_port", str(_free_port())]
    return [
        "--num_machines",
        str(train.num_machines),
        "--machine_rank",
        str(train.machine_rank),
        "--main_process_ip",
        train.main_address,
        "--main_process_port",
        str(train.main_port),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- requests, stop, delete -----------------------------------------------------------------------------------------
def request_checkpoint(run_dir: Path) -> None:
    (run_dir / CHECKPOINT_REQUEST).touch()


def stop_run(run_dir: Path, timeout: float = 120.0) -> str:
    """Ask the trainer to checkpoint and exit (every rank); signal it if it does not within `timeout`. The
    trainer is the recorded process or whoever holds the run's lock, also when the pid record is stale."""
    if not trainer_alive(run_dir):
        return summarize(run_dir).status
    (run_dir / STOP).touch()
    if not wait_for_exit(run_dir, timeout):
        _signal_run(run_dir, signal.SIGTERM)  # the worker's handler checkpoints too; a launcher forwards it
        if not wait_for_exit(run_dir, 30.0):
            _signal_run(run_dir, signal.SIGKILL)
            wait_for_exit(run_dir, 5.0)
    (run_dir / STOP).unlink(missing_ok=True)
    return summarize(run_dir).status


def _signal_run(run_dir: Path, signum: int) -> None:
    """Signal the process groups of the run: the recorded process's and those of the processes holding its lock
    (the leader may be gone while a worker still holds the lock, or the record be stale)."""
    groups = set()
    for pid in filter(None, [trainer_pid(run_dir), *lock_holders(run_dir)]):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            continue


def wait_for_exit(run_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while trainer_alive(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def delete_run(run_dir: Path) -> None:
    """Remove a run that is not training; its lock is held meanwhile, so nothing launches into it."""
    lock = try_lock(run_dir) if not trainer_alive(run_dir) else None
    if lock is None:
        raise StudioError(f"run {run_dir.name} is still training; stop it first with `llm-studio stop {run_dir.name}`")
    try:
        shutil.rmtree(run_dir)
    finally:
        os.close(lock)
