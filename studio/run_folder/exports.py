"""The Hugging Face folders exported from a run, remembered in its `exports.jsonl` so that the playground can offer
them beside the run (an export is written wherever `--out` says, outside the home). Torch-free: the studio reads it.

A folder is offered while it is still that run's export: it holds a config.json, and the marker the export left in
it (studio.output_folder.MARKER) still names the run. A folder deleted since, or replaced by another run's export,
is passed over; the file itself only grows, one line per export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from studio.atomic_write import append_line, appended_records
from studio.output_folder import MARKER
from studio.run_folder.layout import EXPORTS


@dataclass(frozen=True)
class ExportedFolder:
    path: Path
    step: int  # the checkpoint exported


def record_export(run_dir: Path, out: Path, step: int) -> None:
    """Remember that the run's checkpoint `step` was exported to the Hugging Face folder `out`."""
    record = {"t": round(time.time(), 3), "out": str(out.resolve()), "step": step}
    append_line(run_dir / EXPORTS, json.dumps(record, ensure_ascii=False))


def exported_folders(run_dir: Path) -> list[ExportedFolder]:
    """The run's exports that are still its own, each folder once (as its marker says now), oldest first."""
    folders: dict[Path, ExportedFolder] = {}
    for out in _recorded_paths(run_dir / EXPORTS):
        marker = _marker(out)
        if (out / "config.json").is_file() and marker.get("run") == run_dir.name:
            folders.pop(out, None)  # exported again: it moves to its latest place in the order
            folders[out] = ExportedFolder(out, int(marker.get("step", 0)))
    return list(folders.values())


def _recorded_paths(file: Path) -> list[Path]:
    """The folders an exports file names, in order."""
    return [Path(record["out"]) for record in appended_records(file) if isinstance(record.get("out"), str)]


def _marker(folder: Path) -> dict:
    """The export marker of `folder` ({} when it has none or it is unreadable)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}
