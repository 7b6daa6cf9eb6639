"""Every file of the studio's home is written whole or not at all: `write_atomically` is the one way to write one.

A plain write truncates the file first, so a reader at that moment (another CLI, the studio, a trainer starting)
sees it empty or half-written, and an empty config.toml would read as every default. Here the content goes to a
temporary file in the same folder, is flushed to disk, and replaces the file in one rename: a reader sees the old
file or the new one. Readers still treat an empty or partial file as damaged (a file written by hand, or by an
older version), never as defaults.
"""

from __future__ import annotations

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
