"""The causal LMs in the local Hugging Face hub cache, as their files describe them (config.json, the tokenizer's
chat template, the safetensors' sizes): what the Model tab lists. Torch-free; no model is built."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from studio.data.chat import read_chat_template
from studio.errors import StudioError
from studio.hub_cache import cache_root

CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")  # the classes transformers' AutoModelForCausalLM builds


@dataclass(frozen=True)
class CachedModel:
    """A causal LM in the hub cache, as its files describe it (no model is built)."""

    name: str  # ORG/NAME
    folder: Path  # its snapshot
    family: str  # config.json's model_type
    weights_bytes: int  # its safetensors files together
    has_template: bool  # a chat template in its tokenizer files


def cached_models() -> list[CachedModel]:
    """The causal LMs with safetensors weights in the local hub cache, by name."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(cache_root())
    except CacheNotFound:
        return []
    models = []
    for repo in cache.repos:
        snapshot = _main_snapshot(repo) if repo.repo_type == "model" else None
        model = _causal_lm(repo.repo_id, snapshot) if snapshot else None
        if model is not None:
            models.append(model)
    return sorted(models, key=lambda model: model.name.lower())


def _main_snapshot(repo) -> Path | None:
    """The revision refs/main points at, else the newest one."""
    revisions = sorted(repo.revisions, key=lambda revision: ("main" in revision.refs, revision.last_modified))
    return Path(revisions[-1].snapshot_path) if revisions else None


def _causal_lm(name: str, folder: Path) -> CachedModel | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        template = read_chat_template(folder) is not None
    except (OSError, ValueError, StudioError):
        return None
    classes = config.get("architectures") or []
    weights = [path.stat().st_size for path in folder.glob("*.safetensors")]
    if not weights or not any(str(cls).endswith(CAUSAL_LM_SUFFIXES) for cls in classes):
        return None
    return CachedModel(name, folder, str(config.get("model_type", "?")), sum(weights), template)
