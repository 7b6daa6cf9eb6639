"""Folders the studio writes for the user outside its home (`export --out`, `report --out`): never a file of the
user's lost, never a half-written folder in place.

A folder is written only when it is new, empty, or holds nothing but what the studio wrote there before: a marker
file lists what that was. The new contents are built in a temporary folder beside the target, and only when they
are complete (an export verified) does that folder replace the target whole; a write that fails or is killed
leaves the target as it was. What a killed write leaves beside the target (its temporary folder
`.NAME.partial-PID`, or the earlier contents `.NAME.partial-PID-earlier` it was replacing) is removed by the
next write to the same place, once the process that made it is gone.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from studio.errors import StudioError

MARKER = ".llm-studio-export.json"  # what the studio wrote into a folder ("export": the first writer, kept)


def check_replaceable(out: Path) -> None:
    """Refuse `out` unless it is new, an empty folder, or holds only the files the studio wrote there."""
    if not out.exists():
        return
    if not out.is_dir():
        raise StudioError(f"--out {out} is a file; give a folder")
    entries = {entry.name for entry in out.iterdir()}
    if not entries:
        return
    if MARKER not in entries:
        raise StudioError(
            f"--out {out} is not empty and holds no earlier export or report; give an empty or new folder"
        )
    try:
        written = set(json.loads((out / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StudioError(
            f"--out {out}: the record {MARKER} of what the studio wrote is damaged; remove the folder"
        ) from None
    others = sorted(entries - written - {MARKER})
    if others:
        raise StudioError(
            f"--out {out} holds files the studio did not write ({', '.join(others[:3])}); "
            "give an empty or new folder, or move them away"
        )


@contextmanager
def replaced_whole(out: Path, record: dict[str, Any]) -> Iterator[Path]:
    """A new folder beside `out` to write into; when the block ends without an error, the marker (the files it
    holds, and `record`) is added and the folder replaces `out`. `out` must have passed check_replaceable."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(out)
    staging = Path(f"{_staging_prefix(out)}{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a killed process's, whose id this one was given since
    staging.mkdir()
    try:
        yield staging
        files = sorted(entry.name for entry in staging.iterdir())
        (staging / MARKER).write_text(json.dumps({**record, "files": files}, indent=1), encoding="utf-8")
        check_replaceable(out)  # again: the user may have put a file there meanwhile
        _replace(out, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(out: Path, staging: Path) -> None:
    """Two renames on one file system: `out` is the earlier folder or the new one, never a mix of both."""
    earlier = staging.with_name(staging.name + "-earlier")
    if out.exists():
        os.replace(out, earlier)
    os.replace(staging, out)
    shutil.rmtree(earlier, ignore_errors=True)


def _staging_prefix(out: Path) -> Path:
    """The temporary folders of writes to `out` are this, followed by the writing process's id."""
    return out.parent / f".{out.name}.partial-"


def remove_stale_leftovers(out: Path) -> None:
    """Remove what writes to `out` killed midway left beside it: a temporary folder or the earlier contents it
    was replacing, named after a process that is gone. A live process's (a write to the same place under way) and
    anything else in the folder are left alone."""
    prefix = _staging_prefix(out)
    for entry in prefix.parent.glob(glob.escape(prefix.name) + "*"):
        written_by = re.fullmatch(r"(\d+)(-earlier)?", entry.name[len(prefix.name) :])
        if written_by and entry.is_dir() and not entry.is_symlink() and not psutil.pid_exists(int(written_by[1])):
            shutil.rmtree(entry, ignore_errors=True)
