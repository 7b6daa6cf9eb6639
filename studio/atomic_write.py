"""Every file of the studio's home is written whole or not at all: `write_atomically` is the one way to write one.

A plain write truncates the file first, so a reader at that moment (another CLI, the studio, a trainer starting)
sees it empty or half-written, and an empty config.toml would read as every default. Here the content goes to a
temporary file in the same folder, is flushed to disk, and replaces the file in one rename: a reader sees the old
file or the new one. Readers still treat an empty or partial file as damaged (a file written by hand, or by an
older version), never as defaults.

Files that only grow by rows (the playground's preferences, the evaluations kept for the leaderboard) are appended
to instead (`append_line`): one write of the whole line to a file opened for appending, under an exclusive lock on
it, so the line lands whole at the end even when two processes append at once (a rewrite through
`write_atomically` would lose the other's line), and the look at the file's last byte (a line a crash cut short)
never sees another process's line half written.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path


def write_atomically(path: Path, content: str | bytes, exclusive: bool = False) -> None:
    """Write `content` (text as UTF-8) to `path` through a temporary file and a rename. `exclusive`: the file must
    not exist yet (FileExistsError otherwise, and nothing is written), for names that two processes may race for."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # a dot: no reader's glob matches it
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if exclusive:
            os.link(temporary, path)  # unlike a rename, fails when `path` exists
        else:
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_path(path.parent)  # the rename itself


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (the renames in it), to disk; on POSIX both through a read-only
    descriptor."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append one line (its newline added here) to `path`, creating it and its folder, in one locked write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = line + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        if os.fstat(fd).st_size and _last_byte(path) != b"\n":  # a line cut short by a crash stays a line apart
            data = "\n" + data
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def appended_records(path: Path) -> list[dict]:
    """The JSON objects of a file `append_line` grows, in order ([] when there is none): a line a crash cut short,
    or one that is not an object, is passed over."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1)
