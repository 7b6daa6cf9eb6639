"""The studio's own models' weights in and out: what a checkpoint saves of a model, loading weights into one, checking
that a checkpoint fits before anything is built, and the Hugging Face names they export under.

The studio's parameter names are Hugging Face's one to one for Llama and BERT, and nanoGPT's for GPT-2, whose
Hugging Face names differ only in that the four Conv1D weights are transposed and that GPT2LMHeadModel always has
biases. Which weights and biases is each architecture's fact (studio.architectures); the tensors are made here. A
tied lm_head is stored once (as the embedding) and re-tied on load. (Hugging Face checkpoints are loaded by
transformers itself: studio.model.trainable.)
"""

from __future__ import annotations

import math
from pathlib import Path

import psutil
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from studio.architectures import architecture
from studio.config import ModelConfig
from studio.errors import StudioError
from studio.formatting import format_bytes
from studio.run_folder.layout import check_still_there, short_reason


def weights_to_save(model: torch.nn.Module, tied: bool) -> dict[str, torch.Tensor]:
    weights = model.state_dict()
    if tied:  # the output head is the embedding matrix, stored once
        weights.pop(model.HEAD, None)
    return weights


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], tied: bool) -> None:
    """Load weights in place (a tied head follows its embedding, being the same tensor); mismatches are errors."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes differ
        raise StudioError(
            f"the checkpoint does not fit this model ({short_reason(error)}); "
            "use the config the checkpoint was trained with"
        ) from None
    missing = [key for key in missing if not (tied and key == model.HEAD)]
    if missing or unexpected:
        raise StudioError(
            f"the checkpoint does not fit this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); use the config it was trained with"
        )


def check_fit(cfg: ModelConfig, weights_file: Path) -> None:
    """Before a model of `cfg` is built to receive the weights in `weights_file`: the names and shapes in the
    file's header must be the model's (checked on a model without storage), and the model and its weights must
    fit in the memory available. A copied folder whose metadata lies is refused before anything is allocated."""
    from studio.model import build_model

    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in weights_to_save(build_model(cfg), cfg.tie_embeddings).items()}
    try:
        with safe_open(str(weights_file), framework="pt") as file:
            found = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:  # a missing file: RuntimeError
        check_still_there(weights_file)
        raise StudioError(f"{weights_file} is unreadable or corrupt ({short_reason(error)})") from None
    if found != expected:
        wrong = sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name))
        name = wrong[0]
        raise StudioError(
            f"the weights in {weights_file} do not fit the model of its config: {name} is "
            f"{found.get(name, 'missing')} in the file, {expected.get(name, 'absent')} in the model "
            f"({len(wrong)} tensors differ); the folder is damaged or was put together from different runs"
        )
    needed = 2 * 4 * sum(math.prod(shape) for shape in expected.values())  # fp32 model + the weights read
    available = psutil.virtual_memory().available
    if needed > available:
        raise StudioError(
            f"loading this model needs about {format_bytes(needed)} of memory, {format_bytes(available)} is "
            "available; close other programs or use a machine with more memory"
        )


# ---- Hugging Face names, for export ---------------------------------------------------------------
def hf_names(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The studio's state dict under Hugging Face's names, by its architecture's rule (studio.architectures): the
    weights Hugging Face stores transposed, transposed, and the biases its class always has written as zeros
    when the model has none."""
    rule = architecture(cfg.arch).huggingface
    renamed = {
        name: tensor.t().contiguous() if name.endswith(rule.transposed) else tensor for name, tensor in weights.items()
    }
    for bias in rule.zero_biases(cfg):
        weight = renamed[bias.removesuffix("bias") + "weight"]
        # a bias is as long as its weight's last dim: LayerNorm (width,), Conv1D (in, out)
        renamed[bias] = torch.zeros(weight.shape[-1], dtype=weight.dtype)
    return renamed
