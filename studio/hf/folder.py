"""Reading a Hugging Face checkpoint folder (config.json + safetensors + tokenizer.json) without torch.

The launching process (the CLI, the studio) refuses bad input at once: `read_hf_folder` checks the files
(weights present and complete, safetensors only, a fast tokenizer that fits the embedding, an end-of-text
token) and asks a child process (`studio.hf.inspection`) what transformers builds from the folder: any family
transformers knows, with no per-family code here. The same child saves the tokenizer transformers builds from it
under the home (`folder_tokenizer`): the studio encodes with that one, never with tokenizer.json read as is where
transformers reads it otherwise (Qwen2's digits, one token each). A PEFT adapter folder stands for its base (when
the base is a local folder) with the adapter merged in. `resolve_init` does this for `train.init_from`, which names
such a folder or one of the studio's runs. The trainer then loads the model with transformers itself.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.config import PRETRAINED_ARCH, ModelConfig
from studio.data.chat import read_chat_template
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError
from studio.hub_cache import is_hub_name, model_folder
from studio.paths import child_process_env, hf_tokenizers_dir
from studio.run_folder.layout import (
    checkpoint_metadata,
    is_run,
    read_config,
    run_of_checkpoint,
    run_or_folder,
    short_reason,
    trained_config,
    usable_checkpoint,
)
from studio.sizing.hf_facts import HFFacts

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # its weights; peft would unpickle an adapter_model.bin, never read
EMBEDDING_NAMES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


@dataclass
class HFFolder:
    path: Path  # the folder given: a model, or an adapter whose base is a local folder
    base: Path  # where the base model's config and weights are (the folder itself unless an adapter)
    facts: HFFacts  # what transformers builds from it (studio.hf.inspection)
    tokenizer_file: Path  # what its text is encoded with (folder_tokenizer)
    eot_token: str  # the end-of-text (eos) token: it ends every document of a corpus, and every turn it learns
    bos_token: str
    chat_template: str | None  # the tokenizer's chat template; None for a base model without one
    pad_token: str = ""  # the tokenizer's pad token, when it names one
    tokenizer_note: str = ""  # why tokenizer_file is the folder's tokenizer.json as is (folder_tokenizer)

    @property
    def model(self) -> ModelConfig:
        """The model as the run's config records it: arch hf, the sizes for display and estimates."""
        facts = self.facts
        heads = facts.heads or 1
        return ModelConfig(
            arch=PRETRAINED_ARCH,
            n_layer=facts.layers or 0,
            n_head=heads,
            n_kv_head=0 if facts.kv_heads in (None, heads) else facts.kv_heads,
            n_embd=facts.hidden or 0,
            block_size=facts.context or 2048,
            vocab_size=facts.vocab or 0,
            tie_embeddings=facts.tied,
        )


@dataclass
class InitSource:
    """What `train.init_from` resolves to: the model, the tokenizer, and where the weights are."""

    model: ModelConfig
    tokenizer_file: Path
    eot_token: str
    weights: Path  # a Hugging Face folder (or adapter folder), or a studio checkpoint folder
    chat_template: str | None
    bos_token: str = ""
    facts: HFFacts | None = None  # a Hugging Face folder's (None for a studio run)
    pad_token: str = ""


# ---- torch-free -----------------------------------------------------------------------------------------
def read_hf_folder(folder: Path, task: str = "lm") -> HFFolder:
    """Check a Hugging Face folder (or an adapter on a local base) and read what transformers builds from it (a
    causal LM, or for task "classify" a sequence classifier)."""
    if not folder.is_dir():
        raise StudioError(f"{folder} is not a folder; give a local Hugging Face checkpoint folder or a run name")
    adapter = (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()
    base = adapter_base(folder) if adapter else folder
    raw = _read_json(base / "config.json", "the model config")
    if not isinstance(raw.get("model_type"), str):
        raise StudioError(f"{base}/config.json has no model_type; it is not a Hugging Face model config")
    files = weight_files(base)
    tokenizer_folder = next((f for f in (folder, base) if (f / "tokenizer.json").is_file()), None)
    if tokenizer_folder is None:
        raise StudioError(
            f"{folder} has no tokenizer.json (the fast tokenizer); save the tokenizer there with "
            "save_pretrained (slow sentencepiece-only tokenizers are not read)"
        )
    saved = load_tokenizer(tokenizer_folder / "tokenizer.json", fix="save it again with save_pretrained")
    tokenizer_config = _tokenizer_config(tokenizer_folder)
    eot = _eot_token(folder, raw, saved, tokenizer_config)
    _check_vocabulary(base, raw, saved.get_vocab_size(with_added_tokens=True), files)
    facts = folder_facts(base, task)
    tokenizer = folder_tokenizer(tokenizer_folder)
    bos = _token_text(tokenizer_config.get("bos_token")) or ""
    pad = _token_text(tokenizer_config.get("pad_token")) or ""
    template = read_chat_template(tokenizer_folder)
    return HFFolder(folder, base, facts, tokenizer.file, eot, bos, template, pad, tokenizer.note)


def folder_facts(folder: Path, task: str = "lm") -> HFFacts:
    """studio.hf.inspection's facts about the model in `folder`, from a child process (torch stays out of this one);
    remembered while the folder's config.json is unchanged, so the studio and the CLI ask once. Threads asking for
    the same folder at once wait for the first one's child (the studio's panes started one each, four at a time)."""
    key = (str(folder.resolve()), (folder / "config.json").stat().st_mtime_ns, task)
    with _ASKING.setdefault(key, threading.Lock()):
        if key not in _FACTS:
            _FACTS[key] = _inspect(folder, task)
    return _FACTS[key]


_FACTS: dict[tuple[str, int, str], HFFacts] = {}
_ASKING: dict[tuple[str, int, str], threading.Lock] = {}  # one lock per folder asked about (setdefault is atomic)


def remembered_facts(folder: Path) -> HFFacts | None:
    """folder_facts' answer if this process has it already (the studio's panes never wait for a child process)."""
    try:
        return _FACTS.get((str(folder.resolve()), (folder / "config.json").stat().st_mtime_ns, "lm"))
    except OSError:
        return None


def run_facts(config, inspect: Callable[[Path, str], HFFacts] = folder_facts) -> HFFacts | None:
    """The facts of the Hugging Face model a run config adapts (its base, through adapters and earlier runs); a
    process that has torch and transformers already (the trainer) passes studio.hf.inspection.inspect_folder to ask
    in-process rather than through a child."""
    if not config.model.pretrained:
        return None
    root = pretrained_root(config)
    return inspect(root if (root / "config.json").is_file() else adapter_base(root), config.train.task)


def _inspect(folder: Path, task: str) -> HFFacts:
    """The facts, and the folder's tokenizer saved on the way when it is not yet (one child, one import of
    transformers)."""
    save = ["--tokenizer", str(folder), str(saved_tokenizer(folder))]
    unsaved = (folder / "tokenizer.json").is_file() and not _tokenizer_saved(folder)
    return HFFacts.from_json(_run_inspection(folder, [str(folder), "--task", task, *(save if unsaved else [])]))


def _inspection_child(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m studio.hf.inspection ARGS`, its output captured (tests with torch loaded swap in an in-process
    call: tests/conftest.py's inspection_in_process)."""
    return subprocess.run(
        [sys.executable, "-m", "studio.hf.inspection", *args],
        capture_output=True,
        text=True,
        env=child_process_env(),
    )


def _run_inspection(folder: Path, args: list[str]) -> str:
    """What `python -m studio.hf.inspection ARGS` prints; its one-line refusal as a StudioError."""
    result = _inspection_child(args)
    if result.returncode == 2:
        raise StudioError(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StudioError(f"{folder}: inspecting the model failed ({last[:160]})")
    return result.stdout


@dataclass
class FolderTokenizer:
    file: Path  # transformers' tokenizer of the folder, saved under the home; or the folder's tokenizer.json as is
    note: str = ""  # why it is the folder's tokenizer.json: what kept transformers from building one


WHY = ".why"  # the suffix of saved_tokenizer's twin that says why transformers built no tokenizer


def folder_tokenizer(folder: Path, save: Callable[[Path, Path], None] | None = None) -> FolderTokenizer:
    """The tokenizer of a Hugging Face folder, the one rule for it: what transformers builds from it
    (`AutoTokenizer`, which may read tokenizer.json otherwise than the tokenizers library does: Qwen2Tokenizer splits
    digits one by one), saved under the home by studio.hf.inspection.save_tokenizer (in a child process, or by
    `save` in a process that has transformers already); the folder's tokenizer.json only when transformers builds
    none, with why."""
    saved = saved_tokenizer(folder)
    if not _tokenizer_saved(folder):
        if save is None:
            _run_inspection(folder, ["--tokenizer", str(folder), str(saved)])
        else:
            save(folder, saved)
    if saved.is_file():
        return FolderTokenizer(saved)
    why = saved.with_suffix(WHY).read_text(encoding="utf-8").strip()
    return FolderTokenizer(folder / "tokenizer.json", f"tokenizer.json as is: transformers builds none ({why})")


def saved_tokenizer(folder: Path) -> Path:
    """Where transformers' tokenizer of `folder` is kept: named after the folder and the size and modification time
    of each file but the weights, so a changed tokenizer or config is built again."""
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.suffix != ".safetensors")
    stamp = [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp]).encode()).hexdigest()[:24]
    return hf_tokenizers_dir() / f"{key}.json"


def _tokenizer_saved(folder: Path) -> bool:
    """Whether studio.hf.inspection.save_tokenizer has answered for this folder: a tokenizer, or why none."""
    saved = saved_tokenizer(folder)
    return saved.is_file() or saved.with_suffix(WHY).is_file()


def adapter_base(folder: Path) -> Path:
    """The local base model of a PEFT adapter folder; a StudioError when it is not on this machine, or when the
    adapter's weights are not safetensors. Every reader of an adapter folder asks this before peft sees it."""
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise StudioError(
            f"{folder} has no {ADAPTER_WEIGHTS}; the studio reads safetensors only (never a pickled "
            f"adapter_model.bin): convert it with peft's save_pretrained(folder, safe_serialization=True)"
        )
    adapter = _read_json(folder / ADAPTER_CONFIG, "the adapter config")
    base = adapter.get("base_model_name_or_path") or ""
    if not base or not (Path(base).expanduser() / "config.json").is_file():
        raise StudioError(
            f"{folder} is a PEFT adapter whose base model {base or '(unnamed)'} is not a local folder; put the base "
            f"model on this machine and set base_model_name_or_path in {ADAPTER_CONFIG} to its folder"
        )
    return Path(base).expanduser().resolve()


def _check_vocabulary(folder: Path, raw: dict[str, Any], tokens: int, files: list[Path]) -> None:
    """The tokenizer fits the embedding, and config.json's vocab_size is the embedding's."""
    vocab = raw.get("vocab_size") or (raw.get("text_config") or {}).get("vocab_size")
    if isinstance(vocab, int) and tokens > vocab:
        raise StudioError(
            f"{folder}: the tokenizer has {tokens} tokens but the model's embedding only "
            f"{vocab} rows; the tokenizer does not belong to these weights"
        )
    rows = _embedding_rows(files)
    if isinstance(vocab, int) and rows is not None and rows != vocab:
        raise StudioError(
            f"{folder}: config.json says vocab_size {vocab} but the embedding in the "
            f"weights has {rows} rows; the files do not belong together"
        )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise StudioError(f"{path.parent} has no {path.name} ({what}); is it a Hugging Face checkpoint folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StudioError(f"cannot read {path}: {error}") from None


def weight_files(folder: Path) -> list[Path]:
    if (folder / WEIGHTS_INDEX).is_file():
        index = _read_json(folder / WEIGHTS_INDEX, "the shard index")
        files = [folder / name for name in sorted(set(index.get("weight_map", {}).values()))]
    elif (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    else:
        raise StudioError(
            f"{folder} has no {WEIGHTS} (nor {WEIGHTS_INDEX}); the studio reads safetensors "
            "only (never pickled .bin files): re-save the model with save_pretrained"
        )
    missing = [path.name for path in files if not path.is_file()]
    if missing or not files:
        raise StudioError(
            f"{folder} is incomplete: shard(s) {', '.join(missing[:3]) or '(none listed)'} "
            f"missing; copy the whole checkpoint folder"
        )
    return files


def _embedding_rows(files: list[Path]) -> int | None:
    """The token embedding's row count, from the safetensors headers alone (None when no name is known)."""
    from safetensors import safe_open

    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as file:
                for name in file.keys():
                    if name.endswith(EMBEDDING_NAMES):
                        return file.get_slice(name).get_shape()[0]
        except Exception as error:  # safetensors raises several types for a damaged file
            raise StudioError(f"{path} is unreadable or corrupt ({short_reason(error)})") from None
    return None


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    return _read_json(path, "the tokenizer config") if path.is_file() else {}


def _token_text(token: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string, or an object with its content."""
    return token.get("content") if isinstance(token, dict) else token


def _eot_token(folder: Path, raw_config: dict[str, Any], tokenizer, tokenizer_config: dict[str, Any]) -> str:
    """tokenizer_config.json's eos_token, else config.json's eos_token_id, else <|endoftext|> if present."""
    eos_id = raw_config.get("eos_token_id")
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    candidates = [
        _token_text(tokenizer_config.get("eos_token")),
        tokenizer.id_to_token(eos_id) if isinstance(eos_id, int) else None,
        "<|endoftext|>",
    ]
    for token in candidates:
        if token and tokenizer.token_to_id(token) is not None:
            return token
    raise StudioError(
        f"{folder}: no end-of-text token found (eos_token in tokenizer_config.json or "
        "eos_token_id in config.json); add one"
    )


def resolve_init(
    init_from: str,
    task: str = "lm",
    progress: Callable[[str, int, int], None] | None = None,
    planned: bool = False,
) -> InitSource:
    """`train.init_from`: a local Hugging Face folder, a model of the hub by name (`ORG/NAME`: from the local
    cache, or downloaded), or a studio run (its latest checkpoint, config and tokenizer; `planned`: a run that has
    not trained yet, its folder in place of the checkpoint). Torch-free: reads JSON and safetensors headers, not
    weights."""
    folder = model_folder(init_from, progress) if is_hub_name(init_from) else Path(init_from).expanduser()
    if (folder / "config.json").is_file() or folder.is_dir() and not is_run(folder):
        hf = read_hf_folder(folder.resolve(), task)
        return InitSource(
            hf.model, hf.tokenizer_file, hf.eot_token, hf.path, hf.chat_template, hf.bos_token, hf.facts, hf.pad_token
        )
    if not is_run(folder) and ("/" in init_from or init_from.startswith(".")):
        raise StudioError(
            f"--init-from {init_from}: no such folder; give a Hugging Face checkpoint folder, a hub name "
            "(ORG/NAME) or a run name"
        )
    return _resolve_run(run_or_folder(init_from), planned)


def _resolve_run(run_dir: Path, planned: bool = False) -> InitSource:
    """A studio run's newest usable checkpoint: its model (adapters merged in when it trained any) and tokenizer.
    A run that adapted a Hugging Face model stays one: transformers builds its base, the checkpoint goes on top.
    A `planned` run (not trained yet) gives the same from its config, and its folder for the weights."""
    from studio.data.prepare import open_dataset

    if planned:
        found, config = run_dir, read_config(run_dir)
    else:
        found, _ = usable_checkpoint(run_dir)
        config = trained_config(run_dir, checkpoint_metadata(found))
    dataset = open_dataset(config.data.dataset)
    eot = load_tokenizer(dataset.tokenizer_path).id_to_token(dataset.eot_id)
    facts = folder_facts(pretrained_root(config)) if config.model.pretrained else None
    template, bos = dataset.meta.chat_template, dataset.meta.chat_tokens.bos
    return InitSource(config.model, dataset.tokenizer_path, eot, found.resolve(), template, bos, facts)


def pretrained_root(config) -> Path:
    """The Hugging Face folder at the start of a chain of runs, each started from the one before."""
    source = Path(config.train.init_from)
    while not (source / "config.json").is_file() and not (source / ADAPTER_CONFIG).is_file():
        if is_run(source):  # a stage's run that has not trained yet (planned)
            config = read_config(source)
        else:
            config = trained_config(run_of_checkpoint(source), checkpoint_metadata(source))
        source = Path(config.train.init_from)
    return source
