"""A GPT-2 decoder in nanoGPT's layout: learned positions, pre-LayerNorm, fused qkv, tanh-GELU MLP.

Names follow nanoGPT (transformer.h.0.attn.c_attn...), which are GPT2LMHeadModel's once the four Conv1D
weights (c_attn, attn.c_proj, c_fc, mlp.c_proj) are transposed: here they are nn.Linear (out, in).
"""

from __future__ import annotations

import torch
from torch import nn

from studio.config import ModelConfig
from studio.model import init_weights, lm_loss
from studio.model.base import LanguageModel, LastTokenClassifier
from studio.model.kv_cache import KVCache, attend, attention_weights, packed_mask
from studio.model.readout import Readout


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer  # its slot in a KV cache
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v (B, H, T, D) of x (B, T, C)."""
        B, T, C = x.shape
        heads = (t.view(B, T, self.n_head, C // self.n_head) for t in self.c_attn(x).split(C, dim=2))
        return tuple(t.transpose(1, 2) for t in heads)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, start: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.project(x)
        y = attend(q, k, v, self.dropout if self.training else 0.0, cache, self.layer, start, mask)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))

    def weights(self, x: torch.Tensor, cache=None, start=0, mask=None) -> torch.Tensor:
        """The attention weights (B, H, T, T) this layer gives x, called with forward's arguments (no cache)."""
        q, k, _ = self.project(x)
        return attention_weights(q, k, mask)


class ReLUSquared(nn.Module):
    """relu(x)²: Hugging Face's "relu2" (ACT2FN), modded-nanogpt's MLP activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_width
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.act = ReLUSquared() if cfg.activation == "relu2" else nn.GELU(approximate="tanh")  # GELU: "gelu_new"
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, start: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, start, mask)
        return x + self.mlp(self.ln_2(x))


class GPT2(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        init_weights(self, cfg.n_layer)
        self.tie_weights()

    def input_embedding(self) -> nn.Embedding:
        return self.transformer.wte

    def attention_layers(self) -> list[CausalSelfAttention]:
        return [block.attn for block in self.transformer.h]

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch` sequences of up to max_len (default block_size) tokens."""
        return KVCache.for_model(self.cfg, batch, max_len, self.transformer.wte.weight, dtype)

    def final_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final LayerNorm's output at every position of idx (B, T); with a cache, idx continues the `start`
        positions already stored in it (their keys and values are read, not recomputed). Packed rows give
        `positions` (B, T), restarting at 0 for each example: attention stays inside each."""
        T = idx.size(1)
        assert start + T <= self.cfg.block_size, (
            f"sequence of {start + T} tokens is longer than block_size {self.cfg.block_size}"
        )
        pos = torch.arange(start, start + T, device=idx.device) if positions is None else positions
        mask = None if positions is None else packed_mask(positions)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = self.run_block(block, x, cache, start, mask)
        return self.transformer.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        positions: torch.Tensor | None = None,
        readout: Readout | None = None,
    ):
        """Logits (and the loss given targets) of idx (B, T): final_states through the LM head; with a readout,
        what it reads from them instead (a loss without whole logits)."""
        logits = self.output(self.final_states(idx, cache, start, positions), readout)
        return logits, None if targets is None else lm_loss(logits, targets)


class GPT2Classifier(LastTokenClassifier, GPT2):
    """The decoder with a `score` head: Hugging Face GPT2ForSequenceClassification's layout."""
