"""BERT's facts: an encoder with learned positions and token types, post-LayerNorm blocks and an exact-GELU MLP,
with its masked-LM head; its classifier swaps that head for BERT's pooler and a `classifier`.

Its parameter names are Hugging Face BertForMaskedLM's (BertForSequenceClassification's for the classifier), so
export is a plain copy of the state dict.
"""

from __future__ import annotations

from typing import Any

from studio.architectures.base import Architecture, HuggingFace, ModelShape, attention_activations, untied_head

TYPE_VOCAB = 2  # token types (segment A and B), as BERT has


def params(cfg: ModelShape, vocab: int) -> int:
    """Word, position and token-type embeddings and their LayerNorm; per layer q k v and the attention output (with
    biases), two LayerNorms, the MLP (with biases); the masked-LM head."""
    d, hidden = cfg.n_embd, cfg.mlp_width
    embeddings = vocab * d + cfg.block_size * d + TYPE_VOCAB * d + 2 * d
    per_layer = 4 * d * d + 4 * d + 2 * 2 * d + d * hidden + hidden + hidden * d + d
    return embeddings + cfg.n_layer * per_layer + lm_head_params(cfg, vocab)


def lm_head_params(cfg: ModelShape, vocab: int) -> int:
    """The masked-LM head: its transform (dense, LayerNorm), the decoder (the word embedding when tied) and its
    bias."""
    d = cfg.n_embd
    return d * d + d + 2 * d + vocab + untied_head(cfg, vocab)


def classifier_head_params(cfg: ModelShape, labels: int) -> int:
    """The pooler (dense on [CLS]) and the classifier, both with biases."""
    d = cfg.n_embd
    return d * d + d + d * labels + labels


def activations_per_layer(cfg: ModelShape) -> int:
    """Attention's, and the GELU MLP's inner tensors (before and after the GELU: 2·hidden)."""
    return attention_activations(cfg) + 2 * cfg.mlp_width


def config_json(cfg: ModelShape, eot_id: int, special_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "model_type": "bert",
        "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.mlp_width,
        "hidden_act": "gelu",
        "max_position_embeddings": cfg.block_size,
        "type_vocab_size": TYPE_VOCAB,
        "layer_norm_eps": cfg.norm_eps,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "pad_token_id": special_ids["pad"],
    }


BERT = Architecture(
    name="bert",
    module="studio.model.bert",
    model_class="Bert",
    classifier_class="BertClassifier",
    params=params,
    activations_per_layer=activations_per_layer,
    mlp_width=lambda n_embd: 4 * n_embd,
    lm_head_params=lm_head_params,
    classifier_head_params=classifier_head_params,
    encoder=True,
    learned_positions=True,
    huggingface=HuggingFace("BertForMaskedLM", "BertForSequenceClassification", config_json),
)
