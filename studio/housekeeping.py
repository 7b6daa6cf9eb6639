"""Leftovers of interrupted work, removed the next time the CLI or the studio opens the home.

A prepare builds its dataset in `datasets/.tmp-<name>-<pid>/` and a trainer its checkpoint in
`runs/<run>/checkpoints/.tmp-step-N/`; both rename the folder into place when it is complete. A process killed
meanwhile (or a full disk) leaves the folder behind. It is removed once nothing can still be writing it: the
preparing process is gone, or the run is not training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from studio.paths import TEMPORARY_PREFIX, datasets_dir
from studio.run_folder.layout import checkpoints_dir, list_run_dirs
from studio.run_folder.status import trainer_alive


def remove_debris() -> list[Path]:
    """Remove the temporary folders no process is writing; returns them."""
    return [path for path in _abandoned() if _remove(path)]


def _abandoned() -> list[Path]:
    found = []
    for folder in sorted(datasets_dir().glob(f"{TEMPORARY_PREFIX}*")):
        pid = folder.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            found.append(folder)
    for run_dir in list_run_dirs():
        temporary = sorted(checkpoints_dir(run_dir).glob(f"{TEMPORARY_PREFIX}*"))
        if temporary and not trainer_alive(run_dir):
            found += temporary
    return found


def _remove(path: Path) -> bool:
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
