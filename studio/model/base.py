"""What every architecture shares: the output head tied to the input embedding, and the parameter count."""

from __future__ import annotations

from torch import nn


class LanguageModel(nn.Module):
    """Subclasses set `self.cfg` and `self.lm_head` and say which module embeds the input tokens."""

    def input_embedding(self) -> nn.Embedding:
        raise NotImplementedError

    def tie_weights(self) -> None:
        """Share the embedding with the output head when cfg.tie_embeddings; call again after a load that
        replaces tensors (load_state_dict(assign=True)); a plain load copies in place and keeps the tie."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.input_embedding().weight

    def num_params(self) -> int:
        """Distinct parameters: `parameters()` yields a tied tensor once."""
        return sum(p.numel() for p in self.parameters())
