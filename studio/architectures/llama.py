"""Llama's facts: a decoder with RMSNorm, rotary embeddings, a SwiGLU MLP, no biases, grouped-query attention.

Its parameter names are Hugging Face LlamaForCausalLM's, so export is a plain copy of the state dict.
"""

from __future__ import annotations

from typing import Any

from studio.architectures.base import (
    Architecture,
    Gguf,
    HuggingFace,
    LinearLayer,
    ModelShape,
    attention_activations,
    untied_head,
)


def mlp_width(n_embd: int) -> int:
    """8/3·n_embd rounded up to 64: SwiGLU has three matrices instead of two, so Llama shrinks the inner width by
    2/3 to keep the parameter count of a 4·n_embd MLP; rounding to 64 keeps matmul shapes friendly."""
    return -(-(8 * n_embd // 3) // 64) * 64


def params(cfg: ModelShape, vocab: int) -> int:
    """Per layer q and o, k and v (narrower under grouped-query attention), gate up and down, two RMSNorm weights;
    the embedding, the final norm and the head."""
    d, kv = cfg.n_embd, cfg.kv_heads * cfg.head_dim
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * cfg.mlp_width + 2 * d
    return vocab * d + cfg.n_layer * per_layer + d + untied_head(cfg, vocab)


def activations_per_layer(cfg: ModelShape) -> int:
    """Attention's, the SwiGLU MLP's inner tensors (gate, silu(gate), up, product: 4·hidden), and RoPE's rotated q
    and k with RMSNorm's intermediates (~4·n_embd)."""
    return attention_activations(cfg) + 4 * cfg.mlp_width + 4 * cfg.n_embd


def linear_layers(cfg: ModelShape) -> list[LinearLayer]:
    d, kv, hidden = cfg.n_embd, cfg.kv_heads * cfg.head_dim, cfg.mlp_width
    attention = [("q_proj", d, d), ("k_proj", d, kv), ("v_proj", d, kv), ("o_proj", d, d)]
    return attention + [("gate_proj", d, hidden), ("up_proj", d, hidden), ("down_proj", hidden, d)]


def config_json(cfg: ModelShape, eot_id: int, special_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.mlp_width,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.norm_eps,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
    }


LLAMA = Architecture(
    name="llama",
    module="studio.model.llama",
    model_class="Llama",
    classifier_class="LlamaClassifier",
    params=params,
    activations_per_layer=activations_per_layer,
    mlp_width=mlp_width,
    linear_layers=linear_layers,
    grouped_query=True,
    rotary=True,
    gated_mlp=True,
    huggingface=HuggingFace("LlamaForCausalLM", "LlamaForSequenceClassification", config_json),
    gguf=Gguf("llama", rotary_pairs=True),
)
