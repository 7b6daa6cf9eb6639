"""`llm-studio export`: a run's checkpoint as a Hugging Face folder that transformers loads as is.

    config.json                     the architecture's transformers class, e.g. LlamaForCausalLM (plain JSON)
    model.safetensors               or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json
    README.md                       a model card: the training config and the final metrics

Export checks itself where transformers is importable: it loads the folder back with AutoModelForCausalLM
and compares logits with the studio's model on the run's sample prompts; a mismatch is an error. The
recurrent models have no transformers class: they leave as plain safetensors plus config, and say so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from studio.architectures import architecture
from studio.config import ModelConfig, RunConfig
from studio.data.meta import DatasetMeta
from studio.data.prepare import Dataset, open_dataset
from studio.data.tokenizer import ENCODER_TOKENS, EOT, UNK, load_tokenizer
from studio.errors import StudioError
from studio.hf.folder import WEIGHTS, WEIGHTS_INDEX, adapter_base
from studio.inference.load import CheckpointRead, read_checkpoint
from studio.model import build_classifier, build_model
from studio.model.trainable import Labels, build_run_model, load_pretrained
from studio.model.weights import hf_names, load_weights, weights_to_save
from studio.objectives import Objective, objective_of
from studio.output_folder import check_replaceable, replaced_whole
from studio.run_folder.events import current_history, read_events
from studio.run_folder.exports import record_export
from studio.run_folder.layout import EVENTS, run_or_folder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = 1e-4  # largest logit difference allowed between the studio's model and transformers'
HALF_TOLERANCE = 0.5  # the same, against the fp32 model, for a bf16/fp16 export (the rounding of every weight)


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    max_logit_diff: float | None  # None: not verified (recurrent model, or transformers not installed)
    note: str
    fallback: str | None = None  # when a damaged latest checkpoint was passed over: which, and why


def export_run(
    run: str,
    out: Path,
    step: int | None = None,
    dtype: str = "fp32",
    max_shard_size: int = 2 * 1024**3,
    verify: bool = True,
    adapter: bool = False,
) -> ExportResult:
    if dtype not in DTYPES:
        raise StudioError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    run_dir = run_or_folder(run)
    read = read_checkpoint(run_dir, step)  # checked before the first byte is written
    config = read.config
    objective = objective_of(config)  # what head it exports with, whether it generates, what reloads it
    if adapter:
        check_adapter_export(run_dir.name, config)
    dataset = open_dataset(config.data.dataset)
    out = out.expanduser().resolve()
    check_replaceable(out)
    with replaced_whole(out, {"run": run_dir.name, "step": read.step}) as staging:  # in place once verified
        if config.model.pretrained:
            files, diff, note = write_pretrained(
                read, objective, dataset, staging, dtype, max_shard_size, adapter, verify
            )
        else:
            files, diff, note = write_native(read, objective, dataset, staging, dtype, max_shard_size, verify)
        metrics = final_metrics(run_dir)
        card = model_card(run_dir.name, read.step, config, objective, metrics, dtype)
        (staging / "README.md").write_text(card, encoding="utf-8")
        files.append("README.md")
    record_export(run_dir, out, read.step)
    return ExportResult(out, files, diff, note, read.note)


def check_adapter_export(name: str, config: RunConfig) -> None:
    if config.train.method == "full":
        raise StudioError(f"--adapter: run {name} trained every weight (method full); export it merged: drop --adapter")
    if not config.model.pretrained:
        raise StudioError(
            f"--adapter: run {name} adapted one of the studio's own models, which peft cannot load as a base; "
            "export it merged: drop --adapter"
        )


def write_native(
    read: CheckpointRead,
    objective: Objective,
    dataset: Dataset,
    out: Path,
    dtype: str,
    max_shard_size: int,
    verify: bool,
) -> tuple[list[str], float | None, str]:
    """A studio model: its weights under Hugging Face's names (adapters merged in first) and plain-JSON configs."""
    config = read.config
    model_cfg = config.model
    weights = merged_native_weights(read)
    huggingface = architecture(model_cfg.arch).huggingface  # None: transformers has no class for it
    hf_weights = weights if huggingface is None else hf_names(weights, model_cfg)
    hf_weights = {name: tensor.to(DTYPES[dtype]).contiguous() for name, tensor in hf_weights.items()}
    files = write_weights(hf_weights, out, max_shard_size)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    eot_id = dataset.eot_id
    files += write_json(out, {"config.json": model_config_json(config, objective, eot_id, dtype, dataset.meta)})
    if huggingface is None:
        files += write_tokenizer(out, dataset, tokenizer.token_to_id(UNK) is not None, model_cfg)
        note = (
            f"{model_cfg.arch} models have no transformers class: the folder holds plain safetensors (the "
            "studio's names) and config.json, not loadable by AutoModelForCausalLM"
        )
        return files, None, note
    if objective.generates:
        files += write_json(out, {"generation_config.json": generation_config(stop_ids(dataset), eot_id)})
    files += write_tokenizer(out, dataset, tokenizer.token_to_id(UNK) is not None, model_cfg)
    if not verify:
        return files, None, "not verified (asked not to)"
    if objective.classifies:
        reference = build_classifier(model_cfg, len(dataset.meta.labels))
    else:
        reference = build_model(model_cfg)
    rounded = {name: tensor.to(DTYPES[dtype]).float() for name, tensor in weights.items()}
    load_weights(reference, rounded, model_cfg.tie_embeddings)
    prompts = config.train.sample_prompts
    diff = verify_export(out, reference.eval(), tokenizer, prompts, eot_id, objective.export_auto_class)
    return files, diff, f"verified with transformers on {len(prompts)} sample prompts"


def merged_native_weights(read: CheckpointRead) -> dict[str, torch.Tensor]:
    """A studio model's weights under its own names, its adapters (if it trained any) folded into them."""
    config = read.config
    if config.train.method == "full":
        return read.weights
    run_model = build_run_model(config)
    run_model.load_state(read.weights)
    return weights_to_save(run_model.merged(), config.model.tie_embeddings)


def write_pretrained(
    read: CheckpointRead,
    objective: Objective,
    dataset: Dataset,
    out: Path,
    dtype: str,
    max_shard_size: int,
    adapter: bool,
    verify: bool,
) -> tuple[list[str], float | None, str]:
    """A Hugging Face model's run: saved by transformers (merged: the adapters folded into the base) or by peft
    (`adapter`: the adapters alone, for PeftModel.from_pretrained on the base folder), with the tokenizer and
    the chat template it trained with. Verified against the trained model, adapters unmerged."""
    config = read.config
    run_model = build_run_model(config, dequantized=True)
    run_model.load_state(read.weights)
    run_model.module.eval()
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    prompts = [
        tokenizer.encode(prompt, add_special_tokens=False).ids or [dataset.eot_id]
        for prompt in config.train.sample_prompts
    ]
    reference = trained_logits(run_model.module, prompts)
    if adapter:
        run_model.inner.save_pretrained(str(out), safe_serialization=True)
        saved = run_model.inner
    else:
        saved = run_model.merged().to(DTYPES[dtype])
        if objective.generates:
            saved.generation_config = pretrained_generation_config(saved, dataset)
        saved.save_pretrained(str(out), max_shard_size=max_shard_size, safe_serialization=True)
        drop_auto_map(out / "config.json")
    save_pretrained_tokenizer(Path(config.train.init_from), dataset, out)
    files = sorted(path.name for path in out.iterdir() if path.is_file())
    if not verify:
        return files, None, "not verified (asked not to)"
    labels = Labels.of(config) if objective.classifies else None
    diff = verify_pretrained(out, Path(config.train.init_from), adapter, prompts, reference, dtype, objective, labels)
    what = "PeftModel.from_pretrained on the base" if adapter else objective.export_auto_class
    return files, diff, f"reloaded with {what} and checked on {len(prompts)} sample prompts"


def drop_auto_map(config_file: Path) -> None:
    """A base's `auto_map` names Python modules of its repository (for trust_remote_code) that the export does not
    hold: the exported config names none, and transformers builds the model from its own class."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.pop("auto_map", None) is not None:
        write_json(config_file.parent, {config_file.name: config})


@torch.inference_mode()
def trained_logits(model: torch.nn.Module, prompts: list[list[int]]) -> list[torch.Tensor]:
    return [model(torch.tensor([ids]))[0].float() for ids in prompts]


def pretrained_generation_config(model: torch.nn.Module, dataset: Dataset):
    """The base's generation config, stopping at every token that ends what the run learned to write."""
    generation = model.generation_config
    base_eos = generation.eos_token_id
    base_eos = [base_eos] if isinstance(base_eos, int) else list(base_eos or [])
    generation.eos_token_id = sorted({*base_eos, *stop_ids(dataset), dataset.eot_id})
    if generation.pad_token_id is None:
        generation.pad_token_id = dataset.eot_id
    return generation


def save_pretrained_tokenizer(init_from: Path, dataset: Dataset, out: Path) -> None:
    """The base's tokenizer files, carrying the chat template the run trained with (the base's own, or the
    studio's default for a base that had none)."""
    from transformers import AutoTokenizer

    source = init_from if (init_from / "tokenizer.json").is_file() else adapter_base(init_from)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    if dataset.meta.chat_template:
        tokenizer.chat_template = dataset.meta.chat_template
    tokenizer.save_pretrained(str(out))


def verify_pretrained(
    out: Path,
    init_from: Path,
    adapter: bool,
    prompts: list[list[int]],
    reference: list[torch.Tensor],
    dtype: str,
    objective: Objective,
    labels: Labels | None,
) -> float:
    """The largest logit difference between the trained model and the export reloaded by transformers (its
    objective's Auto class; peft on the base with the classifier's `labels`, for an adapter), over the prompts. A
    16-bit export is compared with the tolerance of its rounding."""
    import transformers

    if adapter:
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(load_pretrained(init_from, labels=labels), str(out))
    else:
        auto = getattr(transformers, objective.export_auto_class)
        reloaded = auto.from_pretrained(str(out), dtype=torch.float32, local_files_only=True)
    reloaded.eval()
    with torch.inference_mode():
        largest = max(
            (reloaded(input_ids=torch.tensor([ids])).logits - logits).abs().max().item()
            for ids, logits in zip(prompts, reference)
        )
    allowed = TOLERANCE if dtype == "fp32" else HALF_TOLERANCE
    if not largest <= allowed:
        raise StudioError(
            f"export check failed: the reloaded model's logits differ from the trained model's by {largest:.2e} "
            f"(allowed {allowed:.0e}); it is not a faithful export, so it was not kept"
        )
    return largest


# ---- the files ----------------------------------------------------------------------------------------
def write_weights(weights: dict[str, torch.Tensor], out: Path, max_shard_size: int) -> list[str]:
    """One model.safetensors, or shards of at most max_shard_size bytes (a larger tensor gets its own)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
        return [WEIGHTS]
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    return names + write_json(out, {WEIGHTS_INDEX: {"metadata": {"total_size": total}, "weight_map": weight_map}})


def write_json(out: Path, documents: dict[str, dict[str, Any]]) -> list[str]:
    for name, document in documents.items():
        (out / name).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return list(documents)


def model_config_json(
    config: RunConfig, objective: Objective, eot_id: int, dtype: str, meta: DatasetMeta
) -> dict[str, Any]:
    """config.json of the model's transformers class (its sequence classifier, for a classification run); for an
    architecture that has none, the studio's own record of the run's config."""
    m = config.model
    huggingface = architecture(m.arch).huggingface
    common = {
        "vocab_size": m.vocab_size,
        "tie_word_embeddings": m.tie_embeddings,
        "dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype],
    }
    if huggingface is None:
        return {
            "architectures": [],
            "model_type": f"llm-studio-{m.arch}",
            "note": "no transformers class exists for this recurrent model; load it with the studio",
            "llm_studio": config.to_dict(),
            "bos_token_id": eot_id,
            "eos_token_id": eot_id,
            **common,
        }
    # what pads the rows: a labeled dataset's pad_id, unless the tokenizer's own [PAD] and the like were kept (an
    # encoder's text; older versions wrote them null)
    special_ids = {"pad": meta.pad_id} | {name: i for name, i in (meta.special_ids or {}).items() if i is not None}
    document = {
        "architectures": [huggingface.model_class],
        **huggingface.config_json(m, eot_id, special_ids),
        **common,
    }
    if objective.classifies:
        names = [str(label) for label in meta.labels]
        document |= {
            "architectures": [huggingface.classifier_class],
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: index for index, name in enumerate(names)},
            "pad_token_id": meta.pad_id,
        }
    return document


def stop_ids(dataset: Dataset) -> list[int]:
    """The tokens that end what a run learned to write: the end-of-text token, and the end-of-turn tokens of its
    chat template (recorded when the dataset was prepared)."""
    return sorted({dataset.eot_id, *dataset.meta.stop_ids})


def generation_config(stops: list[int], eot_id: int) -> dict[str, Any]:
    return {
        "bos_token_id": eot_id,
        "eos_token_id": stops if len(stops) > 1 else stops[0],
        "pad_token_id": eot_id,
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 50,
    }


def write_tokenizer(out: Path, dataset: Dataset, has_unk: bool, cfg: ModelConfig) -> list[str]:
    """tokenizer.json as prepared (an encoder's frames text in [CLS] ... [SEP] itself) and the special tokens
    transformers' tokenizer classes read."""
    shutil.copyfile(dataset.tokenizer_path, out / "tokenizer.json")
    if cfg.encoder:
        special = {f"{name}_token": token for name, token in ENCODER_TOKENS.items()}
    else:
        special = {"bos_token": EOT, "eos_token": EOT, "pad_token": EOT}
    special |= {"unk_token": UNK} if has_unk else {}
    template = {"chat_template": dataset.meta.chat_template} if dataset.meta.chat_template else {}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.block_size,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        **special,
        **template,
    }
    return [
        "tokenizer.json",
        *write_json(out, {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special}),
    ]


# ---- the model card --------------------------------------------------------------------------------------
def final_metrics(run_dir: Path) -> dict[str, Any]:
    events = current_history(read_events(run_dir / EVENTS))
    last = {kind: next((e for e in reversed(events) if e.get("kind") == kind), None) for kind in ("train", "eval")}
    metrics: dict[str, Any] = {}
    if last["train"]:
        metrics.update(step=last["train"]["step"], train_loss=last["train"].get("loss"))
        metrics.update(tokens_seen=last["train"].get("tokens_seen"))
    if last["eval"]:
        metrics.update({key: last["eval"].get(key) for key in ("val_loss", "val_ppl", "val_acc")})
    return metrics


def model_card(
    name: str, step: int, config: RunConfig, objective: Objective, metrics: dict[str, Any], dtype: str
) -> str:
    m = config.model
    huggingface = None if m.pretrained else architecture(m.arch).huggingface
    auto = objective.export_auto_class
    model_class = huggingface and (huggingface.classifier_class if objective.classifies else huggingface.model_class)
    usage = (
        (
            f"```python\nfrom transformers import {auto}, AutoTokenizer\n"
            f'model = {auto}.from_pretrained("PATH")  # {model_class}\n'
            f'tokenizer = AutoTokenizer.from_pretrained("PATH")\n```\n'
        )
        if huggingface
        else (
            f"A {m.arch} model: transformers has no class for it. The weights keep llm-studio's names; "
            "load them with llm-studio (`llm-studio generate`).\n"
        )
    )
    rows = "\n".join(f"| {key} | {value} |" for key, value in metrics.items()) or "| (no metrics logged) | |"
    return (
        f"# {name} (step {step})\n\nTrained with llm-studio: a {m.arch} model, {m.n_layer} layers, width "
        f"{m.n_embd}, context {m.block_size} tokens, vocabulary {m.vocab_size}; exported as {dtype}.\n\n"
        f"{usage}\n## Final metrics\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"## Training config\n\n```toml\n{config.to_toml()}```\n"
    )


# ---- verification ----------------------------------------------------------------------------------------
def verify_export(
    out: Path, reference: torch.nn.Module, tokenizer, prompts: list[str], eot_id: int, auto_class: str
) -> float:
    """The largest logit difference between the studio's model and transformers' reload of `out` (by `auto_class`),
    over the prompts; above TOLERANCE is a StudioError. Also checks that transformers' tokenizer encodes alike."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    auto = getattr(transformers, auto_class)
    hf_model, loading = auto.from_pretrained(str(out), dtype=torch.float32, output_loading_info=True)
    unloaded = loading["missing_keys"] or loading["unexpected_keys"]
    if unloaded:
        raise StudioError(f"export check failed: transformers did not load {sorted(unloaded)[:3]} from {out}")
    hf_model.eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    largest = 0.0
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids or [eot_id]
            hf_ids = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"] or [eot_id]
            if hf_ids != ids:
                raise StudioError(
                    f"export check failed: transformers' tokenizer encodes {prompt!r} as {hf_ids[:8]}, "
                    f"the studio's as {ids[:8]}"
                )
            x = torch.tensor([ids[-reference.cfg.block_size :]])
            diff = (hf_model(x).logits - reference(x)[0]).abs().max().item()
            largest = max(largest, diff)
    if not largest <= TOLERANCE:
        raise StudioError(
            f"export check failed: transformers' logits differ from the studio's by {largest:.2e} "
            f"(allowed {TOLERANCE:.0e}); it is not a faithful export, so it was not kept"
        )
    return largest
