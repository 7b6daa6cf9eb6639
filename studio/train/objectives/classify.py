"""A label per text: labeled rows as right-padded batches (one target per row); evaluated over the whole
validation split (loss, accuracy, macro precision/recall/F1, per-class F1, the confusion matrix); sampled as the
first held-out texts' likeliest labels beside their true ones."""

from __future__ import annotations

from typing import Any

import torch

from studio.data.batches import ExampleFile, ExampleStream, labeled_batch
from studio.inference.generate import label_probabilities
from studio.model import lm_loss_sum
from studio.model.readout import Readout
from studio.objectives.metrics import classification_metrics
from studio.train.objectives import TrainingObjective


class Objective(TrainingObjective):
    def batches(self, split: str, shuffle: bool) -> ExampleStream:
        """The rows in seeded epochs, each with its label as the one target (studio.data.labeled)."""
        return self.examples(split, shuffle)

    def read(self, model: torch.nn.Module, batch, readout: Readout):
        """From the logits themselves: one row of labels per text, nothing vocabulary-wide to chunk."""
        return readout.of_logits(model(batch.x, **batch.model_inputs())[0])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, eval_steps: int) -> dict[str, Any]:
        """Every validation example (each process takes every world-th; one confusion matrix is reduced), whatever
        `eval_steps`."""
        context, dataset = self.context, self.context.dataset
        examples = ExampleFile(dataset.bin_path("val"), dataset.dtype)
        classes, device = len(dataset.meta.labels), context.accelerator.device
        confusion = torch.zeros(classes, classes, dtype=torch.long, device=device)
        loss_sum = torch.zeros(1, device=device)
        for rows in context.shares(len(examples)):
            batch = labeled_batch(examples, rows or [0], dataset.meta.pad_id).to(device)
            logits, _ = model(batch.x, **batch.model_inputs())
            if not rows:  # this process had run out of examples: the call was only its part in gathering
                continue
            loss_sum += lm_loss_sum(logits, batch.y)
            confusion.index_put_((batch.y, logits.argmax(-1)), torch.ones_like(batch.y), accumulate=True)
        loss_sum = context.accelerator.reduce(loss_sum, "sum").item()
        matrix = context.accelerator.reduce(confusion, "sum").tolist()
        metrics = classification_metrics(matrix)
        return {
            "val_loss": round(loss_sum / max(len(examples), 1), 6),
            "val_acc": round(metrics["accuracy"], 6),
            "val_precision": round(metrics["precision"], 6),
            "val_recall": round(metrics["recall"], 6),
            "val_f1": round(metrics["f1"], 6),
            "val_f1_per_class": [round(value, 6) for value in metrics["f1_per_class"]],
            "val_confusion": matrix,
            "val_labels": [str(label) for label in dataset.meta.labels],
        }

    def samples(self, model: torch.nn.Module, generator: torch.Generator) -> list[dict[str, str]]:
        """The first held-out texts, each with its three likeliest labels and its true one."""
        context, meta = self.context, self.context.dataset.meta
        examples, indices = self.sample_examples()
        items = []
        for index in indices:
            ids = examples.text_ids(index)[: context.block_size].tolist()
            with context.accelerator.autocast():
                ranked = label_probabilities(model, ids, meta.labels)
            predicted = " · ".join(f"{label} {p:.0%}" for label, p in ranked[:3])
            true_label = meta.labels[examples.labels[index]]
            items.append({"prompt": context.tokenizer.decode(ids), "text": f" → {predicted} (true: {true_label})"})
        return items
