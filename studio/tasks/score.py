"""A causal LM scored on a task file (studio.tasks.rows), the way lm-evaluation-harness scores it.

- **Multiple choice**: each choice is the continuation `" " + choice` of the context, scored by the sum of its
  tokens' log-probabilities given the context (the harness's loglikelihood: the context's trailing spaces move to
  the continuation, the continuation's tokens are those of context + continuation after the context's own, no
  special tokens added, the input cut from the left to the model's context). `acc`: the likeliest choice is the
  gold one; `acc_norm`: the same after dividing each sum by its choice's length in characters. A row's choices go
  through the model as one batch, right-padded.
- **Generation**: each prompt answered greedily (rendered with the chat template for a model trained on chat), cut
  at the first blank line for a plain prompt, then compared with its reference (studio.inference.answers): exact match
  and token F1, after `--extract` picks the answer out of both.
- **Few-shot**: k other rows of the file, drawn for each row from a generator seeded by the seed and the row's
  index (the same rows every time), each written with its gold answer, then the row; blank lines between them.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from studio.data.batches import IGNORE, padded_examples
from studio.errors import StudioError
from studio.inference.answers import exact_match, extracted, extraction_pattern, token_f1
from studio.inference.generate import Generator
from studio.model import answer_logps
from studio.tasks.rows import ChoiceRow, GenerationRow, Task

FEWSHOT_DELIMITER = "\n\n"
TARGET_DELIMITER = " "


@dataclass(frozen=True)
class TaskOptions:
    fewshot: int = 0
    seed: int = 1234
    extract: str | None = None  # generation: `last-number` or a regex
    max_new_tokens: int = 128  # generation

    def check(self, tasks: list[Task]) -> None:
        """One line for the first option out of range for these tasks, before any model is loaded."""
        extraction_pattern(self.extract)
        fewest = min(len(task.rows) for task in tasks)
        if not 0 <= self.fewshot < fewest:
            raise StudioError(f"--fewshot must be between 0 and {fewest - 1} (the other rows of the smallest task), "
                              f"not {self.fewshot}")  # fmt: skip
        if self.max_new_tokens <= 0:
            raise StudioError(f"--max-new-tokens must be positive, not {self.max_new_tokens}")


@dataclass
class TaskResult:
    metrics: dict[str, Any]  # the task's name and kind, its rows, its scores and the seconds it took
    predictions: list[dict[str, Any]]  # one per row, for --out


def score_task(
    generator: Generator, task: Task, options: TaskOptions, progress: Callable[[int, int], None] | None = None
) -> TaskResult:
    options.check([task])
    started = time.perf_counter()
    report = progress or (lambda done, total: None)
    if task.kind == "multiple_choice":
        metrics, predictions = _multiple_choice(generator, task.rows, options, report)
    else:
        metrics, predictions = _generation(generator, task.rows, options, report)
    seconds = time.perf_counter() - started
    head = {"task": task.name, "kind": task.kind, "rows": len(task.rows), "fewshot": options.fewshot}
    return TaskResult(head | metrics | {"seconds": round(seconds, 3)}, predictions)


SCORES = ("acc", "acc_norm", "exact_match", "token_f1")  # what an eval event keeps of a task's metrics


def task_scores(generator: Generator, tasks: list[Task]) -> dict[str, Any]:
    """The eval event's fields of tasks scored during training: each task's scores (0-shot), and their seconds."""
    started = time.perf_counter()
    scored = {}
    for task in tasks:
        metrics = score_task(generator, task, TaskOptions()).metrics
        scored[task.name] = {name: metrics[name] for name in SCORES if name in metrics}
    return {"tasks": scored, "tasks_s": round(time.perf_counter() - started, 3)}


def fewshot_prefix(rows: tuple, index: int, options: TaskOptions) -> str:
    """The k solved rows written before row `index`, each ended by the few-shot delimiter."""
    if not options.fewshot:
        return ""
    others = [other for other in range(len(rows)) if other != index]
    chosen = random.Random(options.seed * 1_000_003 + index).sample(others, options.fewshot)
    return "".join(_solved(rows[other]) + FEWSHOT_DELIMITER for other in chosen)


def _solved(row: ChoiceRow | GenerationRow) -> str:
    if isinstance(row, ChoiceRow):
        return row.context + TARGET_DELIMITER + row.choices[row.gold]
    return row.prompt + TARGET_DELIMITER + row.reference


# ---- multiple choice --------------------------------------------------------------------------------------------
def _multiple_choice(generator: Generator, rows: tuple, options: TaskOptions, report) -> tuple[dict, list[dict]]:
    right = right_norm = 0
    predictions = []
    for index, row in enumerate(rows):
        context = fewshot_prefix(rows, index, options) + row.context
        logps = choice_logps(generator, context, [TARGET_DELIMITER + choice for choice in row.choices])
        normalized = [logp / len(choice) for logp, choice in zip(logps, row.choices)]
        predicted, predicted_norm = int(np.argmax(logps)), int(np.argmax(normalized))
        right += predicted == row.gold
        right_norm += predicted_norm == row.gold
        predictions.append({
            "where": row.where, "gold": row.gold, "predicted": predicted, "predicted_norm": predicted_norm,
            "logps": [round(value, 6) for value in logps],
        })  # fmt: skip
        report(index + 1, len(rows))
    count = len(rows)
    return {
        "acc": round(right / count, 6),
        "acc_stderr": round(_stderr(right / count, count), 6),
        "acc_norm": round(right_norm / count, 6),
        "acc_norm_stderr": round(_stderr(right_norm / count, count), 6),
        "chance": round(sum(1 / len(row.choices) for row in rows) / count, 6),
    }, predictions


def _stderr(share: float, count: int) -> float:
    """The standard error of a mean of 0/1 scores (the sample's, as the harness reports it)."""
    return math.sqrt(share * (1 - share) / (count - 1)) if count > 1 else 0.0


@torch.inference_mode()
def choice_logps(generator: Generator, context: str, continuations: list[str]) -> list[float]:
    """The summed log-probability of each continuation given the context, as lm-evaluation-harness computes it."""
    spaces = len(context) - len(context.rstrip())
    if spaces:  # "Q: x " + "y" is scored as "Q: x" + " y": how a tokenizer joins a space to the next word
        context, continuations = context[:-spaces], [context[-spaces:] + text for text in continuations]
    context_ids = _ids(generator, context)
    rows = []
    for continuation in continuations:
        whole = _ids(generator, context + continuation)
        answer = whole[len(context_ids) :]
        ids = np.array(whole[-(generator.block_size + 1) :], dtype=np.int64)
        targets = np.where(np.arange(1, len(ids)) >= len(ids) - len(answer), ids[1:], IGNORE)
        rows.append([(ids[:-1], targets)])
    batch = padded_examples(rows, max(len(row[0][0]) for row in rows), packed=False)
    logits, _ = generator.model(batch.x.to(generator.device))
    return answer_logps(logits, batch.y.to(generator.device))[0].tolist()


def _ids(generator: Generator, text: str) -> list[int]:
    return generator.tokenizer.encode(text, add_special_tokens=False).ids


# ---- generation -------------------------------------------------------------------------------------------------
def _generation(generator: Generator, rows: tuple, options: TaskOptions, report) -> tuple[dict, list[dict]]:
    pattern = extraction_pattern(options.extract)
    chat = generator.chat_template is not None and generator.chat_default
    prompts = [fewshot_prefix(rows, index, options) + row.prompt for index, row in enumerate(rows)]
    if chat:
        prompts = [generator.chat_prompt([{"role": "user", "content": prompt}]) for prompt in prompts]
    encoded = [generator.encode(prompt) for prompt in prompts]
    answers = generator.greedy_answers(encoded, options.max_new_tokens, cut_at_blank_line=not chat, report=report)
    predictions = []
    for row, answer in zip(rows, answers):
        said, wanted = extracted(answer, pattern), extracted(row.reference, pattern)
        predictions.append({
            "where": row.where, "answer": answer, "extracted": said, "reference": row.reference,
            "exact_match": exact_match(said, wanted), "token_f1": round(token_f1(said, wanted), 6),
        })  # fmt: skip
    count = len(rows)
    matched = sum(prediction["exact_match"] for prediction in predictions)
    return {
        "exact_match": round(matched / count, 6),
        "exact_match_stderr": round(_stderr(matched / count, count), 6),
        "token_f1": round(sum(prediction["token_f1"] for prediction in predictions) / count, 6),
    }, predictions
