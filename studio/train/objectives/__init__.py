"""How each objective trains (torch): one module per row of `studio.objectives.OBJECTIVES`, all with the same small
protocol, after torchtune's loss protocols.

- `batches(split, shuffle)`: the split's batch stream (`next(state)` draws a `Batch` from the training state's
  data generator, so a resumed run draws what it would have drawn); `private_batches()`: the training split
  Poisson-sampled instead, for differentially private training (studio.train.privacy);
- `loss_sums(model, batch)`: the summed loss over the targets the batch learns, with its cross-entropy and
  distillation parts (a tensor of three, left on the device); the trainer divides by the step's learned targets;
- `evaluate(model, eval_steps)`: the fields of an `eval` event, reduced over every process;
- `attach(run_model)`: called once the model is built, before a checkpoint is loaded (a reference model); returns
  the weights it adds, which the memory meter counts;
- `train_fields(seconds)`: what a `train` event adds besides the loss (GRPO's rewards), over the steps since the
  last one (`seconds` long);
- `samples(model, generator)`: the `{prompt, text}` items of a `sample` event (rank 0 alone; the generator, seeded
  alike at every sample event, is shared by the event's prompts): the run's fixed prompts continued on plain text,
  the first held-out examples on chat and labeled data (`sample_examples`), so each event answers the same ones.

`Distilled` wraps any of them: the same batches, evaluation and samples, and the loss mixed with a teacher's.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tokenizers import Tokenizer

from studio.config import DistillConfig, RunConfig
from studio.data.batches import ExampleFile, ExampleStream, PoissonStream, private_examples
from studio.data.prepare import Dataset
from studio.model.readout import AUTO, CrossEntropySum, DivergenceSum, Readout, States, Together
from studio.objectives import Objective

SAMPLED_EXAMPLES = 3  # held-out chat or labeled examples each sample event answers


@dataclass
class TrainingContext:
    """What an objective needs of the trainer: the run's folder and config, its data and tokenizer, and the
    processes."""

    run_dir: Path
    config: RunConfig
    dataset: Dataset
    tokenizer: Tokenizer
    accelerator: Accelerator

    @property
    def block_size(self) -> int:
        return self.config.model.block_size

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def shares(self, count: int) -> Iterator[list[int]]:
        """This process's share of `count` held-out items (every world-th), `train.batch_size` at a time, in as many
        batches as the process with the most takes: FSDP gathers weights in every forward, so every process calls the
        model alike. An empty list once this process has run out: its call is only its part in the gathering."""
        mine, batch_size = list(range(self.rank, count, self.world)), self.config.train.batch_size
        for start in range(0, math.ceil(count / self.world), batch_size):
            yield mine[start : start + batch_size]


class TrainingObjective:
    """What every objective shares: the loss over the learned targets (tokens, or one label per row), whose parts
    are the cross-entropy itself and no distillation."""

    def __init__(self, context: TrainingContext):
        self.context = context

    def examples(self, split: str, shuffle: bool) -> ExampleStream:
        """A split's examples (chat rows, labeled rows) in seeded epochs, padded or packed."""
        context, dataset = self.context, self.context.dataset
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        return ExampleStream(
            examples, context.config.train.batch_size, context.block_size, context.config.data.packing,
            context.config.train.seed, context.rank, context.world, shuffle, dataset.meta.pad_id,
        )  # fmt: skip

    def private_batches(self) -> PoissonStream:
        """The training examples Poisson-sampled, for DP-SGD (studio.train.privacy)."""
        context, dataset = self.context, self.context.dataset
        examples = ExampleFile(dataset.bin_path("train"), dataset.dtype)
        return private_examples(examples, context.config.train.batch_size, context.block_size, dataset.meta.pad_id)

    def sample_examples(self) -> tuple[ExampleFile, range]:
        """The examples samples answer: the first few of the validation split, or of the training split when the
        run has none held out."""
        dataset = self.context.dataset
        split = "val" if dataset.meta.examples.get("val") else "train"
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        return examples, range(min(SAMPLED_EXAMPLES, len(examples)))

    def attach(self, run_model) -> list[torch.nn.Parameter]:
        """Build what the objective needs of the run's model before a checkpoint is loaded (a preference
        objective's reference: the starting weights); returns the weights that adds (a frozen copy's)."""
        return []

    def train_fields(self, seconds: float) -> dict:
        return {}

    @property
    def chunk_rows(self) -> int:
        """Tokens per chunk of the loss (studio.model.readout): as the head's vocabulary decides (AUTO), or 0 for
        whole logits (train.chunked_loss false)."""
        return AUTO if self.context.config.train.chunked_readout else 0

    def read(self, model: torch.nn.Module, batch, readout: Readout):
        """What `readout` reads of the model's outputs for the batch: from its final states through its head, a
        chunk of tokens at a time (the objectives that score a vocabulary)."""
        return model(batch.x, **batch.model_inputs(), readout=readout)[0]

    def loss_sums(self, model: torch.nn.Module, batch) -> torch.Tensor:
        cross_entropy = self.read(model, batch, CrossEntropySum(batch.y, self.chunk_rows))
        return torch.stack([cross_entropy, cross_entropy, torch.zeros_like(cross_entropy)])


class Distilled:
    """An objective that also learns from a frozen teacher: alpha·T²·KL(teacher ‖ student) + (1 − alpha)·CE over
    the same learned positions; everything else is the wrapped objective's."""

    def __init__(self, objective: TrainingObjective, teacher: torch.nn.Module, distill: DistillConfig):
        self.objective, self.teacher, self.distill = objective, teacher, distill

    def batches(self, split: str, shuffle: bool):
        return self.objective.batches(split, shuffle)

    def evaluate(self, model: torch.nn.Module, eval_steps: int) -> dict:
        return self.objective.evaluate(model, eval_steps)

    def samples(self, model: torch.nn.Module, generator: torch.Generator) -> list[dict[str, str]]:
        return self.objective.samples(model, generator)

    def train_fields(self, seconds: float) -> dict:
        return self.objective.train_fields(seconds)

    def loss_sums(self, model: torch.nn.Module, batch) -> torch.Tensor:
        """One forward of each: the teacher's final states and head (not its logits), then the student's
        cross-entropy and divergence from its own, both a chunk of tokens at a time."""
        objective, rows = self.objective, self.objective.chunk_rows
        with torch.no_grad():
            teacher = objective.read(self.teacher, batch, States())
        divergence_sum = DivergenceSum(batch.y, teacher, self.distill.temperature, rows)
        cross_entropy, divergence = objective.read(
            model, batch, Together(CrossEntropySum(batch.y, rows), divergence_sum)
        )
        loss = self.distill.alpha * divergence + (1 - self.distill.alpha) * cross_entropy
        return torch.stack([loss, cross_entropy, divergence])


def training_objective(objective: Objective, context: TrainingContext) -> TrainingObjective:
    """The trainer module of an objective (its spec's `trainer`), set up for this run."""
    return importlib.import_module(objective.trainer).Objective(context)
