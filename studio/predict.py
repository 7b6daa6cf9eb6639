"""`llm-studio predict`: what an encoder makes of a text. A masked LM fills each [MASK] with its top-k tokens.

The model is a studio run of an encoder (its checkpoint, as training left it) or a Hugging Face folder that
transformers' AutoModelForMaskedLM builds (an export, say); the text is framed as [CLS] text [SEP] by the
tokenizer's own post-processor, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from studio.data.prepare import open_dataset
from studio.data.tokenizer import MASK, load_tokenizer
from studio.errors import StudioError
from studio.generate import fill_masks
from studio.run_folder.layout import run_or_folder, short_reason
from studio.run_model import build_run_model
from studio.weights import read_checkpoint


@dataclass
class MaskedLM:
    model: torch.nn.Module  # called as model(ids) -> (logits, ...)
    tokenizer: Tokenizer
    mask_id: int
    block_size: int
    description: str

    def fill(self, text: str, top_k: int) -> list[list[tuple[str, float]]]:
        return fill_masks(self.model, self.tokenizer, text, self.mask_id, self.block_size, top_k)


def load_masked_lm(target: str, step: int | None = None) -> MaskedLM:
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        return _load_folder(folder)
    read = read_checkpoint(run_or_folder(target), step)
    if not read.config.model.encoder:
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
