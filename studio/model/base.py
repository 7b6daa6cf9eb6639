"""What every architecture shares: the output head tied to the input embedding, and the parameter count."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from studio.model.readout import OutputHead, Readout


class LanguageModel(nn.Module):
    """Subclasses set `self.cfg` and say which module embeds the input tokens and which is the output head."""

    HEAD = "lm_head.weight"  # the output head's weight; tied to the embedding, a checkpoint stores it once
    checkpoint_blocks = False  # train.activation_checkpointing (set by run_model): blocks recomputed in the backward

    def run_block(self, block: nn.Module, *args) -> torch.Tensor:
        """block(*args); when checkpointing blocks while training with gradients, through torch.utils.checkpoint,
        which keeps only the block's inputs and runs it again in the backward (non-reentrant: the same dropout
        masks, and it works on a frozen base whose inputs need no gradient)."""
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def input_embedding(self) -> nn.Embedding:
        raise NotImplementedError

    def attention_layers(self) -> list[nn.Module]:
        """Each block's attention module, the first layer's first, for the attention view (studio.inference.attention):
        each has `weights`, called as its forward is. None for a model without attention (the recurrent ones)."""
        return []

    def output_head(self) -> nn.Linear:
        return self.lm_head

    def head(self) -> OutputHead:
        """The output head as a loss reads it without whole logits (studio.model.readout)."""
        head = self.output_head()
        return OutputHead(head.weight, head.bias)

    def output(self, hidden: torch.Tensor, readout: Readout | None) -> torch.Tensor:
        """The logits of the final states, or what `readout` reads from them through the head instead. Whole logits
        come from the head module itself, so what hooks on it sees them (Opacus takes each example's gradient so)."""
        if readout is None:
            return self.output_head()(hidden)
        return readout.of_logits(self.output_head()(hidden)) if readout.whole else readout(hidden, self.head())

    def tie_weights(self) -> None:
        """Share the embedding with the output head when cfg.tie_embeddings; call again after a load that
        replaces tensors (load_state_dict(assign=True)); a plain load copies in place and keeps the tie."""
        if self.cfg.tie_embeddings:
            self.output_head().weight = self.input_embedding().weight

    def num_params(self) -> int:
        """Distinct parameters: `parameters()` yields a tied tensor once."""
        return sum(p.numel() for p in self.parameters())


def last_states(hidden: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(B, C): each row's state at its last token (rows are right-padded after `lengths` tokens)."""
    if lengths is None:
        return hidden[:, -1]
    return hidden[torch.arange(hidden.size(0), device=hidden.device), lengths - 1]


class LastTokenClassifier:
    """Mixed into a decoder or recurrent model (before it): a `score` head on the state at each row's last token
    replaces the language-model head, as in Hugging Face's *ForSequenceClassification decoders. The model says what
    its final states are (`final_states`)."""

    HEAD = ""  # no output head shares the embedding

    def __init__(self, cfg, num_labels: int):
        super().__init__(cfg)
        del self.lm_head
        self.score = nn.Linear(cfg.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    def tie_weights(self) -> None:
        pass

    def forward(self, idx: torch.Tensor, targets: None = None, lengths: torch.Tensor | None = None):
        return self.score(last_states(self.final_states(idx), lengths)), None
