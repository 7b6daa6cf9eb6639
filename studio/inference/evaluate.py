"""`llm-studio evaluate`: a model judged on held-out data it never trained on.

The source is prepared with the model's own tokenizer (and cached like any dataset), and every token or row of
it is used (both splits of the prepared files):
- a causal LM: loss, perplexity and next-token accuracy over consecutive windows of its context;
- a causal LM on chat or instruction rows (rendered with its chat template, as it was trained): the same over the
  answers' tokens only, and each conversation's first answer generated greedily against the row's: exact match,
  token F1 and ROUGE-L (studio.inference.answers), each row's answer among the predictions;
- a masked LM: masked-token loss and accuracy, BERT's masking drawn from a fixed seed;
- a causal LM on preference rows ({prompt, chosen, rejected}, studio.data.preferences): the pairwise accuracy (the
  chosen answer's log-probability above the rejected one's, summed over the answer's tokens: no reference model
  is needed, so runs and exported folders alike are judged) and the mean margin between the two;
- a causal LM on prompt rows ({prompt, ...}, studio.data.prompts): one greedy answer per prompt (up to
  --max-new-tokens, else the run's train.max_completion_tokens), scored by reward functions (studio.rewards): the
  ones given, else the run's (an exported folder names none); the mean reward (their weighted sum), each function's
  mean and the answers' length in tokens;
- a classifier: loss, accuracy, macro precision/recall/F1, per-class F1 and the confusion matrix, and each row's
  prediction with its probabilities (for `--out`).
The model is a run's checkpoint, or a Hugging Face folder (an export, say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from studio.config import DataConfig, RunConfig
from studio.data.batches import IGNORE, ExampleFile, TokenFile, labeled_batch, mask_tokens, padded_examples
from studio.data.preferences import PAIRS, holds_preferences
from studio.data.prepare import Dataset, PretrainedTokenizer, Purpose, prepare_dataset
from studio.data.prompts import holds_prompts, read_rows
from studio.data.sources import open_source
from studio.data.tokenizer import SEP
from studio.errors import StudioError
from studio.inference.answers import exact_match, rouge_l, token_f1
from studio.inference.generate import SamplingConfig, generator_of, sample, stopped_length
from studio.inference.load import LoadedModel, load_model
from studio.model import answer_logps, lm_loss_sum
from studio.objectives import Objective
from studio.objectives.metrics import classification_metrics
from studio.rewards import BUILT_INS, parse_rewards, score

BATCH = 16
ANSWER_TOKENS = 128  # the most tokens of a chat row's answer, unless --max-new-tokens says
MASK_SEED = 0


@dataclass
class Evaluation:
    kind: str  # the objective's evaluate_kind (causal, masked, classify), or what the rows ask: preference, rewards
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] | None = None  # a classifier's, one per row; None: a language model's


def evaluate(
    target: str, data: DataConfig, step: int | None = None, rewards: list[str] | None = None,
    max_new_tokens: int | None = None,
) -> Evaluation:  # fmt: skip
    """The model of `target` judged on `data`; on prompt rows, answers of up to `max_new_tokens` (None: the run's
    train.max_completion_tokens) scored by `rewards` (names, as train.rewards; None: the run's); on chat rows,
    answers of up to `max_new_tokens` (None: ANSWER_TOKENS)."""
    loaded = load_model(target, step)
    source = open_source(data.source, data) if loaded.objective.generates else None
    if source is not None and holds_prompts(source):
        if max_new_tokens is None:
            max_new_tokens = (loaded.run_config or RunConfig()).train.max_completion_tokens
        sampling = SamplingConfig(max_new_tokens, temperature=0.0)  # greedy
        sampling.check()
        with torch.inference_mode():
            return Evaluation("rewards", _rewarded_answers(loaded, data, _reward_names(loaded, rewards), sampling))
    if rewards:
        raise StudioError(f"--reward is for a model's answers to prompt rows ({{prompt, ...}}); {data.source} holds "
                          "other rows, or the model does not generate: drop them")  # fmt: skip
    if source is not None and holds_preferences(source):
        with torch.inference_mode():
            return Evaluation("preference", _pairs(loaded, data))
    dataset = prepare_dataset(data, purpose=_held_out_purpose(loaded))
    with torch.inference_mode():
        if loaded.objective.classifies:
            return _classify(loaded, dataset)
        if loaded.objective.generates and dataset.has_examples:
            return _answers(loaded, dataset, max_new_tokens or ANSWER_TOKENS)
        windows = _windows(loaded.objective, dataset, loaded.context, torch.Generator().manual_seed(MASK_SEED))
        return Evaluation(loaded.objective.evaluate_kind, _token_metrics(loaded.objective, loaded.model, windows))


def _held_out_purpose(loaded: LoadedModel) -> Purpose:
    """How the source is prepared for the model: with its tokenizer (and a causal LM's chat template), as its own
    training data was."""
    objective = loaded.objective
    if objective.generates:  # documents end as in the run's dataset; a folder's tokenizer frames text itself
        framed = loaded.framed if loaded.run_config is not None else True
        return Purpose.of(objective, _chat_tokenizer(loaded, framed), loaded.context, held_out=True)
    if loaded.run_config is not None:  # rows framed if its rows were
        end = loaded.tokenizer.id_to_token(loaded.eot_id)
        pretrained = PretrainedTokenizer(loaded.tokenizer_file, end, frames_text=loaded.framed)
        return Purpose.of(objective, pretrained, loaded.context, held_out=True)
    pad_id = loaded.model.hf.config.pad_token_id
    pad = loaded.tokenizer.id_to_token(pad_id) if pad_id is not None else ""
    end = SEP if objective.predicts == "fill-mask" else pad  # what separates held-out documents (an encoder's)
    pretrained = PretrainedTokenizer(loaded.tokenizer_file, end, pad_token=pad, frames_text=True)  # frames itself
    return Purpose.of(objective, pretrained, loaded.context, held_out=True)


def _chat_tokenizer(loaded: LoadedModel, framed: bool) -> PretrainedTokenizer:
    """A causal LM's tokenizer with its chat template: rows are rendered as the model reads them."""
    template = loaded.chat_template
    return PretrainedTokenizer(
        loaded.tokenizer_file, loaded.tokenizer.id_to_token(loaded.eot_id),
        chat_template=None if template is None else template.source,
        bos_token="" if template is None else template.bos_token, frames_text=framed,
    )  # fmt: skip


def _pairs(loaded: LoadedModel, data: DataConfig) -> dict[str, Any]:
    """Preference rows rendered with the model's chat template (both splits): the share of pairs whose chosen answer
    the model finds likelier than the rejected one, and the mean margin of their log-probabilities."""
    dataset = prepare_dataset(data, purpose=_rows_purpose(loaded, "preference"))
    if dataset.meta.row_format != PAIRS:
        raise StudioError(f"{data.source} holds unpaired rows (completion, label); evaluate ranks pairs: give "
                          "{prompt, chosen, rejected} rows")  # fmt: skip
    right, margins, pairs = 0, 0.0, 0
    for split in ("train", "val"):
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        for first in range(0, len(examples), 2 * BATCH):
            answers = range(first, min(first + 2 * BATCH, len(examples)))
            rows = [[examples.pair(index, loaded.context)] for index in answers]
            batch = padded_examples(rows, max(len(row[0][0]) for row in rows), packed=False)
            logits, _ = loaded.model(batch.x)
            logps = answer_logps(logits, batch.y)[0]
            margin = logps[0::2] - logps[1::2]  # chosen and rejected alternate
            right += int((margin > 0).sum())
            margins += float(margin.sum())
            pairs += len(margin)
    return {"pair_accuracy": round(right / pairs, 6), "mean_margin": round(margins / pairs, 6), "pairs": pairs}


def _rows_purpose(loaded: LoadedModel, task: str) -> Purpose:
    """Preference or prompt rows rendered with the model's tokenizer and chat template, all of them kept."""
    return Purpose(_chat_tokenizer(loaded, framed=False), loaded.context, task=task, held_out=True)


def _reward_names(loaded: LoadedModel, given: list[str] | None) -> list[str]:
    """The rewards given to evaluate, else the run's own (a GRPO run's)."""
    names = given or (loaded.run_config.train.rewards if loaded.run_config is not None else [])
    if not names:
        raise StudioError(f"prompt rows are judged by the rewards of the model's answers, and {loaded.description} "
                          f"names none: give --reward ({BUILT_INS})")  # fmt: skip
    return names


def _rewarded_answers(
    loaded: LoadedModel, data: DataConfig, names: list[str], sampling: SamplingConfig
) -> dict[str, Any]:  # fmt: skip
    """Every prompt row (both splits) answered once, as `sampling` says, and scored: the mean reward (the rewards
    summed with their weights), each function's mean, and the answers' mean length in tokens (up to their stop)."""
    rewards = parse_rewards(names)
    dataset = prepare_dataset(data, purpose=_rows_purpose(loaded, "prompts"))
    stop_ids = sorted({loaded.eot_id, *loaded.stop_ids} - {None})
    device = next(loaded.model.parameters()).device
    scores, lengths = [], []
    for split in ("train", "val"):
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        for index, row in enumerate(read_rows(dataset.path / f"{split}.rows")):
            ids = examples.text_ids(index)
            prompt = torch.as_tensor(ids, dtype=torch.long, device=device).unsqueeze(0)
            completion = sample(loaded.model, prompt, loaded.context, sampling, stop_ids=stop_ids)[0].tolist()
            length = stopped_length(completion, stop_ids)
            text = loaded.tokenizer.decode(completion[:length])
            prompt_text = loaded.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
            scores.append(score(rewards, prompt_text, text, row))
            lengths.append(length)
    values = torch.tensor(scores, dtype=torch.float64)  # (prompts, rewards)
    weights = torch.tensor([reward.weight for reward in rewards], dtype=torch.float64)
    return {
        "reward": round(float((values @ weights).mean()), 6),
        "rewards": {reward.name: round(float(mean), 6) for reward, mean in zip(rewards, values.mean(0))},
        "completion_len": round(sum(lengths) / len(lengths), 3),
        "prompts": len(lengths),
    }


def _answers(loaded: LoadedModel, dataset: Dataset, max_new_tokens: int) -> Evaluation:
    """Chat or instruction examples (both splits): the answers' loss, perplexity and accuracy, and each example's
    first answer generated greedily from the conversation before it, against the row's (its end-of-turn left out)."""
    splits = [split for split in ("train", "val") if dataset.meta.examples.get(split)]
    examples = [ExampleFile(dataset.bin_path(split), dataset.dtype) for split in splits]
    metrics = _token_metrics(loaded.objective, loaded.model, _example_batches(examples, loaded.context))
    generator = generator_of(loaded)
    prompts, references = [], []
    for split in examples:
        for index in range(len(split)):
            prompt = split.prompt(index)
            prompts.append(prompt.tolist())
            references.append(_first_answer(split, index, len(prompt), generator.stop_ids))
    answers = generator.greedy_answers(prompts, max_new_tokens)
    predictions = []
    for answer, reference in zip(answers, references):
        text = loaded.tokenizer.decode(reference).strip()
        scores = {"exact_match": exact_match(answer, text), "token_f1": token_f1(answer, text),
                  "rouge_l": rouge_l(answer, text)}  # fmt: skip
        predictions.append({"answer": answer, "reference": text, **{k: round(v, 6) for k, v in scores.items()}})
    for name in ("exact_match", "token_f1", "rouge_l"):
        metrics[name] = round(sum(row[name] for row in predictions) / max(len(predictions), 1), 6)
    return Evaluation("answers", metrics | {"answers": len(predictions)}, predictions)


def _first_answer(examples: ExampleFile, index: int, prompt_length: int, stop_ids: list[int]) -> list[int]:
    """The ids of an example's first answer: its learned tokens from the first on, up to the next unlearned one,
    without the end-of-turn tokens that close it."""
    start, end = examples.offsets[index] + prompt_length, examples.offsets[index + 1]
    learned = examples.mask[start:end] > 0
    length = int(np.argmin(learned)) if not learned.all() else len(learned)
    return [int(token) for token in examples.ids[start : start + length] if int(token) not in stop_ids]


def _example_batches(examples: list[ExampleFile], context: int):
    """Batches of examples, right-padded: inputs and the targets they learn (answers only)."""
    for split in examples:
        for first in range(0, len(split), BATCH):
            rows = [[split.pair(index, context)] for index in range(first, min(first + BATCH, len(split)))]
            batch = padded_examples(rows, max(len(row[0][0]) for row in rows), packed=False)
            yield batch.x, batch.y


def _token_metrics(objective: Objective, model: torch.nn.Module, batches) -> dict[str, Any]:
    """Loss, perplexity (causal) and accuracy over the learned targets of (inputs, targets) batches."""
    loss_sum, correct, count = 0.0, 0, 0
    for inputs, targets in batches:
        logits, _ = model(inputs)
        learned = targets != IGNORE
        loss_sum += lm_loss_sum(logits, targets).item()
        correct += int(((logits.argmax(-1) == targets) & learned).sum())
        count += int(learned.sum())
    if not count:
        raise StudioError("the source is shorter than one window of the model's context; give more text")
    loss = loss_sum / count
    metrics: dict[str, Any] = {"loss": round(loss, 6), "accuracy": round(correct / count, 6), "targets": count}
    if objective.generates:
        metrics["perplexity"] = round(math.exp(min(loss, 50.0)), 4)
    return metrics


def _windows(objective: Objective, dataset: Dataset, context: int, generator: torch.Generator):
    """Batches of consecutive windows: (inputs, next tokens), or an encoder's masked [CLS] window [SEP]."""
    width = context if objective.generates else context - 2
    for split in ("train", "val"):
        ids = torch.from_numpy(TokenFile(dataset.bin_path(split), dataset.dtype).ids.astype("int64"))
        starts = list(range(0, len(ids) - width, width))
        for first in range(0, len(starts), BATCH):
            rows = torch.stack([ids[start : start + width + 1] for start in starts[first : first + BATCH]])
            if objective.generates:
                yield rows[:, :-1], rows[:, 1:]
                continue
            special = dataset.meta.special_ids
            framed = torch.cat(
                [torch.full((len(rows), 1), special["cls"]), rows[:, :-1], torch.full((len(rows), 1), special["sep"])],
                dim=1,
            )
            masked = mask_tokens(
                framed, generator, special["mask"], dataset.vocab_size, [*special.values(), dataset.eot_id]
            )
            yield masked.x, masked.y


def _classify(loaded: LoadedModel, dataset: Dataset) -> Evaluation:
    """The model's labels against the rows' (matched by name: held-out data may hold fewer classes)."""
    labels, model = loaded.labels, loaded.model
    unknown = [str(label) for label in dataset.meta.labels if str(label) not in labels]
    if unknown:
        raise StudioError(f"the data has labels the model does not know ({', '.join(unknown[:5])}); it knows {labels}")
    to_model = torch.tensor([labels.index(str(label)) for label in dataset.meta.labels])
    confusion = [[0] * len(labels) for _ in labels]
    predictions: list[dict[str, Any]] = []
    loss_sum = 0.0
    examples = ExampleFile(dataset.bin_path("val"), dataset.dtype)  # held-out rows are one split (Purpose.held_out)
    for first in range(0, len(examples), BATCH):
        batch = labeled_batch(examples, list(range(first, min(first + BATCH, len(examples)))), dataset.meta.pad_id)
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
    return Evaluation(loaded.objective.evaluate_kind, summary, predictions)
