"""GPT-2's facts: a decoder in nanoGPT's layout, with learned positions, pre-LayerNorm, fused qkv and a tanh-GELU
MLP; biases when model.bias is set.

Its parameter names are nanoGPT's, which are GPT2LMHeadModel's but for the four Conv1D weights, which Hugging
Face stores transposed (Conv1D keeps (in, out), nn.Linear (out, in)); and GPT2LMHeadModel always has biases.
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

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_ACTIVATIONS = {"gelu": "gelu_new", "relu2": "relu2"}  # model.activation -> GPT2Config.activation_function
LAYER_BIASES = ("ln_1.bias", "ln_2.bias", "attn.c_attn.bias", "attn.c_proj.bias", "mlp.c_fc.bias", "mlp.c_proj.bias")


def params(cfg: ModelShape, vocab: int) -> int:
    """Per layer the fused qkv and its projection, the MLP's two matrices, two LayerNorm weights, and with
    model.bias their biases; the token and position tables, the final LayerNorm and the head."""
    d, hidden, bias = cfg.n_embd, cfg.mlp_width, cfg.bias
    # c_attn, attn.c_proj, c_fc, mlp.c_proj, ln_1/ln_2
    per_layer = 4 * d * d + 2 * d * hidden + 2 * d + bias * (3 * d + d + hidden + d + 2 * d)
    return vocab * d + cfg.block_size * d + cfg.n_layer * per_layer + d + bias * d + untied_head(cfg, vocab)


def activations_per_layer(cfg: ModelShape) -> int:
    """Attention's, and the GELU MLP's inner tensors (before and after the GELU: 2·hidden)."""
    return attention_activations(cfg) + 2 * cfg.mlp_width


def linear_layers(cfg: ModelShape) -> list[LinearLayer]:
    d, hidden = cfg.n_embd, cfg.mlp_width
    return [("c_attn", d, 3 * d), ("c_proj", d, d), ("c_fc", d, hidden), ("c_proj", hidden, d)]


def config_json(cfg: ModelShape, eot_id: int, special_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "model_type": "gpt2",
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_inner": cfg.mlp_width,
        "activation_function": HF_ACTIVATIONS[cfg.activation],
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
    }


def zero_biases(cfg: ModelShape) -> list[str]:
    """Every bias GPT2LMHeadModel has, when the model has none."""
    if cfg.bias:
        return []
    layers = [f"transformer.h.{layer}.{suffix}" for layer in range(cfg.n_layer) for suffix in LAYER_BIASES]
    return [*layers, "transformer.ln_f.bias"]


GPT2 = Architecture(
    name="gpt2",
    module="studio.model.gpt2",
    model_class="GPT2",
    classifier_class="GPT2Classifier",
    params=params,
    activations_per_layer=activations_per_layer,
    mlp_width=lambda n_embd: 4 * n_embd,
    linear_layers=linear_layers,
    learned_positions=True,
    huggingface=HuggingFace(
        "GPT2LMHeadModel", "GPT2ForSequenceClassification", config_json, transposed=CONV1D, zero_biases=zero_biases
    ),
    gguf=Gguf("gpt2", transposed=CONV1D, gelu_f16_table=True),
)
