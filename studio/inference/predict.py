"""`llm-studio predict`: what a model makes of a text. A classifier gives each label's probability; a masked LM
fills each [MASK] with its top-k tokens.

The model is a studio run (its checkpoint, as training left it) or a Hugging Face folder that transformers'
AutoModelForSequenceClassification or AutoModelForMaskedLM builds (an export, say); the text is encoded as in
training (for an encoder, framed as [CLS] text [SEP] by the tokenizer's own post-processor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from studio.data.prepare import open_dataset
from studio.data.tokenizer import MASK, load_tokenizer
from studio.errors import StudioError
from studio.inference.generate import classify_text, fill_masks
from studio.model.trainable import PretrainedClassifier, build_run_model
from studio.model.weights import read_checkpoint
from studio.run_folder.layout import run_or_folder, short_reason


@dataclass
class MaskedLM:
    model: torch.nn.Module  # called as model(ids) -> (logits, ...)
    tokenizer: Tokenizer
    mask_id: int
    block_size: int
    description: str

    def predict(self, text: str, top_k: int) -> dict[str, Any]:
        """{"fills": per [MASK], its top_k tokens with their probabilities}."""
        return {"fills": fill_masks(self.model, self.tokenizer, text, self.mask_id, self.block_size, top_k)}


@dataclass
class Classifier:
    model: torch.nn.Module  # called as model(ids, lengths=...) -> (logits, ...)
    tokenizer: Tokenizer
    meta: dict  # labels, and whether the tokenizer frames texts (studio.data.labeled)
    block_size: int
    description: str

    def predict(self, text: str, top_k: int) -> dict[str, Any]:
        """{"labels": the top_k labels with their probabilities, likeliest first}."""
        return {"labels": classify_text(self.model, self.tokenizer, text, self.meta, self.block_size)[:top_k]}


def load_predictor(target: str, step: int | None = None) -> MaskedLM | Classifier:
    """A classifier or a masked LM: a run's checkpoint, or a Hugging Face folder."""
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or []):
            return _load_classifier_folder(folder)
        return _load_folder(folder)
    read = read_checkpoint(run_or_folder(target), step)
    if read.config.predicts == "classify":
        run_model = build_run_model(read.config, dequantized=True)
        run_model.load_state(read.weights)
        dataset = open_dataset(read.config.data.dataset)
        description = f"run {read.path.parent.parent.name}, step {read.step}"
        tokenizer = load_tokenizer(dataset.tokenizer_path)
        context = read.config.model.block_size
        return Classifier(run_model.module.eval(), tokenizer, dataset.meta, context, description)
    if read.config.predicts is None:
        raise StudioError(
            f"run {read.path.parent.parent.name} is a {read.config.model.arch} language model, not an encoder: "
            "continue text with `llm-studio generate`"
        )
    run_model = build_run_model(read.config)
    run_model.load_state(read.weights)
    dataset = open_dataset(read.config.data.dataset)
    description = f"run {read.path.parent.parent.name}, step {read.step}"
    return MaskedLM(
        run_model.module.eval(),
        load_tokenizer(dataset.tokenizer_path),
        dataset.meta["special_ids"]["mask"],
        read.config.model.block_size,
        description,
    )


class _LogitsOf(torch.nn.Module):
    """A transformers masked LM called the studio's way: model(ids) -> (logits, None)."""

    def __init__(self, hf_model: torch.nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx: torch.Tensor):
        return self.hf(input_ids=idx).logits, None


def _load_classifier_folder(folder: Path) -> Classifier:
    from transformers import AutoModelForSequenceClassification

    hf_model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = load_tokenizer(folder / "tokenizer.json", fix="save the tokenizer there with save_pretrained")
    labels = [hf_model.config.id2label[index] for index in range(hf_model.config.num_labels)]
    context = getattr(hf_model.config, "max_position_embeddings", None) or getattr(hf_model.config, "n_positions", 512)
    model = PretrainedClassifier(hf_model)
    return Classifier(model, tokenizer, {"labels": labels, "framed": True}, context, str(folder))


def _load_folder(folder: Path) -> MaskedLM:
    from transformers import AutoModelForMaskedLM

    try:
        hf_model = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as error:
        raise StudioError(
            f"{folder} is not a masked language model transformers can build ({short_reason(error)})"
        ) from None
    tokenizer = load_tokenizer(folder / "tokenizer.json", fix="save the tokenizer there with save_pretrained")
    mask_id = tokenizer.token_to_id(MASK)
    if mask_id is None:
        raise StudioError(f"{folder}: the tokenizer has no {MASK} token; it is not a masked LM's tokenizer")
    context = getattr(hf_model.config, "max_position_embeddings", 512)
    return MaskedLM(_LogitsOf(hf_model), tokenizer, mask_id, context, str(folder))
