"""Where llm-studio keeps things: `$LLM_STUDIO_HOME` (default `~/.llm-studio`) with `datasets/`, `runs/`, `queue/`
(runs waiting their turn), `sweeps/` (which runs a sweep queued), `hf-tokenizers/` (the tokenizers transformers
builds from Hugging Face folders) and `preferences/` (the playground's judged answers, studio.playground_preferences).

Runs and datasets are named, and a name is only ever a name: `check_name` is the one rule, so no name can
reach outside its folder (no `/`, no leading dot, no `..`).

What the studio keeps is its owner's alone (runs hold the training data's text in samples, datasets hold it whole):
`studio_home`, which every path of the home goes through, sets the process's umask to 077 (`keep_private`), so every
folder the studio or its child processes (trainers, the queue runner, inspections) create is 0700 and every file
0600, whichever function creates it; a home that an older version left open to others is closed (made 0700).
"""

import os
import re
import stat
from pathlib import Path

from studio.errors import StudioError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TEMPORARY_PREFIX = ".tmp-"  # a folder being built, renamed into place when complete (never a valid name)
PRIVATE_UMASK = 0o077  # folders 0700, files 0600: readable by their owner only


def studio_home() -> Path:
    home = Path(os.environ.get("LLM_STUDIO_HOME") or Path.home() / ".llm-studio").expanduser()
    if home.exists() and not home.is_dir():
        raise StudioError(f"the studio's home {home} is a file, not a folder; move it, or set LLM_STUDIO_HOME")
    keep_private(home)
    return home


def keep_private(home: Path) -> None:
    """The one access rule: whatever this process (and its children) creates from now on is its owner's alone, and
    the home, when it is there and ours, is closed to others."""
    os.umask(PRIVATE_UMASK)
    try:
        status = home.stat()  # once: every path of the home comes through here
    except FileNotFoundError:
        return
    if stat.S_ISDIR(status.st_mode) and status.st_mode & 0o077 and status.st_uid == os.getuid():
        home.chmod(0o700)


def datasets_dir() -> Path:
    return studio_home() / "datasets"


def runs_dir() -> Path:
    return studio_home() / "runs"


def queue_dir() -> Path:
    return studio_home() / "queue"


def sweeps_dir() -> Path:
    return studio_home() / "sweeps"


def hf_tokenizers_dir() -> Path:
    """The tokenizers transformers builds from Hugging Face folders (studio.hf.folder.folder_tokenizer)."""
    return studio_home() / "hf-tokenizers"


def is_name(text: str) -> bool:
    return bool(NAME.fullmatch(text))


def check_name(name: str, what: str) -> str:
    """`name` when it is a valid name of a run or dataset (`what`), else a StudioError that says the rule."""
    if not is_name(name):
        raise StudioError(
            f"{what} name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (100 at most), "
            "starting with a letter or digit"
        )
    return name


def child_process_env() -> dict[str, str]:
    """The environment for a Python child process (trainer, generation worker, export) that must import this
    same `studio` package, also when it runs from a checkout rather than an install; output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env
