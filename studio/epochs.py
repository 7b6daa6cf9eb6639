"""Steps and epochs: how many passes over the training data a number of optimizer steps makes, and back. An epoch
is every training example once, or for text every training token once (as windows of the context). Torch-free:
prepare converts `train.epochs` to `max_steps` with it, and the CLI, the Train tab and the dashboard say both.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from studio.config import RunConfig
from studio.paths import datasets_dir

if TYPE_CHECKING:  # the data package imports the pipeline (numpy, tokenizers): loaded only when a meta is read
    from studio.data.meta import DatasetMeta


def per_step(config: RunConfig, meta: DatasetMeta) -> int:
    """What one optimizer step reads over every process: examples, or tokens of text."""
    t = config.train
    sequences = t.batch_size * t.accum_steps * t.world_size
    return sequences if meta.examples else sequences * config.model.block_size


def epoch_size(meta: DatasetMeta) -> int:
    """What one epoch reads: the training examples, or the training tokens of text."""
    return meta.examples["train"] if meta.examples else meta.tokens["train"]


def steps_for_epochs(config: RunConfig, meta: DatasetMeta) -> int:
    """The optimizer steps that make `train.epochs` passes over the training data (at least one)."""
    return max(1, math.ceil(config.train.epochs * epoch_size(meta) / per_step(config, meta)))


def steps_and_epochs(config: RunConfig, meta: DatasetMeta, steps: int | None = None) -> str:
    """ "300 steps ≈ 960 epochs of 5 examples" (of max_steps, or of `steps`)."""
    steps = config.train.max_steps if steps is None else steps
    epochs = steps * per_step(config, meta) / max(epoch_size(meta), 1)
    unit = "examples" if meta.examples else "tokens"
    return f"{steps:,} steps ≈ {epochs:,.{0 if epochs >= 10 else 1}f} epochs of {epoch_size(meta):,} {unit}"


def run_dataset_meta(config: RunConfig) -> DatasetMeta | None:
    """The meta.json of a run's dataset (for the dashboard's epochs); None when it is gone or unreadable."""
    from studio.data.meta import DatasetMeta

    if not config.data.dataset:
        return None
    try:
        return DatasetMeta.load(datasets_dir() / config.data.dataset / "meta.json")
    except (OSError, ValueError):
        return None
