"""A BERT encoder with its masked-LM head: learned positions and token types, post-LayerNorm blocks, exact GELU.

Every attention is bidirectional. Parameter names are Hugging Face BertForMaskedLM's, so export is a plain copy
of the state dict (checked logit for logit in tests/test_encoder.py); the output decoder shares the word
embedding (stored once) and adds a bias of its own, as BERT's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio.architectures.bert import TYPE_VOCAB
from studio.config import ModelConfig
from studio.model import init_weights, lm_loss
from studio.model.base import LanguageModel
from studio.model.readout import OutputHead, Readout


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position_embeddings = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, cfg.n_embd)
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, idx: torch.Tensor, token_types: torch.Tensor | None) -> torch.Tensor:
        positions = torch.arange(idx.size(1), device=idx.device)
        types = torch.zeros_like(idx) if token_types is None else token_types
        x = self.word_embeddings(idx) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for proj in self.projections())
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, C)

    def projections(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.query, self.key, self.value


class AddNorm(nn.Module):
    """BERT's post-LN residual: LayerNorm(x + dropout(dense(y)))."""

    def __init__(self, fan_in: int, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(fan_in, cfg.n_embd)
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(self.dense(y)))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AddNorm(cfg.n_embd, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU: Hugging Face's "gelu"


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.mlp_width, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class PredictionHead(nn.Module):
    """cls.predictions: a dense + GELU + LayerNorm transform, then the decoder (the word embedding) and a bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = nn.ModuleDict(
            dict(dense=nn.Linear(cfg.n_embd, cfg.n_embd), LayerNorm=nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps))
        )
        self.decoder = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def transformed(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder reads: the dense + GELU + LayerNorm transform of the final states."""
        return self.transform.LayerNorm(F.gelu(self.transform.dense(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transformed(x)) + self.bias


class Bert(LanguageModel):
    HEAD = "cls.predictions.decoder.weight"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.bert = nn.ModuleDict(
            dict(
                embeddings=Embeddings(cfg),
                encoder=nn.ModuleDict(dict(layer=nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer)))),
            )
        )
        self.cls = nn.ModuleDict(dict(predictions=PredictionHead(cfg)))
        init_weights(self, cfg.n_layer)
        self.tie_weights()

    def input_embedding(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def output_head(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def head(self) -> OutputHead:
        return OutputHead(self.cls.predictions.decoder.weight, self.cls.predictions.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_types: torch.Tensor | None = None,
        readout: Readout | None = None,
    ):
        """Logits at every position of idx (B, T) (and the loss on the targets given, IGNORE elsewhere), or what a
        readout reads from the transformed states through the decoder; attention_mask (B, T): 1 for tokens, 0 for
        padding that no position attends to."""
        assert idx.size(1) <= self.cfg.block_size, f"{idx.size(1)} tokens: longer than block_size {self.cfg.block_size}"
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.bert.embeddings(idx, token_types)
        for layer in self.bert.encoder.layer:
            x = self.run_block(layer, x, mask)
        if readout is not None:
            return readout(self.cls.predictions.transformed(x), self.head()), None
        logits = self.cls.predictions(x)
        return logits, None if targets is None else lm_loss(logits, targets)


class BertClassifier(Bert):
    """The encoder with BERT's pooler (dense + tanh on [CLS]) and a `classifier`, instead of the masked-LM head:
    Hugging Face BertForSequenceClassification's layout."""

    HEAD = ""  # no output head shares the embedding

    def __init__(self, cfg: ModelConfig, num_labels: int):
        super().__init__(cfg)
        del self.cls
        self.bert["pooler"] = nn.ModuleDict(dict(dense=nn.Linear(cfg.n_embd, cfg.n_embd)))
        self.classifier = nn.Linear(cfg.n_embd, num_labels)
        init_weights(self.bert.pooler, cfg.n_layer)
        init_weights(self.classifier, cfg.n_layer)

    def tie_weights(self) -> None:
        pass

    def forward(self, idx: torch.Tensor, targets: None = None, lengths: torch.Tensor | None = None):
        """Logits (B, num_labels) from [CLS]; rows shorter than the batch are padding after `lengths` tokens."""
        mask = None
        if lengths is not None:
            mask = (torch.arange(idx.size(1), device=idx.device) < lengths[:, None])[:, None, None, :]
        x = self.bert.embeddings(idx, None)
        for layer in self.bert.encoder.layer:
            x = self.run_block(layer, x, mask)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(pooled), None
