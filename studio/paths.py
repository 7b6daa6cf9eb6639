"""Where llm-studio keeps things: `$LLM_STUDIO_HOME` (default `~/.llm-studio`) with `datasets/` and `runs/`."""

import os
from pathlib import Path


def studio_home() -> Path:
    return Path(os.environ.get("LLM_STUDIO_HOME") or Path.home() / ".llm-studio").expanduser()


def datasets_dir() -> Path:
    return studio_home() / "datasets"


def runs_dir() -> Path:
    return studio_home() / "runs"
