"""Where llm-studio keeps things: `$LLM_STUDIO_HOME` (default `~/.llm-studio`) with `datasets/` and `runs/`."""

import os
from pathlib import Path


def studio_home() -> Path:
    return Path(os.environ.get("LLM_STUDIO_HOME") or Path.home() / ".llm-studio").expanduser()


def datasets_dir() -> Path:
    return studio_home() / "datasets"


def runs_dir() -> Path:
    return studio_home() / "runs"


def child_process_env() -> dict[str, str]:
    """The environment for a Python child process (trainer, generation worker, export) that must import this
    same `studio` package, also when it runs from a checkout rather than an install; output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env
