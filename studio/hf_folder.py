"""Reading Hugging Face layout folders (config.json + safetensors + tokenizer.json): Llama-family and GPT-2.

Torch-free, so the launching process (the CLI, the studio) refuses bad input at once: `read_hf_folder` checks
the folder and turns config.json into a ModelConfig; `resolve_init` does that for `train.init_from`, which
names either such a folder or one of the studio's runs. studio.weights reads the tensors themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.config import ModelConfig
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError
from studio.run_folder.layout import (
    checkpoint_metadata,
    is_run,
    run_or_folder,
    short_reason,
    trained_config,
    usable_checkpoint,
)

SUPPORTED = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass
class HFFolder:
    path: Path
    model: ModelConfig
    weight_files: list[Path]
    tokenizer_file: Path
    eot_token: str  # the end-of-text (eos) token: it ends every document of a fine-tuning corpus


@dataclass
class InitSource:
    """What `train.init_from` resolves to: the model, the tokenizer, and where the weights are."""

    model: ModelConfig
    tokenizer_file: Path
    eot_token: str
    weights: Path  # a Hugging Face folder, or a studio checkpoint folder


# ---- torch-free -----------------------------------------------------------------------------------------
def read_hf_folder(folder: Path) -> HFFolder:
    """Check a Hugging Face folder and read its model config; a StudioError for anything missing or unsupported."""
    if not folder.is_dir():
        raise StudioError(f"{folder} is not a folder; give a local Hugging Face checkpoint folder or a run name")
    raw = _read_json(folder / "config.json", "the model config")
    model = model_config_from_hf(raw, folder)
    weight_files = _weight_files(folder)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise StudioError(
            f"{folder} has no tokenizer.json (the fast tokenizer); save the tokenizer there with "
            "save_pretrained (slow sentencepiece-only tokenizers are not read)"
        )
    tokenizer = load_tokenizer(tokenizer_file, fix="save it again with save_pretrained")
    eot = _eot_token(folder, raw, tokenizer)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > model.vocab_size:
        raise StudioError(
            f"{folder}: the tokenizer has {vocab} tokens but the model's embedding only "
            f"{model.vocab_size} rows; the tokenizer does not belong to these weights"
        )
    embedding_rows = _embedding_rows(weight_files, model.arch)
    if embedding_rows != model.vocab_size:
        raise StudioError(
            f"{folder}: config.json says vocab_size {model.vocab_size} but the embedding in the "
            f"weights has {embedding_rows} rows; the files do not belong together"
        )
    return HFFolder(folder, model, weight_files, tokenizer_file, eot)


def model_config_from_hf(raw: dict[str, Any], folder: Path) -> ModelConfig:
    architectures = raw.get("architectures") or [raw.get("model_type", "unknown")]
    architecture = architectures[0]
    supported = ", ".join(SUPPORTED)
    if architecture not in SUPPORTED:
        extra = " (sliding-window attention)" if raw.get("sliding_window") else ""
        raise StudioError(
            f"{folder}: architecture {architecture}{extra} is not supported; the studio reads {supported}"
        )
    try:
        return _llama_config(raw) if SUPPORTED[architecture] == "llama" else _gpt2_config(raw)
    except KeyError as missing:
        raise StudioError(f"{folder}/config.json lacks {missing}; it is not a complete {architecture} config") from None


def _llama_config(raw: dict[str, Any]) -> ModelConfig:
    heads = raw["num_attention_heads"]
    width = raw["hidden_size"]
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    unsupported = [
        (raw.get("hidden_act", "silu") != "silu", f"activation {raw.get('hidden_act')}"),
        (raw.get("attention_bias") or raw.get("mlp_bias"), "biases in attention or MLP"),
        (raw.get("head_dim", width // heads) != width // heads, "a head_dim other than hidden_size/heads"),
        (rope.get("rope_type", rope.get("type", "default")) != "default", f"RoPE scaling {rope.get('rope_type')}"),
    ]
    for present, what in unsupported:
        if present:
            raise StudioError(f"this Llama uses {what}, which the studio's Llama does not have")
    return ModelConfig(
        arch="llama",
        n_layer=raw["num_hidden_layers"],
        n_head=heads,
        n_kv_head=raw.get("num_key_value_heads", heads),
        n_embd=width,
        block_size=raw["max_position_embeddings"],
        vocab_size=raw["vocab_size"],
        dropout=float(raw.get("attention_dropout", 0.0)),
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        mlp_hidden=raw["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
    )


def _gpt2_config(raw: dict[str, Any]) -> ModelConfig:
    activation = raw.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise StudioError(f"this GPT-2 uses activation {activation}; the studio's GPT-2 has tanh GELU (gelu_new)")
    if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("add_cross_attention"):
        raise StudioError("this GPT-2 scales attention by layer index or has cross-attention; not supported")
    return ModelConfig(
        arch="gpt2",
        n_layer=raw["n_layer"],
        n_head=raw["n_head"],
        n_embd=raw["n_embd"],
        block_size=raw["n_positions"],
        vocab_size=raw["vocab_size"],
        dropout=float(raw.get("resid_pdrop", 0.1)),
        tie_embeddings=bool(raw.get("tie_word_embeddings", True)),
        mlp_hidden=raw.get("n_inner") or 0,
        bias=True,
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise StudioError(f"{path.parent} has no {path.name} ({what}); is it a Hugging Face checkpoint folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StudioError(f"cannot read {path}: {error}") from None


def _weight_files(folder: Path) -> list[Path]:
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


def _embedding_rows(files: list[Path], arch: str) -> int:
    """The token embedding's row count, from the safetensors headers alone."""
    from safetensors import safe_open

    names = ("model.embed_tokens.weight",) if arch == "llama" else ("transformer.wte.weight", "wte.weight")
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as file:
                for name in names:
                    if name in file.keys():
                        return file.get_slice(name).get_shape()[0]
        except Exception as error:  # safetensors raises several types for a damaged file
            raise StudioError(f"{path} is unreadable or corrupt ({short_reason(error)})") from None
    raise StudioError(
        f"{files[0].parent}: no token embedding ({names[0]}) in the weights; the folder is "
        "incomplete or not this architecture"
    )


def _eot_token(folder: Path, raw_config: dict[str, Any], tokenizer) -> str:
    """tokenizer_config.json's eos_token, else config.json's eos_token_id, else <|endoftext|> if present."""
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = _read_json(config_path, "the tokenizer config") if config_path.is_file() else {}
    eos = tokenizer_config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    eos_id = raw_config.get("eos_token_id")
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    candidates = [eos, tokenizer.id_to_token(eos_id) if isinstance(eos_id, int) else None, "<|endoftext|>"]
    for token in candidates:
        if token and tokenizer.token_to_id(token) is not None:
            return token
    raise StudioError(
        f"{folder}: no end-of-text token found (eos_token in tokenizer_config.json or "
        "eos_token_id in config.json); add one"
    )


def resolve_init(init_from: str) -> InitSource:
    """`train.init_from`: a local Hugging Face folder, or a studio run (its latest checkpoint, config and
    tokenizer). Torch-free: reads JSON and safetensors headers, not weights. Nothing is downloaded."""
    folder = Path(init_from).expanduser()
    if (folder / "config.json").is_file() or folder.is_dir() and not is_run(folder):
        hf = read_hf_folder(folder.resolve())
        return InitSource(hf.model, hf.tokenizer_file, hf.eot_token, hf.path)
    if not is_run(folder) and ("/" in init_from or init_from.startswith(".")):
        raise StudioError(
            f"--init-from {init_from}: no such folder; give a Hugging Face checkpoint folder or a run name"
        )
    return _resolve_run(run_or_folder(init_from))


def _resolve_run(run_dir: Path) -> InitSource:
    from studio.data.prepare import open_dataset

    found, _ = usable_checkpoint(run_dir)
    config = trained_config(run_dir, checkpoint_metadata(found))
    dataset = open_dataset(config.data.dataset)
    eot = load_tokenizer(dataset.tokenizer_path).id_to_token(dataset.eot_id)
    return InitSource(config.model, dataset.tokenizer_path, eot, found.resolve())
