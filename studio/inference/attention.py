"""Where a decoder looked: one layer's and one head's attention over the context, behind a chosen answer token.

A token is chosen from the logits at the position before it, so its attention is that position's row: the weights
its query gave every token of the context it was chosen after (the window before it, as generation slid).

The studio's decoders attend through SDPA, which never returns its weights: a pre-hook on the chosen layer's
attention module recomputes them from that layer's own inputs during one forward (the module's `weights`, the same
q and k as its forward). A Hugging Face model gives them as transformers does, `output_attentions` under its eager
attention (SDPA has no weights to give there either), put back as it was afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from studio.errors import StudioError
from studio.model.trainable import PretrainedLM


@dataclass(frozen=True)
class TokenAttention:
    """What one head of one layer attended to when the model chose `token`."""

    token: str
    layer: int
    head: int
    layers: int  # how many the model has, for a view that moves between them
    heads: int
    context: list[str]  # the tokens it was chosen after, first first
    weights: list[float]  # over `context`: they sum to 1


def attention_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of a decoder; a StudioError for a model without attention."""
    if isinstance(model, PretrainedLM):
        config = model.hf.config.get_text_config()
        return config.num_hidden_layers, config.num_attention_heads
    layers = model.attention_layers()
    if not layers:
        raise StudioError(f"a {model.cfg.arch} model has no attention to look at; the attention view is for decoders")
    return len(layers), model.cfg.n_head


def check_choice(model: torch.nn.Module, layer: int, head: int) -> tuple[int, int]:
    """The model's (layers, heads) once `layer` and `head` are known to be among them; a StudioError otherwise."""
    layers, heads = attention_shape(model)
    if not 0 <= layer < layers:
        raise StudioError(f"layer {layer} is out of range: the model has {layers} layers, 0 to {layers - 1}")
    if not 0 <= head < heads:
        raise StudioError(f"head {head} is out of range: each layer has {heads} heads, 0 to {heads - 1}")
    return layers, heads


@torch.inference_mode()
def attention_rows(model: torch.nn.Module, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """(T, T) in fp32: row i is query position i's attention over positions 0..i of ids (1, T)."""
    if isinstance(model, PretrainedLM):
        return pretrained_attention(model, ids, layer)[0, head].float()
    kept: list[torch.Tensor] = []
    hook = model.attention_layers()[layer].register_forward_pre_hook(
        lambda module, args, kwargs: kept.append(module.weights(*args, **kwargs)), with_kwargs=True
    )
    try:
        model(ids)
    finally:
        hook.remove()
    return kept[0][0, head]


def pretrained_attention(model: PretrainedLM, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """(1, H, T, T): one layer's attention weights from transformers."""
    hf = model.hf.get_base_model() if hasattr(model.hf, "get_base_model") else model.hf  # under a peft adapter
    kind = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        return model.hf(input_ids=ids, output_attentions=True).attentions[layer]
    finally:
        hf.set_attn_implementation(kind)


def token_attention(
    model: torch.nn.Module, tokenizer: Tokenizer, sequence: list[int], position: int, layer: int, head: int,
    block_size: int,
) -> TokenAttention:  # fmt: skip
    """The attention of `layer` and `head` behind sequence[position] (a generated token, after at least one)."""
    layers, heads = check_choice(model, layer, head)
    context = sequence[max(0, position - block_size) : position]
    device = next(model.parameters()).device
    weights = attention_rows(model, torch.tensor([context], device=device), layer, head)[-1]
    return TokenAttention(
        tokenizer.decode([sequence[position]]), layer, head, layers, heads,
        [tokenizer.decode([token]) for token in context], weights.tolist(),
    )  # fmt: skip
