"""What an architecture's facts are: the `Architecture` record each facts module fills in, and the rules several
architectures share.

The facts read a model config without importing its class (studio.config reads the facts, so the import goes
one way): `ModelShape` names what they read of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

LinearLayer = tuple[str, int, int]  # (name, in, out) of a linear layer, as LoRA sees it


class ModelShape(Protocol):
    """What the facts read of a model config (studio.config.ModelConfig)."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    tie_embeddings: bool
    bias: bool
    activation: str
    rope_theta: float
    norm_eps: float

    @property
    def mlp_width(self) -> int: ...

    @property
    def kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...


def untied_head(cfg: ModelShape, vocab: int) -> int:
    """An output head without a bias: nothing of its own when it is the embedding (tied)."""
    return 0 if cfg.tie_embeddings else vocab * cfg.n_embd


def score_head(cfg: ModelShape, labels: int) -> int:
    """Hugging Face's decoder classifiers' `score`: a linear layer without a bias on the last token's state."""
    return cfg.n_embd * labels


@dataclass(frozen=True)
class HuggingFace:
    """How an architecture leaves as a Hugging Face folder that transformers loads as is (studio.export)."""

    model_class: str  # config.json's "architectures" of a language model, e.g. LlamaForCausalLM
    classifier_class: str  # the same for a classification run, e.g. LlamaForSequenceClassification
    # config.json's fields of the model class (export adds the class, the vocabulary, tying and dtype), from the
    # model config, the end-of-text token's id and the dataset's special tokens' ids
    config_json: Callable[[ModelShape, int, dict[str, int]], dict[str, Any]]
    # the ends of the names of weights Hugging Face stores transposed (GPT-2's Conv1D keeps (in, out))
    transposed: tuple[str, ...] = ()
    # names of the biases the Hugging Face class always has, which the studio's model of this config lacks: they
    # are exported as zeros
    zero_biases: Callable[[ModelShape], list[str]] = lambda cfg: []


@dataclass(frozen=True)
class Gguf:
    """How a model leaves as a GGUF file that llama.cpp runs (studio.export.gguf), from its Hugging Face layout
    (the weights under Hugging Face's names, and config.json): what llama.cpp's converter does for its family."""

    arch: str  # llama.cpp's architecture (a value of gguf.MODEL_ARCH_NAMES), which also names its tensors
    # llama.cpp's llama rotates adjacent pairs of q and k where Hugging Face's Llama rotates their two halves: the
    # rows of q_proj and k_proj are reordered to match (the converter's `permute`)
    rotary_pairs: bool = False
    # the ends of the names of weights Hugging Face stores (in, out), which GGUF keeps (out, in): GPT-2's Conv1D
    transposed: tuple[str, ...] = ()
    # whether llama.cpp's loader of it has sliding-window attention: without it, a config whose window is shorter
    # than its context would be run with full attention, which is another model
    sliding_window: bool = False
    # added to the RMSNorm weights: Gemma's norm multiplies by 1 + weight, llama.cpp's by the weight
    norm_shift: float = 0.0
    # whether its MLP has a tanh GELU, which llama.cpp's CPU backend looks up in a table of f16 results by the
    # input rounded to f16 (ggml's GGML_GELU_FP16), whatever the file's type: no GGUF key changes it, so an f32
    # file's logits are off by f16's rounding of the activations, not by f32's
    gelu_f16_table: bool = False


@dataclass(frozen=True)
class Architecture:
    """One of the studio's own architectures as data: what builds it, its sizes, and how it is exported."""

    name: str  # model.arch
    module: str  # the torch module that builds it
    model_class: str  # its language model's class there
    classifier_class: str  # its text classifier's class there
    # parameters, exact: the language model's at a vocabulary size
    params: Callable[[ModelShape, int], int]
    # activation values per token that one layer keeps for the backward (studio.sizing.sizes' memory estimate)
    activations_per_layer: Callable[[ModelShape], int]
    # the MLP's inner width from the width, when model.mlp_hidden is 0 (0: no MLP)
    mlp_width: Callable[[int], int] = lambda n_embd: 0
    # parameters of the language model's output head (at a vocabulary size), which a classifier drops
    lm_head_params: Callable[[ModelShape, int], int] = untied_head
    # parameters of the classifier's head (at a number of labels), which replaces the language model's
    classifier_head_params: Callable[[ModelShape, int], int] = score_head
    # one layer's linear layers (the output head is not one); LoRA adapts them
    linear_layers: Callable[[ModelShape], list[LinearLayer]] = lambda cfg: []
    recurrent: bool = False  # a recurrent baseline: no attention, no blocks to shard or recompute
    encoder: bool = False  # bidirectional, trained on the masked-LM objective
    learned_positions: bool = False  # a table of positions: a lookup, no FLOPs
    grouped_query: bool = False  # fewer key/value heads than heads may be asked for (model.n_kv_head)
    rotary: bool = False  # rotary embeddings, which rotate pairs: the head size must be even
    # a gated MLP, act(gate)·up: under train.lean_activations the product is recomputed in the backward, so a layer
    # keeps one mlp_width fewer (studio.model.recompute)
    gated_mlp: bool = False
    huggingface: HuggingFace | None = None  # None: transformers has no class for it
    gguf: Gguf | None = None  # None: llama.cpp has no loader for it


def attention_activations(cfg: ModelShape) -> int:
    """Values per token an attention layer keeps for the backward: its residual input, normed input, q, attention
    output and the like (~6·n_embd), and k and v (narrower under grouped-query attention). SDPA's fused kernels keep
    no T×T matrix."""
    return 6 * cfg.n_embd + 2 * cfg.kv_heads * cfg.head_dim
