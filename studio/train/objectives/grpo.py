"""GRPO (DeepSeekMath; TRL's GRPOTrainer): answers sampled per prompt, scored by reward functions, each group's
answers compared with each other.

Each batch of prompts drawn is answered G = `train.group_size` times by the policy (the studio's KV-cache
sampling, up to `train.max_completion_tokens`, stopped at the end-of-turn token; a transformers policy answers the
batch's prompts together, left-padded: `completions`), and every answer scored by the
run's rewards (`studio.rewards`, summed with their weights). Within a group, the advantage of answer i is
A_i = (r_i − mean r) / (std r + 1e-4). The loss of an answer is the mean over its tokens t (the completion's, up to
and including its stop token; the prompt and what follows the stop add nothing) of

    −min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε) A) + β·(exp(q_t) − q_t − 1),   ρ_t = exp(log π(t) − log π_old(t)),

q_t = log π_ref(t) − log π(t) (the k3 estimate of KL(π ‖ π_ref)), ε `train.grpo_epsilon`, β `train.beta` (0: no KL
term, and no reference is built). The loss of a step is the mean over its answers.

The sampled answers are learned from by μ = `train.grpo_iterations` optimizer updates in a row (TRL's
`num_iterations`), and each update is one step, as for every objective: max_steps, the learning-rate schedule,
logs and checkpoints count updates, and a sampled batch spans μ steps (the last one cut short at max_steps).
π_old is the policy that sampled them: with μ = 1 that is π detached (ρ is 1 in value and the clip fraction 0,
while its gradient is the policy gradient A·∇log π); with μ > 1 its log-probabilities are computed once, when the
answers are sampled, and the answers, advantages and those log-probabilities are held (`TrainingState.held`, in
the checkpoint too) until their last update, so a run stopped between two updates of a batch resumes exactly.

Train events carry the reward's mean and its within-group std (and each function's mean), the answers' length,
the KL, the clip fraction, and the seconds spent generating and scoring apart from the rest of the step (the
rewards, length and KL of every update, so a batch learned from μ times counts μ times).
Evaluation answers every held-out prompt once (seeded) and reports the same rewards; samples show the first
held-out prompts' answers with their rewards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch

from studio.checkpoints.training_state import TrainingState
from studio.data.batches import ExampleFile, ExampleStream, StreamPosition
from studio.data.prompts import read_rows
from studio.inference.generate import SamplingConfig, left_padded, sample, stopped_length
from studio.model.readout import TokenLogProbs
from studio.model.trainable import RunModel
from studio.objectives import reference_kind
from studio.rewards import Reward, parse_rewards, score
from studio.train.objectives import SAMPLED_EXAMPLES, TrainingContext
from studio.train.objectives.causal_lm import EVAL_SEED_OFFSET
from studio.train.objectives.causal_lm import Objective as CausalLM
from studio.train.objectives.preference import Reference, base_dropout_off

ADVANTAGE_EPSILON = 1e-4  # keeps a group whose answers all scored alike at advantage 0, not 0/0


@dataclass
class PromptBatch:
    """Prompts to answer, with their rows (what the rewards check)."""

    prompts: list[np.ndarray]
    rows: list[dict[str, Any]]
    tokens: int  # prompt tokens read
    seed: int = 0  # the answers' sampling seed: the stream's position, so a resumed run samples what it would have


class PromptRows:
    """A split's prompts and rows, as the stream draws them."""

    def __init__(self, examples: ExampleFile, rows: list[dict[str, Any]]):
        self.examples, self.rows = examples, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: list[int], block_size: int) -> PromptBatch:
        prompts = [self.examples.text_ids(index) for index in indices]
        return PromptBatch(prompts, [self.rows[index] for index in indices], sum(map(len, prompts)))


class PromptStream(ExampleStream):
    """The prompts in seeded epochs, as ExampleStream draws examples (one counter: a resume continues exactly)."""

    def next(self, position: StreamPosition) -> PromptBatch:
        seed = self.seed + position.examples_drawn * self.world_size + self.rank
        indices = []
        for _ in range(self.batch_size):
            indices.append(self.example_index(position.examples_drawn))
            position.examples_drawn += 1
        return replace(self.examples.batch(indices, self.block_size), seed=seed)


@dataclass
class SampledBatch:
    """A batch's answers, G per prompt in order, with what every update learning from them needs."""

    x: torch.Tensor  # (N, T) inputs: prompt + completion per row, right-padded
    targets: torch.Tensor  # (N, T) the next token of each position
    mask: torch.Tensor  # (N, T) 1 on the completions' tokens
    rewards: torch.Tensor  # (N, R) each reward function's value, unweighted (on the CPU, as the weights)
    advantages: torch.Tensor  # (N,)
    old_logps: torch.Tensor | None  # (N, T) the sampling weights' log-probabilities; None: π detached (μ = 1)
    tokens: int  # prompt tokens read
    generation_seconds: float = 0.0  # spent sampling and scoring it (0 when learned from again)

    # what TrainingState.held keeps of it (with its tokens), when it is learned from again
    HELD: ClassVar[tuple[str, ...]] = ("x", "targets", "mask", "rewards", "advantages", "old_logps")

    @property
    def supervised(self) -> int:
        return len(self.x)  # the loss is a mean over the answers

    def to(self, device: torch.device, pin: bool = False) -> SampledBatch:
        moved = {name: getattr(self, name).to(device) for name in ("x", "targets", "mask", "advantages")}
        old_logps = None if self.old_logps is None else self.old_logps.to(device)
        return replace(self, **moved, old_logps=old_logps)

    def held(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.HELD} | {"tokens": torch.tensor(self.tokens)}

    @classmethod
    def from_held(cls, tensors: dict[str, torch.Tensor]) -> SampledBatch:
        return cls(**{name: tensors[name] for name in cls.HELD}, tokens=int(tensors["tokens"]))


class SampledStream:
    """The training prompts, each batch answered when drawn and learned from by μ updates in a row: at a sampled
    batch's first update it is sampled (and held for the later ones), at its later updates taken from the held
    ones in order, at its last update let go. A rank that resumed with nothing held (a checkpoint of fewer
    processes) samples anew."""

    def __init__(self, prompts: PromptStream, sampled: Callable[[PromptBatch], SampledBatch], iterations: int):
        self.prompts, self.sampled, self.iterations = prompts, sampled, iterations
        self.step, self.fresh = -1, True  # the step being drawn, and whether its batches are sampled anew

    def next(self, state: TrainingState) -> SampledBatch:
        if state.step != self.step:  # the step's first micro-batch
            self.step = state.step
            self.fresh = state.step % self.iterations == 0 or not state.held
        batch = self.sampled(self.prompts.next(state)) if self.fresh else SampledBatch.from_held(state.held.pop(0))
        if state.step % self.iterations < self.iterations - 1:  # learned from again
            state.held.append(batch.held())
        return batch


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) rewards to advantages: each group's rewards centred and scaled by its (unbiased) std + 1e-4."""
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + ADVANTAGE_EPSILON)


@dataclass
class SurrogateTerms:
    """Per answer: the loss (a mean over its tokens), the KL estimate, and the share of its tokens clipped."""

    loss: torch.Tensor
    kl: torch.Tensor
    clipped: torch.Tensor


def clipped_surrogate(
    logps: torch.Tensor, old_logps: torch.Tensor, reference_logps: torch.Tensor | None, advantages: torch.Tensor,
    mask: torch.Tensor, epsilon: float, beta: float,
) -> SurrogateTerms:  # fmt: skip
    """GRPO's loss per answer from per-token log-probabilities (N, T) of the policy, the policy that sampled the
    answers and the reference (None: no KL term), the answers' advantages (N,) and their tokens' mask (N, T)."""
    ratio = torch.exp(logps - old_logps)
    advantage = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * advantage, ratio.clamp(1 - epsilon, 1 + epsilon) * advantage)
    kl = torch.zeros_like(logps)
    if reference_logps is not None:
        log_ratio = reference_logps - logps
        kl = torch.exp(log_ratio) - log_ratio - 1
        per_token = per_token + beta * kl
    clipped = ((ratio < 1 - epsilon) & (advantage < 0)) | ((ratio > 1 + epsilon) & (advantage > 0))
    mask = mask.to(logps.dtype)
    tokens = mask.sum(1).clamp(min=1)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum(1) / tokens

    return SurrogateTerms(mean(per_token), mean(kl).detach(), mean(clipped.to(logps.dtype)))


@dataclass
class Answers:
    """A batch's answers, G per prompt in order, as one right-padded batch: prompt + completion per row."""

    x: torch.Tensor  # (N, T) inputs
    targets: torch.Tensor  # (N, T) the next token of each position (anything where the mask is 0)
    mask: torch.Tensor  # (N, T) 1 on the completion's tokens, up to and including its stop token
    texts: list[str]  # the completions, decoded
    rewards: torch.Tensor  # (N, R) each reward function's value, unweighted


class Objective(CausalLM):
    def __init__(self, context: TrainingContext):
        super().__init__(context)
        self.rewards: list[Reward] = parse_rewards(context.config.train.rewards)
        self.weights = torch.tensor([reward.weight for reward in self.rewards], dtype=torch.float64)
        self.reference: Reference | None = None  # built by attach when β > 0
        self.policy: torch.nn.Module | None = None  # the run's plain module, which samples (attach)
        self.window = torch.zeros(7 + len(self.rewards), dtype=torch.float64)  # see train_fields

    def attach(self, run_model: RunModel) -> list[torch.nn.Parameter]:
        """The module that samples the answers, without the model's own dropout (as the preference objectives:
        sampling, the old policy's log-probabilities and the update must see one function), and the reference
        when β > 0."""
        self.policy = run_model.module
        base_dropout_off(run_model.module)
        if reference_kind(self.context.config) is None:
            return []
        self.reference = Reference(run_model, self.context.accelerator.device)
        return self.reference.parameters()

    def prompt_rows(self, split: str) -> PromptRows:
        dataset = self.context.dataset
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        return PromptRows(examples, read_rows(dataset.path / f"{split}.rows"))

    def batches(self, split: str, shuffle: bool) -> SampledStream:
        context = self.context
        prompts = PromptStream(
            self.prompt_rows(split), context.config.train.batch_size, context.block_size, False,
            context.config.train.seed, context.rank, context.world, shuffle,
        )  # fmt: skip
        return SampledStream(prompts, self.sampled, context.config.train.grpo_iterations)

    @torch.no_grad()
    def sampled(self, batch: PromptBatch) -> SampledBatch:
        """The batch's prompts answered G times each (seeded by the stream's position), with their advantages, and
        with μ > 1 the log-probabilities of the weights that sampled them, which the later updates' ratio needs."""
        started = time.perf_counter()
        context, group = self.context, self.context.config.train.group_size
        answers = self.answer(batch.prompts, batch.rows, group, torch.Generator().manual_seed(batch.seed))
        total = answers.rewards @ self.weights  # (N,)
        advantages = group_advantages(total.view(-1, group)).view(-1).float().to(answers.x.device)
        old_logps = None
        if context.config.train.grpo_iterations > 1:
            with context.accelerator.autocast():
                old_logps = self.token_logps(self.policy, answers.x, answers.targets)
        return SampledBatch(
            answers.x, answers.targets, answers.mask, answers.rewards, advantages, old_logps, batch.tokens,
            time.perf_counter() - started,
        )  # fmt: skip

    @torch.no_grad()
    def answer(self, prompts: list[np.ndarray], rows: list[dict], group: int, generator: torch.Generator) -> Answers:
        """`group` sampled answers to each prompt, scored by every reward."""
        context, train = self.context, self.context.config.train
        device, tokenizer = context.accelerator.device, context.tokenizer
        sampling = SamplingConfig(max_new_tokens=min(train.max_completion_tokens, context.block_size - 1))
        sequences, masks, texts, scores = [], [], [], []
        for ids, row, completions in zip(prompts, rows, self.completions(prompts, group, sampling, generator)):
            prompt_text = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
            for completion in completions.tolist():
                length = stopped_length(completion, self.stop_ids)
                text = tokenizer.decode(completion[:length])
                sequences.append(ids.tolist() + completion[:length])
                masks.append([0] * (len(ids) - 1) + [1] * length)
                texts.append(text)
                scores.append(score(self.rewards, prompt_text, text, row))
        width = max(map(len, sequences)) - 1
        x = torch.zeros(len(sequences), width, dtype=torch.long)
        targets, mask = torch.zeros_like(x), torch.zeros_like(x)
        for index, (sequence, learned) in enumerate(zip(sequences, masks)):
            x[index, : len(sequence) - 1] = torch.tensor(sequence[:-1])
            targets[index, : len(sequence) - 1] = torch.tensor(sequence[1:])
            mask[index, : len(learned)] = torch.tensor(learned)
        rewards = torch.tensor(scores, dtype=torch.float64)
        return Answers(x.to(device), targets.to(device), mask.to(device), texts, rewards)

    def completions(
        self, prompts: list[np.ndarray], group: int, sampling: SamplingConfig, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Each prompt's `group` sampled completions (group, N). A transformers policy answers `train.batch_size`
        prompts at a time (a training step's; evaluation answers more) in one left-padded batch when prompt and
        answer fit in the context: one decoding forward per token for all, not per prompt (4 prompts generated in
        0.42x the time on a CPU). The studio's own models answer one prompt at a time."""
        context = self.context
        rows = [torch.as_tensor(ids, dtype=torch.long, device=context.accelerator.device) for ids in prompts]
        fits = max(len(ids) for ids in rows) + sampling.max_new_tokens <= context.block_size
        answer = partial(sample, self.policy, block_size=context.block_size, sampling=sampling, generator=generator,
                         stop_ids=self.stop_ids)  # fmt: skip
        with context.accelerator.autocast():
            if not (getattr(self.policy, "takes_padding", False) and fits):
                return [answer(prompt.repeat(group, 1)) for prompt in rows]
            completions, size = [], context.config.train.batch_size
            for first in range(0, len(rows), size):
                ids, pads = left_padded([prompt for prompt in rows[first : first + size] for _ in range(group)])
                completions += answer(ids, pads=pads).split(group)
            return completions

    def loss_sums(self, model: torch.nn.Module, batch: SampledBatch) -> torch.Tensor:
        train = self.context.config.train
        logps = self.token_logps(model, batch.x, batch.targets)
        old_logps = logps.detach() if batch.old_logps is None else batch.old_logps
        reference = None
        if self.reference is not None:
            reference = self.token_logps(self.reference, batch.x, batch.targets)
        terms = clipped_surrogate(
            logps, old_logps, reference, batch.advantages, batch.mask, train.grpo_epsilon, train.beta
        )
        total = batch.rewards @ self.weights
        self.window += torch.tensor([
            len(total), total.sum(), total.view(-1, train.group_size).std(1).sum(), batch.mask.sum().item(),
            terms.kl.sum().item(), terms.clipped.sum().item(), batch.generation_seconds, *batch.rewards.sum(0).tolist(),
        ], dtype=torch.float64)  # fmt: skip
        loss = terms.loss.sum()
        return torch.stack([loss, loss.detach(), torch.zeros_like(loss)])

    def token_logps(self, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each target's log-probability (N, T) in fp32 under `model` (the policy, or its reference), read from the
        final states a chunk of tokens at a time (studio.model.readout)."""
        return model(x, readout=TokenLogProbs(targets, self.chunk_rows))[0]

    def train_fields(self, seconds: float) -> dict[str, Any]:
        """The answers since the last train event, over every process: the reward's mean, its within-group std and
        each function's mean, the answers' mean length, KL and clip fraction; generation and scoring seconds
        (rank 0's) apart from the rest of the steps (the update)."""
        sums = self.context.accelerator.reduce(self.window.to(self.context.accelerator.device), "sum").tolist()
        generation_seconds = float(self.window[6])
        self.window.zero_()
        answers, group = max(sums[0], 1), self.context.config.train.group_size
        return {
            "reward": round(sums[1] / answers, 6),
            "reward_std": round(sums[2] / (answers / group), 6),
            "rewards": {reward.name: round(value / answers, 6) for reward, value in zip(self.rewards, sums[7:])},
            "completion_len": round(sums[3] / answers, 3),
            "kl": round(sums[4] / answers, 6),
            "clip_fraction": round(sums[5] / answers, 6),
            "generation_s": round(generation_seconds, 3),
            "update_s": round(max(seconds - generation_seconds, 0.0), 3),
        }

    def evaluate(self, model: torch.nn.Module, eval_steps: int) -> dict[str, Any]:
        """Every held-out prompt answered once (seeded alike each time), each process its share: the reward's mean
        and std over the answers, each function's mean, and the answers' length."""
        context = self.context
        rows = self.prompt_rows("val")
        mine = list(range(context.rank, len(rows), context.world))
        generator = torch.Generator().manual_seed(context.config.train.seed + EVAL_SEED_OFFSET)
        totals = torch.zeros(4 + len(self.rewards), dtype=torch.float64)  # answers, reward, its square, length
        if mine:
            answers = self.answer([rows.examples.text_ids(i) for i in mine], [rows.rows[i] for i in mine], 1, generator)
            total = answers.rewards @ self.weights
            totals += torch.tensor([
                len(total), total.sum(), (total**2).sum(), answers.mask.sum().item(), *answers.rewards.sum(0).tolist()
            ], dtype=torch.float64)  # fmt: skip
        sums = context.accelerator.reduce(totals.to(context.accelerator.device), "sum").tolist()
        count = max(sums[0], 1)
        mean = sums[1] / count
        return {
            "val_reward": round(mean, 6),
            "val_reward_std": round(max(sums[2] / count - mean**2, 0.0) ** 0.5, 6),
            "val_rewards": {reward.name: round(value / count, 6) for reward, value in zip(self.rewards, sums[4:])},
            "val_completion_len": round(sums[3] / count, 3),
        }

    def samples(self, model: torch.nn.Module, generator: torch.Generator) -> list[dict[str, Any]]:
        """The first held-out prompts (as the chat template rendered them), answered, with their rewards."""
        dataset = self.context.dataset
        rows = self.prompt_rows("val" if dataset.meta.examples.get("val") else "train")
        indices = range(min(SAMPLED_EXAMPLES, len(rows)))
        prompts = [rows.examples.text_ids(i) for i in indices]
        answers = self.answer(prompts, [rows.rows[i] for i in indices], 1, generator)
        tokenizer = self.context.tokenizer
        return [
            {
                "prompt": tokenizer.decode(ids.tolist(), skip_special_tokens=False),
                "text": text,
                "reward": round(float(values @ self.weights), 4),
                "rewards": dict(zip((reward.name for reward in self.rewards), values.tolist())),
            }
            for ids, text, values in zip(prompts, answers.texts, answers.rewards)
        ]
