"""Recurrent baselines: embedding -> LSTM or tanh RNN (n_layer layers, width n_embd) -> linear head.

Each forward starts from a zero state: training samples random windows, so no state carries over.
"""

from __future__ import annotations

import torch
from torch import nn

from studio.config import ModelConfig
from studio.model import init_weights, lm_loss
from studio.model.base import LanguageModel, LastTokenClassifier
from studio.model.readout import Readout


class RecurrentLM(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        rnn_class = nn.LSTM if cfg.arch == "lstm" else nn.RNN  # nn.RNN's nonlinearity is tanh by default
        between_layers = cfg.dropout if cfg.n_layer > 1 else 0.0  # nn.LSTM warns about dropout with one layer
        self.rnn = rnn_class(cfg.n_embd, cfg.n_embd, num_layers=cfg.n_layer, dropout=between_layers, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)  # on the input and output too (Zaremba et al.), so one layer regularises
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Embedding and head get GPT-2's N(0, 0.02); the recurrent weights keep PyTorch's uniform
        # ±1/sqrt(n_embd), the usual recurrent init, which keeps the state from vanishing at the start.
        init_weights(self, cfg.n_layer)
        self.tie_weights()

    def input_embedding(self) -> nn.Embedding:
        return self.embed

    def final_states(self, idx: torch.Tensor) -> torch.Tensor:
        x, _ = self.rnn(self.drop(self.embed(idx)))  # no initial state given: zeros
        return self.drop(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, readout: Readout | None = None):
        logits = self.output(self.final_states(idx), readout)
        return logits, None if targets is None else lm_loss(logits, targets)


class RecurrentClassifier(LastTokenClassifier, RecurrentLM):
    """The recurrent model with a `score` head on the state after each row's last token."""
