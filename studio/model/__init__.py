"""The model zoo: `build_model(cfg)` and what the architectures share (init, loss, optimizer groups).

One file per architecture: llama.py (the default), gpt2.py (nanoGPT / GPT-2 layout), recurrent.py (LSTM
and RNN baselines), bert.py (the masked-LM encoder), each loaded when built: which module and class build an
architecture is one of its facts (studio.architectures), as are its sizes without building (studio.sizing.sizes
reads them for the studio, which has no torch).
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from studio.architectures import Architecture, architecture
from studio.config import ModelConfig
from studio.data.batches import IGNORE
from studio.errors import StudioError

# Output projections that write into the residual stream: GPT-2 scales their init by 1/sqrt(2·n_layer)
# so the residual's variance does not grow with depth (two such writes per layer).
RESIDUAL_PROJECTIONS = ("o_proj.weight", "down_proj.weight", "c_proj.weight")

# The linear layers that map the last hidden states to the outputs, in the studio's and Hugging Face's names: a
# decoder's head, a classifier's, BERT's masked-LM decoder (its weight is the word embedding).
OUTPUT_HEADS = {"lm_head", "score", "classifier", "decoder"}


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model for cfg; cfg.vocab_size must be set (the dataset's)."""
    facts = _architecture(cfg)
    return getattr(importlib.import_module(facts.module), facts.model_class)(cfg)


def build_classifier(cfg: ModelConfig, num_labels: int) -> nn.Module:
    """A freshly initialised text classifier of cfg's architecture with num_labels outputs."""
    facts = _architecture(cfg)
    return getattr(importlib.import_module(facts.module), facts.classifier_class)(cfg, num_labels)


def _architecture(cfg: ModelConfig) -> Architecture:
    """The facts of cfg's architecture, once its vocabulary is set (a model is built for it)."""
    facts = architecture(cfg.arch)
    if cfg.vocab_size <= 0:
        raise StudioError("model.vocab_size is 0: set it to the prepared dataset's vocabulary before building")
    return facts


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's init: N(0, 0.02) for linear and embedding weights, zero biases, residual projections scaled."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, in fp32 even under autocast (a bf16 log-softmax loses the small losses).

    Targets of IGNORE (not learned: padding, prompts) are left out."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=IGNORE)


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of the learned targets, tokens or labels (the trainer divides by the step's count)."""
    flat = logits.float().reshape(-1, logits.size(-1))  # (B·T, V) for tokens, (B, classes) for labels
    return F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE, reduction="sum")


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each target's log-probability, in fp32; exactly 0 where the target is IGNORE, whatever the logits."""
    logps = torch.gather(logits.float().log_softmax(-1), -1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets != IGNORE, logps, 0.0)


def answer_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sum of the answer's token log-probabilities and its number of tokens (`answer_sums`)."""
    return answer_sums(token_logps(logits, targets), targets)


def answer_sums(logps: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sum of the answer's token log-probabilities (`token_logps`) and its number of tokens: positions
    whose target is IGNORE (prompt, padding, on either side) add exactly nothing."""
    return logps.sum(-1), (targets != IGNORE).sum(-1)


def distill_loss_sum(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(teacher ‖ student) of the distributions softened by T, summed over the positions that learn a target
    (Hinton et al.: T² keeps the gradients' scale as T changes). In fp32, like the cross-entropy."""
    learned = targets != IGNORE
    vocab = min(student_logits.size(-1), teacher_logits.size(-1))  # a padded embedding's extra rows never occur
    student = (student_logits[learned][:, :vocab].float() / temperature).log_softmax(-1)
    teacher = (teacher_logits[learned][:, :vocab].float() / temperature).log_softmax(-1)
    return temperature**2 * (teacher.exp() * (teacher - student)).sum()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups of every trainable parameter (`decay_groups`)."""
    return decay_groups([p for p in model.parameters() if p.requires_grad], weight_decay)


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Optimizer groups, nanoGPT's rule: matrices and embeddings (dim >= 2) decay; norms and biases do not.

    `parameters()` yields a tied tensor once, so it lands in one group once."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable weights of the linear layers inside the model: what Muon orthogonalises. Embeddings are
    lookups, not linear maps, and the output heads map to tokens or labels, so those stay with AdamW (as do norms
    and biases, which are not matrices). A tied head is the embedding, which is no linear layer's own weight."""
    return [
        module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight.requires_grad and name.rsplit(".", 1)[-1] not in OUTPUT_HEADS
    ]
