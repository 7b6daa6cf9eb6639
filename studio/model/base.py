"""What every architecture shares: the output head tied to the input embedding, and the parameter count."""

from __future__ import annotations

from torch import nn


class LanguageModel(nn.Module):
    """Subclasses set `self.cfg` and say which module embeds the input tokens and which is the output head."""

    HEAD = "lm_head.weight"  # the output head's weight; tied to the embedding, a checkpoint stores it once

    def input_embedding(self) -> nn.Embedding:
        raise NotImplementedError

    def output_head(self) -> nn.Linear:
        return self.lm_head

    def tie_weights(self) -> None:
        """Share the embedding with the output head when cfg.tie_embeddings; call again after a load that
        replaces tensors (load_state_dict(assign=True)); a plain load copies in place and keeps the tie."""
        if self.cfg.tie_embeddings:
            self.output_head().weight = self.input_embedding().weight

    def num_params(self) -> int:
        """Distinct parameters: `parameters()` yields a tied tensor once."""
        return sum(p.numel() for p in self.parameters())
