"""The decoders' KV cache: keys and values of every layer, preallocated for the whole context.

Decoding writes one position per step in place (no torch.cat, no reallocation), and attention reads the
filled prefix as a view. `attend` is the one attention call both decoders make, with or without a cache;
`attention_weights` is what it weighs the values by, computed in the open for the attention view.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None  # llama: cos/sin for every position, once

    @classmethod
    def for_model(
        cls, cfg, batch: int, max_len: int | None, like: torch.Tensor, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache for a decoder of config cfg, on the device (and by default in the dtype) of `like`; it
        holds the key/value heads only (fewer than the attention heads under grouped-query attention)."""
        return cls(
            cfg.n_layer, batch, cfg.kv_heads, max_len or cfg.block_size, cfg.head_dim, dtype or like.dtype, like.device
        )

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) at positions start..start+T; return every position's keys and values so far."""
        end = start + k.size(2)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def packed_mask(positions: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T): causal attention that stays inside each example of packed rows. An example starts wherever
    the positions (B, T) do not go up by one (the rule transformers applies to packed position ids too)."""
    starts = torch.ones_like(positions, dtype=torch.bool)
    starts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    segment = starts.cumsum(1)
    causal = torch.ones(positions.size(1), positions.size(1), dtype=torch.bool, device=positions.device).tril()
    return ((segment[:, :, None] == segment[:, None, :]) & causal)[:, None]


# PyTorch's fused attention on a CPU is slower in 16 bits than in fp32 over short sequences: bf16's forward and
# backward measured 1.1-2.3x the time of the same in fp32 up to 256 keys, and 0.8-1.0x from 512 (torch 2.13, 2 cores
# of an AMD EPYC with AVX512-BF16, 8 heads of 32 and 64, 4096 tokens a batch). So there it runs in fp32.
CPU_FP32_ATTENTION_BELOW = 512


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float,
    cache: KVCache | None,
    layer: int,
    start: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of q (B, H, T, D) over k, v (B, H_kv, T, D); with a cache, over every position stored before
    too; with a mask (packed rows, no cache), as the mask allows. On a CPU, 16-bit q, k, v over fewer than
    CPU_FP32_ATTENTION_BELOW keys are attended in fp32 (autocast off) and the output cast back: faster there, and
    fp32's rounding."""
    if cache is not None:
        k, v = cache.update(layer, start, k, v)
        k, v = k.to(q.dtype), v.to(q.dtype)  # under autocast q may be 16-bit while the cache keeps the weights' dtype
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and k.size(2) < CPU_FP32_ATTENTION_BELOW:
        with torch.autocast("cpu", enabled=False):
            return _attend(q.float(), k.float(), v.float(), dropout_p, cache is not None, start, mask).to(q.dtype)
    return _attend(q, k, v, dropout_p, cache is not None, start, mask)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float,
    cached: bool,
    start: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """`attend`'s SDPA call. Under grouped-query attention (H_kv < H) each key/value head serves H / H_kv consecutive
    query heads: SDPA's enable_gqa shares them without copying each H / H_kv times (the same results; attention's
    forward and backward ~25% faster on a CPU at H / H_kv = 4)."""
    sdpa = partial(F.scaled_dot_product_attention, enable_gqa=k.size(1) != q.size(1))
    if mask is not None:
        return sdpa(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if not cached:
        return sdpa(q, k, v, dropout_p=dropout_p, is_causal=True)
    T = q.size(2)
    if T == 1:  # one new position sees all earlier ones: no mask at all
        return sdpa(q, k, v)
    if start == 0:
        return sdpa(q, k, v, is_causal=True)
    mask = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start)
    return sdpa(q, k, v, attn_mask=mask)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, T, T) in fp32: each query position's weights over the keys, as `attend` uses them without a cache
    (softmax(q kᵀ / √d) under the causal mask, or the packed rows' mask). SDPA never returns them, so the
    attention view recomputes them from the layer's own q and k; each key/value head serves H / H_kv query heads."""
    k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.size(-1))
    T = q.size(2)
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril() if mask is None else mask
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)
