"""The next token: plain text as random windows, or chat and instruction examples (only the answers learned);
evaluated by loss, perplexity and next-token accuracy; sampled by continuing the run's fixed prompts, or on chat
data by answering the first held-out user turns, rendered with the chat template."""

from __future__ import annotations

import math
from typing import Any

import torch

from studio.checkpoints.training_state import TrainingState
from studio.data.batches import IGNORE, ExampleStream, PoissonStream, TokenFile, WindowStream, private_windows
from studio.data.examples import dataset_chat_template
from studio.inference.generate import SamplingConfig, sample
from studio.model.readout import EvaluationSums
from studio.train.objectives import TrainingContext, TrainingObjective

EVAL_SEED_OFFSET = 10_000  # evaluation draws the same fixed batches every time, apart from training's


class Objective(TrainingObjective):
    def __init__(self, context: TrainingContext):
        super().__init__(context)
        dataset = context.dataset
        self.chat = dataset_chat_template(dataset.meta)  # samples are a user's turn answered, on chat data
        self.stop_ids = sorted({dataset.eot_id, *dataset.meta.stop_ids})

    def batches(self, split: str, shuffle: bool) -> WindowStream | ExampleStream:
        """Random windows of plain text, or the examples of chat and instruction data."""
        context, dataset = self.context, self.context.dataset
        batch_size = context.config.train.batch_size
        if not dataset.has_examples:
            tokens = TokenFile(dataset.bin_path(split), dataset.dtype)
            return WindowStream(tokens, batch_size, context.block_size, context.rank, context.world)
        return self.examples(split, shuffle)

    def private_batches(self) -> PoissonStream:
        """Plain text's disjoint windows, or the examples, Poisson-sampled (DP-SGD)."""
        context, dataset = self.context, self.context.dataset
        if dataset.has_examples:
            return super().private_batches()
        tokens = TokenFile(dataset.bin_path("train"), dataset.dtype)
        return private_windows(tokens, context.config.train.batch_size, context.block_size)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, eval_steps: int) -> dict[str, Any]:
        """Loss, perplexity and accuracy over the learned targets of `eval_steps` fixed batches per process."""
        context = self.context
        stream = self.batches("val", shuffle=False)
        position = TrainingState()
        position.data_generator.manual_seed(context.config.train.seed + EVAL_SEED_OFFSET)
        totals = torch.zeros(3, device=context.accelerator.device)  # loss sum, correct, learned targets
        for _ in range(eval_steps):
            batch = stream.next(position).to(context.accelerator.device)
            totals[:2] += self.read(model, batch, EvaluationSums(batch.y, self.chunk_rows))
            totals[2] += (batch.y != IGNORE).sum()
        loss_sum, correct, count = context.accelerator.reduce(totals, "sum").tolist()
        val_loss = loss_sum / count
        return {
            "val_loss": round(val_loss, 6),
            "val_ppl": round(math.exp(min(val_loss, 50.0)), 4),
            "val_acc": round(correct / count, 6),
        }

    def samples(self, model: torch.nn.Module, generator: torch.Generator) -> list[dict[str, str]]:
        """Each fixed prompt continued; on chat data, the first held-out examples' user turns (rendered with the chat
        template: the prompt the model answers) and their answers."""
        if self.chat is None:
            return [self.sample(model, prompt, generator) for prompt in self.context.config.train.sample_prompts]
        examples, indices = self.sample_examples()
        tokenizer = self.context.tokenizer
        return [
            {
                "prompt": tokenizer.decode(ids.tolist(), skip_special_tokens=False),
                "text": self.continued(model, ids, generator),
            }
            for ids in map(examples.prompt, indices)
        ]

    def sample(self, model: torch.nn.Module, prompt: str, generator: torch.Generator) -> dict[str, str]:
        """A fixed prompt continued (drawing from `generator`)."""
        context = self.context
        ids = context.tokenizer.encode(prompt, add_special_tokens=False).ids or [context.dataset.eot_id]
        return {"prompt": prompt, "text": self.continued(model, ids, generator)}

    def continued(self, model: torch.nn.Module, ids, generator: torch.Generator) -> str:
        """The text the model writes after prompt `ids`, up to sample_tokens or a stop token."""
        context = self.context
        prompt = torch.tensor([list(ids)], device=context.accelerator.device)
        with context.accelerator.autocast():
            new = sample(
                model,
                prompt,
                context.block_size,
                SamplingConfig(context.config.train.sample_tokens),
                generator,
                self.stop_ids,
            )
        return context.tokenizer.decode(new[0].tolist())
