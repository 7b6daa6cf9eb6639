"""Models and datasets by their Hugging Face name (`ORG/NAME`), from the local hub cache (`HF_HOME`,
`HF_HUB_CACHE`), found by huggingface_hub's own cache lookup; a model that is not there is downloaded when the hub
can be reached, else one line says how to get it. Torch-free (huggingface_hub imports no torch). Beside the
packages that use it (`hf` for models, `data` for datasets), so neither imports the other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from studio.errors import StudioError

HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # ORG/NAME, as the hub spells repository ids
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]  # never pickled .bin weights
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


def is_hub_name(text: str) -> bool:
    """`ORG/NAME` that names nothing on the disk (a local folder of that path wins)."""
    return HUB_NAME.fullmatch(text) is not None and not Path(text).expanduser().exists()


def cached_snapshot(name: str, kind: str = "model") -> Path | None:
    """The snapshot folder of the repository `name` (its refs/main) in the local hub cache; None when absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, repo_type=kind, cache_dir=cache_root(), local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def model_folder(name: str, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """The folder of the hub model `name`: the cached snapshot, else downloaded (safetensors, configs and the
    tokenizer; a bar on the terminal, or `progress("download", bytes, total)`); one line when neither works."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    found = cached_snapshot(name)
    if found is not None:
        return found
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise _not_cached(name, "HF_HUB_OFFLINE is set")
    try:
        bars = {"tqdm_class": _reporting_bar(progress)} if progress else {}
        return Path(snapshot_download(name, cache_dir=cache_root(), allow_patterns=MODEL_FILES, **bars))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        lines = str(error).strip().splitlines()
        raise _not_cached(name, lines[0][:120] if lines else type(error).__name__) from None


def _not_cached(name: str, why_not_downloaded: str) -> StudioError:
    return StudioError(
        f"{name} is not in the Hugging Face cache ({cache_root()}) and was not downloaded ({why_not_downloaded}); "
        f"get it with `huggingface-cli download {name}` where the hub is reachable, or give its folder"
    )


def local_model_folder(init_from: str) -> Path:
    """train.init_from's folder on this machine, without downloading: the folder itself, or a hub name's cached
    snapshot (one line when it is not cached: a launch downloads it)."""
    if not is_hub_name(init_from):
        return Path(init_from).expanduser().resolve()
    found = cached_snapshot(init_from)
    if found is None:
        raise _not_cached(init_from, "a launch downloads it when the hub is reachable")
    return found


def dataset_files(name: str) -> list[Path]:
    """The data files (parquet, json lines, json, csv, tsv) of the cached hub dataset `name`, its train split's
    when the files name splits; one line when it is not cached."""
    snapshot = cached_snapshot(name, "dataset")
    if snapshot is None:
        raise StudioError(
            f"dataset {name} is not in the Hugging Face cache ({cache_root()}); get it with "
            f"`huggingface-cli download --repo-type dataset {name}`, or give its files"
        )
    files = sorted(path for path in snapshot.rglob("*") if path.is_file() and path.suffix.lower() in DATA_SUFFIXES)
    train = [path for path in files if "train" in path.relative_to(snapshot).as_posix().lower()]
    if not (train or files):
        raise StudioError(f"dataset {name} in the Hugging Face cache holds no {'/'.join(DATA_SUFFIXES)} files")
    return train or files


def cache_root() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read when asked (huggingface_hub reads them
    once, when it is first imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _reporting_bar(progress: Callable[[str, int, int], None]):
    """A tqdm class for snapshot_download that hands its byte counts to `progress` instead of drawing."""
    from huggingface_hub.utils import tqdm

    class ReportingBar(tqdm):
        def __init__(self, *args, **kwargs):
            self.counts_bytes = kwargs.get("unit") == "B"
            super().__init__(*args, **(kwargs | {"disable": True}))
            self.done = 0

        def update(self, n=1):
            self.done += n or 0
            if self.counts_bytes:
                progress("download", self.done, self.total or 0)

    return ReportingBar
