"""Sampling text from a model: temperature, top-k, top-p, repetition penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0: greedy
    top_k: int = 50  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off


def next_token_distribution(logits: torch.Tensor, history: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Probabilities over the vocabulary (B, V) from the last position's logits (B, V)."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0:  # CTRL's rule: make tokens already present less likely
        seen = torch.gather(logits, 1, history)
        seen = torch.where(seen > 0, seen / sampling.repetition_penalty, seen * sampling.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:  # nucleus: keep the smallest set of tokens whose mass reaches top_p
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@torch.no_grad()
def sample(model: torch.nn.Module, ids: torch.Tensor, block_size: int, sampling: SamplingConfig,
           generator: torch.Generator | None = None, stop_id: int | None = None) -> torch.Tensor:
    """Extend `ids` (B, T) by up to max_new_tokens tokens; returns only the new tokens (B, N)."""
    start = ids.size(1)
    for _ in range(sampling.max_new_tokens):
        logits, _ = model(ids[:, -block_size:])
        last = logits[:, -1, :]
        if sampling.temperature == 0:
            token = last.argmax(-1, keepdim=True)
        else:
            probs = next_token_distribution(last, ids, sampling)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, token], dim=1)
        if stop_id is not None and bool((token == stop_id).all()):
            break
    return ids[:, start:]
