"""Steps and epochs: how many passes over the training data a number of optimizer steps makes, and back. An epoch
is every training example once, or for text every training token once (as windows of the context); for a paired
preference objective every pair once (a batch holds batch_size pairs, each two examples), for GRPO every prompt
once. Torch-free: prepare converts `train.epochs` to `max_steps` with it, and the CLI, the Train tab and the
dashboard say both.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from studio.config import RunConfig
from studio.objectives import objective_of
from studio.paths import datasets_dir

if TYPE_CHECKING:  # the data package imports the pipeline (numpy, tokenizers): loaded only when a meta is read
    from studio.data.meta import DatasetMeta


def per_step(config: RunConfig, meta: DatasetMeta) -> int:
    """What one optimizer step reads over every process, in epoch_size's unit: batches of examples (pairs,
    prompts), or tokens of text."""
    t = config.train
    sequences = t.batch_size * t.accum_steps * t.world_size
    return sequences if meta.examples else sequences * config.model.block_size


def epoch_size(config: RunConfig, meta: DatasetMeta) -> tuple[int, str]:
    """What one epoch reads, and what that is: the training pairs of a paired objective, the prompts of GRPO, the
    examples of the others, or the training tokens of text."""
    if not meta.examples:
        return meta.tokens["train"], "tokens"
    objective = objective_of(config)
    if objective.paired:
        return meta.examples["train"] // 2, "pairs"  # a pair's two examples: its chosen and its rejected answer
    return meta.examples["train"], "prompts" if objective.dataset == "prompts" else "examples"


def steps_for_epochs(config: RunConfig, meta: DatasetMeta) -> int:
    """The optimizer steps that make `train.epochs` passes over the training data (at least one)."""
    size, _ = epoch_size(config, meta)
    return max(1, math.ceil(config.train.epochs * size / per_step(config, meta)))


def steps_and_epochs(config: RunConfig, meta: DatasetMeta, steps: int | None = None) -> str:
    """ "300 steps ≈ 960 epochs of 5 examples" (of max_steps, or of `steps`)."""
    steps = config.train.max_steps if steps is None else steps
    size, unit = epoch_size(config, meta)
    epochs = steps * per_step(config, meta) / max(size, 1)
    return f"{steps:,} steps ≈ {epochs:,.{0 if epochs >= 10 else 1}f} epochs of {size:,} {unit}"


def run_dataset_meta(config: RunConfig) -> DatasetMeta | None:
    """The meta.json of a run's dataset (for the dashboard's epochs); None when it is gone or unreadable."""
    from studio.data.meta import DatasetMeta

    if not config.data.dataset:
        return None
    try:
        return DatasetMeta.load(datasets_dir() / config.data.dataset / "meta.json")
    except (OSError, ValueError):
        return None
