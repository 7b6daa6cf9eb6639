"""A Llama-style decoder: RMSNorm, rotary embeddings, SwiGLU, no biases, attention through SDPA.

Parameter names are Hugging Face LlamaForCausalLM's and rotary embeddings use its rotate-half layout, so
export is a plain copy of the state dict (checked logit for logit in tests/test_model.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio.config import ModelConfig
from studio.model import init_weights, lm_loss
from studio.model.base import LanguageModel, LastTokenClassifier
from studio.model.kv_cache import KVCache, attend, attention_weights, packed_mask
from studio.model.readout import Readout
from studio.model.recompute import gated_product


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In fp32 as Hugging Face does: the mean of squares overflows or loses precision in 16 bits.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_tables(
    seq_len: int, head_dim: int, theta: float, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (seq_len, head_dim), fp32. Recomputed per forward (cheap) so a bf16 cast of the
    model never rounds the angles of far positions."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # rotate-half layout: frequencies repeat across the halves
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (first half, second half) pairs of x (B, H, T, D) by position-dependent angles."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer  # its slot in a KV cache
        self.n_head, self.kv_heads, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        kv_width = cfg.kv_heads * cfg.head_dim  # grouped-query attention: fewer key/value heads, each shared
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, kv_width, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, kv_width, bias=False)
        self.o_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, T, D), k and v (B, H_kv, T, D) of x (B, T, C), q and k rotated to their positions."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2) for proj in (self.k_proj, self.v_proj))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.project(x, cos, sin)
        y = attend(q, k, v, self.dropout if self.training else 0.0, cache, self.layer, start, mask)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))

    def weights(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache=None, start=0, mask=None):
        """The attention weights (B, H, T, T) this layer gives x, called with forward's arguments (no cache)."""
        q, k, _ = self.project(x, cos, sin)
        return attention_weights(q, k, mask)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); with recompute_product (train.lean_activations) the product is recomputed
    in the backward (studio.model.recompute)."""

    recompute_product = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_width
        self.gate_proj = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product = gated_product(F.silu, self.gate_proj(x), self.up_proj(x), self.recompute_product)
        return self.dropout(self.down_proj(product))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = nn.ModuleDict(
            dict(  # Hugging Face's LlamaModel, so names read model.layers.0...
                embed_tokens=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                layers=nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layer)),
                norm=RMSNorm(cfg.n_embd, cfg.norm_eps),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        init_weights(self, cfg.n_layer)
        self.tie_weights()

    def input_embedding(self) -> nn.Embedding:
        return self.model.embed_tokens

    def attention_layers(self) -> list[Attention]:
        return [block.self_attn for block in self.model.layers]

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch` sequences of up to max_len (default block_size) tokens."""
        weight = self.model.embed_tokens.weight
        cache = KVCache.for_model(self.cfg, batch, max_len, weight, dtype)
        cache.rope = rope_tables(cache.max_len, self.cfg.head_dim, self.cfg.rope_theta, weight.device)
        return cache

    def final_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final norm's output at every position of idx (B, T); with a cache, idx continues the `start`
        positions already stored in it (their keys and values are read, not recomputed). Packed rows give
        `positions` (B, T), restarting at 0 for each example: rotations follow them, attention stays inside."""
        T = idx.size(1)
        assert start + T <= self.cfg.block_size, (
            f"sequence of {start + T} tokens is longer than block_size {self.cfg.block_size}"
        )
        mask = None
        if positions is not None:
            tables = rope_tables(self.cfg.block_size, self.cfg.head_dim, self.cfg.rope_theta, idx.device)
            cos, sin = (table[positions].unsqueeze(1) for table in tables)  # (B, 1, T, D): per row
            mask = packed_mask(positions)
        elif cache is None:
            cos, sin = rope_tables(T, self.cfg.head_dim, self.cfg.rope_theta, idx.device)
        else:
            cos, sin = (table[start : start + T] for table in cache.rope)
        x = self.model.embed_tokens(idx)
        for block in self.model.layers:
            x = self.run_block(block, x, cos, sin, cache, start, mask)
        return self.model.norm(x)

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


class LlamaClassifier(LastTokenClassifier, Llama):
    """The decoder with a `score` head: Hugging Face LlamaForSequenceClassification's layout."""
