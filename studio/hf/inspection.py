"""What transformers makes of a Hugging Face folder, run as a child process: `python -m studio.hf.inspection DIR
[--task classify] [--tokenizer TOKENIZER_DIR OUT]`, or `--tokenizer TOKENIZER_DIR OUT` alone.

The launching process (the CLI, the studio) must not import torch or transformers, yet only transformers
knows whether it can build a folder's model and what its layers are. So this small program builds the model
on the meta device (no memory, no weights read, a second or two) and prints its facts (studio.sizing.hf_facts) as
one JSON line: the family, the sizes, the parameter count, and every linear layer (name and shape) that LoRA may
adapt. A folder transformers cannot build gives one line on stderr and exit status 2.
`studio.hf.folder.folder_facts` runs it.

It also saves the tokenizer transformers builds from a folder (`save_tokenizer`), which is not always the folder's
tokenizer.json read as is: a family's own class (Qwen2Tokenizer for model_type qwen2) replaces the file's
pre-tokenizer with its family's rules (digits one by one, NFC). The studio encodes with that one, so that it trains
on the sequences transformers scores. `studio.hf.folder.folder_tokenizer` reads what it saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from studio.atomic_write import write_atomically
from studio.errors import StudioError
from studio.run_folder.layout import short_reason
from studio.sizing.hf_facts import HFFacts, LinearLayer

SIZES = {  # a size of HFFacts, and the config keys families spell it with
    "layers": ("num_hidden_layers", "n_layer"),
    "hidden": ("hidden_size", "n_embd"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads",),
    "context": ("max_position_embeddings", "n_positions"),
    "vocab": ("vocab_size",),
    "sliding_window": ("sliding_window",),
}


def inspect_folder(folder: Path, task: str = "lm") -> HFFacts:
    """The facts of the model in `folder` (a causal LM, or with task "classify" a sequence classifier), built on the
    meta device; a StudioError when transformers cannot."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise StudioError(f"{folder}: transformers does not know this model ({short_reason(error)})") from None
    auto, what = AutoModelForCausalLM, "a causal language model"
    if task == "classify":
        auto, what = AutoModelForSequenceClassification, "a sequence classifier"
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise StudioError(
            f"{folder}: transformers cannot build {what} from it ({short_reason(error)}); give a checkpoint "
            f"{auto.__name__} can build"
        ) from None
    check_weight_names(folder, model, new=NEW_HEADS if task == "classify" else ())
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return HFFacts(
        **{name: _first(text_config, keys) for name, keys in SIZES.items()},
        model_type=config.model_type,
        architecture=type(model).__name__,
        params=sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        tied=bool(getattr(text_config, "tie_word_embeddings", False)),
        linear_layers=_linear_layers(model, model.get_output_embeddings()),
    )


NEW_HEADS = ("classifier", "score", "pooler")  # a sequence classifier's layers that a language model lacks


def check_weight_names(folder: Path, model: nn.Module, new: tuple[str, ...] = ()) -> None:
    """Every parameter of the model has a tensor in the folder's safetensors, named as transformers renames it when
    loading (`names_as_loaded`; a tied head shares its embedding's; the `new` layers of a classifier start fresh);
    otherwise transformers would fill the gaps with random values, and training would start from noise."""
    from safetensors import safe_open

    from studio.hf.folder import weight_files

    saved = []
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as file:
            saved.extend(file.keys())
    found = names_as_loaded(model, saved)
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - dict(model.named_parameters()).keys()
    missing = [
        name
        for name, _ in model.named_parameters()
        if name not in found and name not in tied and not any(part in new for part in name.split("."))
    ]
    if missing:
        raise StudioError(
            f"{folder}: the weights lack {len(missing)} of the {type(model).__name__}'s tensors (e.g. {missing[0]}); "
            "the folder is incomplete or its config.json describes another model"
        )


def names_as_loaded(model: nn.Module, saved: list[str]) -> set[str]:
    """The names a checkpoint's tensors take in `model` when transformers loads them: its conversion mapping for the
    model's family (GPT-NeoX's `embed_out` is `lm_head`, say), then the base-model prefix (GPT-2's `transformer.`,
    `model.`) added or dropped, as `from_pretrained` does (transformers.core_model_loading)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

    conversions = get_model_conversion_mapping(model)
    renamings = [entry for entry in conversions if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in conversions if isinstance(entry, WeightConverter)]
    expected = model.state_dict()
    prefix = model.base_model_prefix
    loaded = set()
    for name in sorted(saved, key=dot_natural_key):  # transformers' order: some converters act once a first key matched
        renamed, _ = rename_source_key(name, renamings, converters, prefix, expected)
        if renamed not in expected and name in expected:  # a name the mapping should have left alone
            renamed, _ = rename_source_key(name, [], [], prefix, expected)
        loaded.add(renamed)
    return loaded


def _first(config, keys: tuple[str, ...]):
    return next((getattr(config, key) for key in keys if getattr(config, key, None) is not None), None)


def _linear_layers(model: nn.Module, outputs: nn.Module | None) -> list[LinearLayer]:
    """Every linear layer but the output head (GPT-2's Conv1D stores (in, out))."""
    layers = []
    for name, module in model.named_modules():
        if module is outputs:
            continue
        if isinstance(module, nn.Linear):
            layers.append(LinearLayer(name.split(".")[-1], module.in_features, module.out_features))
        elif type(module).__name__ == "Conv1D":
            fan_in, fan_out = module.weight.shape
            layers.append(LinearLayer(name.split(".")[-1], fan_in, fan_out))
    return layers


def save_tokenizer(folder: Path, out: Path) -> None:
    """The tokenizer `AutoTokenizer` builds from `folder`, as a tokenizer.json written whole at `out`; when
    transformers cannot build one, why, in one line written whole at `out`'s `.why` twin (the folder's tokenizer.json
    is then read as is)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from studio.hf.folder import WHY

    hf_logging.set_verbosity_error()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        backend = AutoTokenizer.from_pretrained(str(folder), local_files_only=True).backend_tokenizer
    except Exception as error:  # transformers raises many types for a tokenizer it cannot build
        write_atomically(out.with_suffix(WHY), short_reason(error))
        return
    write_atomically(out, backend.to_str())


def main(argv: list[str]) -> int:
    if "--tokenizer" in argv:
        at = argv.index("--tokenizer")
        save_tokenizer(Path(argv[at + 1]), Path(argv[at + 2]))
        argv = argv[:at] + argv[at + 3 :]
    if not argv:
        return 0
    try:
        print(inspect_folder(Path(argv[0]), argv[argv.index("--task") + 1] if "--task" in argv else "lm").to_json())
    except StudioError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
