"""What the playground knows of a run before loading it, read torch-free from files: whether the run chats (its
dataset's examples were rendered with a chat template), and the sampling defaults of the Hugging Face checkpoint it
was adapted from (that folder's `generation_config.json`, as transformers' `generate` would sample); the same of a
Hugging Face folder offered beside a run (its export, its base)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.config import RunConfig
from studio.data.chat import read_chat_template
from studio.data.meta import EXAMPLES, DatasetMeta
from studio.errors import StudioError
from studio.paths import datasets_dir, is_name
from studio.run_folder.layout import is_run, read_config, run_path

GENERATION_CONFIG = "generation_config.json"
SAMPLING_KEYS = {"temperature": float, "top_p": float, "top_k": int, "repetition_penalty": float}
MAX_ADAPTED_RUNS = 8  # a run adapted from a run adapted from ... a folder: how far back its checkpoint is looked for


@dataclass(frozen=True)
class PlaygroundFacts:
    chats: bool = False  # its dataset holds chat or instruction examples: the playground opens in chat mode
    sampling: dict[str, float | int] = field(default_factory=dict)  # SAMPLING_KEYS the checkpoint sets


def playground_facts(config: RunConfig) -> PlaygroundFacts:
    return PlaygroundFacts(dataset_chats(config.data.dataset), checkpoint_sampling(config.train.init_from))


def folder_facts(folder: Path) -> PlaygroundFacts:
    """A Hugging Face folder's: it chats when it has a chat template; its generation_config.json's sampling."""
    try:
        chats = read_chat_template(folder) is not None
    except StudioError:  # an unreadable template: asked to chat, the worker will say what is wrong
        chats = False
    return PlaygroundFacts(chats, checkpoint_sampling(str(folder)))


def dataset_chats(name: str) -> bool:
    """Whether the prepared dataset `name` is chat or instruction examples (False when it cannot be read)."""
    if not is_name(name):
        return False
    try:
        return DatasetMeta.load(datasets_dir() / name / "meta.json").layout == EXAMPLES
    except (OSError, ValueError, TypeError):
        return False


def checkpoint_sampling(init_from: str) -> dict[str, float | int]:
    """The sampling settings of the Hugging Face folder `init_from` names, directly or through the runs it was
    adapted from; `do_sample: false` there means greedy, temperature 0. Empty when there are none."""
    for _ in range(MAX_ADAPTED_RUNS):
        if not init_from:
            return {}
        folder = Path(init_from).expanduser()
        if (folder / GENERATION_CONFIG).is_file():
            return _sampling(folder / GENERATION_CONFIG)
        if not is_name(init_from) or not is_run(run_path(init_from)):
            return {}
        try:
            init_from = read_config(run_path(init_from)).train.init_from
        except StudioError:
            return {}
    return {}


def _sampling(path: Path) -> dict[str, float | int]:
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    sampling = {
        key: kind(document[key])
        for key, kind in SAMPLING_KEYS.items()
        if isinstance(document.get(key), int | float) and not isinstance(document[key], bool)
    }
    if document.get("do_sample") is False:
        sampling["temperature"] = 0.0
    return sampling
