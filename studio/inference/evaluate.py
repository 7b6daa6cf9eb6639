"""`llm-studio evaluate`: a model judged on held-out data it never trained on.

The source is prepared with the model's own tokenizer (and cached like any dataset), and every token or row of
it is used (both splits of the prepared files):
- a causal LM: loss, perplexity and next-token accuracy over consecutive windows of its context;
- a masked LM: masked-token loss and accuracy, BERT's masking drawn from a fixed seed;
- a classifier: loss, accuracy, macro precision/recall/F1, per-class F1 and the confusion matrix, and each row's
  prediction with its probabilities (for `--out`).
The model is a run's checkpoint, or a Hugging Face folder (an export, say).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.config import DataConfig
from studio.data.batches import IGNORE, ExampleFile, TokenFile, labeled_batch, mask_tokens
from studio.data.prepare import Dataset, PretrainedTokenizer, Purpose, open_dataset, prepare_dataset
from studio.data.tokenizer import SEP
from studio.errors import StudioError
from studio.model import lm_loss_sum
from studio.objectives.metrics import classification_metrics
from studio.run_folder.layout import checkpoint_metadata, run_or_folder, trained_config, usable_checkpoint

BATCH = 16
MASK_SEED = 0


@dataclass
class Evaluation:
    kind: str  # causal, masked or classify
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)  # a classifier's, one per row


@dataclass
class Loaded:
    """What the target is, its model (called the studio's way), and how a source is to be prepared for it."""

    kind: str
    model: torch.nn.Module
    purpose: Purpose
    context: int
    labels: list[str] = field(default_factory=list)  # a classifier's, in the order of its outputs


def evaluate(target: str, data: DataConfig, step: int | None = None) -> Evaluation:
    loaded = _load(target, step)
    dataset = prepare_dataset(data, purpose=loaded.purpose)
    loaded.model.eval()
    with torch.inference_mode():
        if loaded.kind == "classify":
            return _classify(loaded, dataset)
        return Evaluation(loaded.kind, _token_metrics(loaded.kind, loaded.model, dataset, loaded.context))


def _load(target: str, step: int | None) -> Loaded:
    folder = Path(target).expanduser()
    if (folder / "config.json").is_file():
        return _load_folder(folder)
    run_dir = run_or_folder(target)
    found, _ = usable_checkpoint(run_dir, step)
    config = trained_config(run_dir, checkpoint_metadata(found))
    dataset = open_dataset(config.data.dataset)
    eot = _token(dataset, dataset.eot_id)
    frames = bool(dataset.meta.get("framed"))
    pretrained = PretrainedTokenizer(dataset.tokenizer_path, eot, frames_text=frames)
    purpose = Purpose(pretrained, config.model.block_size, config.model.encoder, config.train.task, held_out=True)
    kind = "classify" if config.train.task == "classify" else ("masked" if config.model.encoder else "causal")
    labels = [str(label) for label in dataset.meta.get("labels", [])]
    if kind == "causal":
        from studio.inference.generate import load_generator

        return Loaded(kind, load_generator(str(run_dir), step).model, purpose, config.model.block_size)
    from studio.inference.predict import load_predictor

    return Loaded(kind, load_predictor(str(run_dir), step).model, purpose, config.model.block_size, labels)


def _load_folder(folder: Path) -> Loaded:
    from studio.hf.folder import read_hf_folder
    from studio.inference.predict import load_predictor

    architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if any(name.endswith(("ForSequenceClassification", "ForMaskedLM")) for name in architectures):
        predictor = load_predictor(str(folder))
        kind = "classify" if architectures[0].endswith("ForSequenceClassification") else "masked"
        hf_config = predictor.model.hf.config
        pad = predictor.tokenizer.id_to_token(hf_config.pad_token_id) if hf_config.pad_token_id is not None else ""
        end = SEP if kind == "masked" else pad  # what separates documents of held-out text (an encoder's [SEP])
        pretrained = PretrainedTokenizer(folder / "tokenizer.json", end, pad_token=pad, frames_text=True)
        task = "classify" if kind == "classify" else "lm"
        purpose = Purpose(pretrained, predictor.block_size, kind == "masked", task, held_out=True)
        labels = [str(label) for label in getattr(predictor, "meta", {}).get("labels", [])]
        return Loaded(kind, predictor.model, purpose, predictor.block_size, labels)
    from studio.inference.generate import load_generator

    hf = read_hf_folder(folder)
    generator = load_generator(str(folder))
    pretrained = PretrainedTokenizer(hf.tokenizer_file, hf.eot_token, frames_text=True)
    return Loaded("causal", generator.model, Purpose(pretrained, generator.block_size), generator.block_size)


def _token(dataset: Dataset, token_id: int) -> str:
    from studio.data.tokenizer import load_tokenizer

    return load_tokenizer(dataset.tokenizer_path).id_to_token(token_id)


def _token_metrics(kind: str, model: torch.nn.Module, dataset: Dataset, context: int) -> dict[str, Any]:
    """Loss, perplexity (causal) and accuracy over the learned targets of every window of both splits."""
    loss_sum, correct, count = 0.0, 0, 0
    generator = torch.Generator().manual_seed(MASK_SEED)
    for inputs, targets in _windows(kind, dataset, context, generator):
        logits, _ = model(inputs)
        learned = targets != IGNORE
        loss_sum += lm_loss_sum(logits, targets).item()
        correct += int(((logits.argmax(-1) == targets) & learned).sum())
        count += int(learned.sum())
    if not count:
        raise StudioError("the source is shorter than one window of the model's context; give more text")
    loss = loss_sum / count
    metrics: dict[str, Any] = {"loss": round(loss, 6), "accuracy": round(correct / count, 6), "targets": count}
    if kind == "causal":
        metrics["perplexity"] = round(math.exp(min(loss, 50.0)), 4)
    return metrics


def _windows(kind: str, dataset: Dataset, context: int, generator: torch.Generator):
    """Batches of consecutive windows: (inputs, next tokens), or an encoder's masked [CLS] window [SEP]."""
    width = context - 2 if kind == "masked" else context
    for split in ("train", "val"):
        ids = torch.from_numpy(TokenFile(dataset.bin_path(split), dataset.dtype).ids.astype("int64"))
        starts = list(range(0, len(ids) - width, width))
        for first in range(0, len(starts), BATCH):
            rows = torch.stack([ids[start : start + width + 1] for start in starts[first : first + BATCH]])
            if kind == "causal":
                yield rows[:, :-1], rows[:, 1:]
                continue
            special = dataset.meta["special_ids"]
            framed = torch.cat(
                [torch.full((len(rows), 1), special["cls"]), rows[:, :-1], torch.full((len(rows), 1), special["sep"])],
                dim=1,
            )
            masked = mask_tokens(
                framed, generator, special["mask"], dataset.vocab_size, [*special.values(), dataset.eot_id]
            )
            yield masked.x, masked.y


def _classify(loaded: Loaded, dataset: Dataset) -> Evaluation:
    """The model's labels against the rows' (matched by name: held-out data may hold fewer classes)."""
    labels, model = loaded.labels, loaded.model
    unknown = [str(label) for label in dataset.meta["labels"] if str(label) not in labels]
    if unknown:
        raise StudioError(f"the data has labels the model does not know ({', '.join(unknown[:5])}); it knows {labels}")
    to_model = torch.tensor([labels.index(str(label)) for label in dataset.meta["labels"]])
    confusion = [[0] * len(labels) for _ in labels]
    predictions: list[dict[str, Any]] = []
    loss_sum = 0.0
    examples = ExampleFile(dataset.bin_path("val"), dataset.dtype)  # held-out rows are one split (Purpose.held_out)
    for first in range(0, len(examples), BATCH):
        batch = labeled_batch(examples, list(range(first, min(first + BATCH, len(examples)))), dataset.meta["pad_id"])
        logits, _ = model(batch.x, lengths=batch.lengths)
        batch.y = to_model[batch.y]
        loss_sum += lm_loss_sum(logits, batch.y).item()
        probabilities = logits.float().softmax(-1)
        for label, row in zip(batch.y.tolist(), probabilities.tolist()):
            predicted = max(range(len(row)), key=row.__getitem__)
            confusion[label][predicted] += 1
            predictions.append(
                {
                    "label": labels[label],
                    "predicted": labels[predicted],
                    "probabilities": {name: round(p, 6) for name, p in zip(labels, row)},
                }
            )
    metrics = classification_metrics(confusion)
    summary = {
        "loss": round(loss_sum / max(len(predictions), 1), 6),
        "accuracy": round(metrics["accuracy"], 6),
        "precision": round(metrics["precision"], 6),
        "recall": round(metrics["recall"], 6),
        "f1": round(metrics["f1"], 6),
        "f1_per_class": dict(zip(labels, (round(value, 6) for value in metrics["f1_per_class"]))),
        "confusion": confusion,
        "labels": labels,
        "rows": len(predictions),
    }
    return Evaluation("classify", summary, predictions)
