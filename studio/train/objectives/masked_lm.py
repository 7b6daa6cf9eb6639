"""Masked tokens (BERT's objective): random windows framed as [CLS] … [SEP] with BERT's masking drawn from the
run's data generator; evaluated as the next token is (loss, perplexity, masked-token accuracy); sampled as the
top fills of each [MASK] of a prompt."""

from __future__ import annotations

import torch

from studio.data.batches import MaskedWindowStream, TokenFile
from studio.data.tokenizer import MASK
from studio.inference.generate import fill_masks, fills_text
from studio.train.objectives import causal_lm


class Objective(causal_lm.Objective):
    def batches(self, split: str, shuffle: bool) -> MaskedWindowStream:
        context, dataset = self.context, self.context.dataset
        tokens = TokenFile(dataset.bin_path(split), dataset.dtype)
        special = {**dataset.meta.special_ids, "eot": dataset.eot_id}
        return MaskedWindowStream(
            tokens, context.config.train.batch_size, context.block_size, special, dataset.vocab_size, context.rank,
            context.world,
        )  # fmt: skip

    def sample(self, model: torch.nn.Module, prompt: str, generator: torch.Generator) -> dict[str, str]:
        """The top 5 fills of each [MASK] of the prompt (one is added at its end if it has none)."""
        context = self.context
        text = prompt if MASK in prompt else prompt + MASK
        mask_id = context.dataset.meta.special_ids["mask"]
        with context.accelerator.autocast():
            fills = fill_masks(model, context.tokenizer, text, mask_id, context.block_size)
        return {"prompt": text, "text": " → " + fills_text(fills)}
