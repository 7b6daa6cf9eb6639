"""`llm-studio predict`: what a model makes of a text. A classifier gives each label's probability; a masked LM
fills each [MASK] with its top-k tokens.

The model is a studio run (its checkpoint, as training left it) or a Hugging Face folder that transformers'
AutoModelForSequenceClassification or AutoModelForMaskedLM builds (an export, say), loaded by
studio.inference.load; the text is encoded as in training (for an encoder, framed as [CLS] text [SEP] by the
tokenizer's own post-processor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer

from studio.inference.generate import classify_text, fill_masks
from studio.inference.load import LoadedModel, load_model


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
    labels: list[str]  # in the order of the model's outputs
    framed: bool  # whether the tokenizer adds the model's special tokens around a text (studio.data.labeled)
    block_size: int
    description: str

    def predict(self, text: str, top_k: int) -> dict[str, Any]:
        """{"labels": the top_k labels with their probabilities, likeliest first}."""
        ranked = classify_text(self.model, self.tokenizer, text, self.labels, self.framed, self.block_size)
        return {"labels": ranked[:top_k]}


# what each objective's `predicts` asks of a loaded model (studio.objectives)
PREDICTORS: dict[str, Callable[[LoadedModel], MaskedLM | Classifier]] = {
    "fill-mask": lambda loaded: MaskedLM(
        loaded.model, loaded.tokenizer, loaded.mask_id, loaded.context, loaded.description
    ),
    "classify": lambda loaded: Classifier(
        loaded.model, loaded.tokenizer, loaded.labels, loaded.framed, loaded.context, loaded.description
    ),
}


def load_predictor(target: str, step: int | None = None) -> MaskedLM | Classifier:
    """A classifier or a masked LM: a run's checkpoint, or a Hugging Face folder (studio.inference.load)."""
    loaded = load_model(target, step, use="predict")
    return PREDICTORS[loaded.objective.predicts](loaded)
