"""The preference objectives, side by side: DPO, IPO, ORPO, SimPO (pairs) and KTO (unpaired rows), as TRL defines them.

Every answer's log-probability is the sum of its learned tokens' (the answer's; prompt and padding add nothing). A
batch of pairs is one forward: the chosen answers' rows, then the rejected ones', right-padded together. With
π the policy, π_ref the reference (the base with its adapters off, or a frozen copy of the starting weights), β
`train.beta`, and per pair the log-ratios c = log π(chosen) − log π_ref(chosen), r = the same of rejected:

- DPO:   −log σ(β(c − r)); with label smoothing ε (robust DPO): (−(1−ε) log σ(βΔ) + ε log σ(−βΔ)) / (1 − 2ε)
- IPO:   (c/|chosen| − r/|rejected| − 1/(2β))², the log-ratios per answer token
- ORPO:  −log π(chosen)/|chosen| − β log σ(log odds(chosen) − log odds(rejected)), odds p/(1−p) of the per-token
         mean log-probability; no reference
- SimPO: −log σ(β(log π(chosen)/|chosen| − log π(rejected)/|rejected|) − γ); no reference
- KTO:   per answer, desirable w_d(1 − σ(β(c − z))), undesirable w_u(1 − σ(β(z − c))), z the batch's KL estimate
         (each prompt with another row's answer, policy against reference, clamped at 0, no gradient)

The reward of an answer is β·(log π − log π_ref) (β·log π per token for ORPO and SimPO); the loss of a step is the mean
over its pairs (KTO: rows), whatever the accumulation. The reference's log-probabilities may instead be computed once
before training (`train.precompute_reference`, DPO and IPO, whose pairs are fixed): then no reference model is kept, and
the run's folder keeps them for a resume (`REFERENCE_LOGPS`). The model's own dropout is turned off, as TRL does by
default: the policy and its reference must be the same function at the start, or the first loss is not ln 2 (a GPT-2
checkpoint drops 10%); adapters keep theirs. Train events carry the same figures as evaluation over the steps since the
last one (the rewards, margin, pairwise accuracy and log-probabilities). Evaluation covers the validation split: the
loss, the rewards of chosen and rejected, their margin, the share of pairs whose chosen answer is rewarded above the
rejected one, and the answers' log-probabilities. Samples answer the first held-out prompts.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import torch
import torch.nn.functional as F

from studio.atomic_write import write_atomically
from studio.data.batches import IGNORE, ExampleFile, ExampleStream, StreamPosition, padded_examples
from studio.data.preferences import PAIRS
from studio.errors import StudioError
from studio.model import answer_sums
from studio.model.readout import Readout, TokenLogProbs
from studio.model.trainable import RunModel
from studio.objectives import OBJECTIVES, reference_kind
from studio.run_folder.layout import REFERENCE_LOGPS
from studio.train.objectives import SAMPLED_EXAMPLES, TrainingContext
from studio.train.objectives.causal_lm import Objective as CausalLM

LN2 = math.log(2.0)


@dataclass
class PreferenceBatch:
    """Rows of answers: a pair's chosen and rejected rows are i and i + pairs; unpaired rows have a label each."""

    x: torch.Tensor  # (N, T) input ids, right-padded
    y: torch.Tensor  # (N, T) targets: the answer's tokens, IGNORE elsewhere (prompt, padding)
    tokens: int  # real tokens read
    rows: int  # what the loss is a mean over: pairs, or unpaired rows
    answers: np.ndarray  # (N,) the examples read, row by row (precomputed reference log-probabilities are theirs)
    desirable: torch.Tensor | None = None  # (N,) unpaired rows' labels
    mismatched: tuple[torch.Tensor, torch.Tensor] | None = None  # KTO: (x, y) of each prompt with another answer

    @property
    def supervised(self) -> int:
        return self.rows

    def to(self, device: torch.device, pin: bool = False) -> PreferenceBatch:
        def moved(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=True)

        desirable = None if self.desirable is None else moved(self.desirable)
        mismatched = None if self.mismatched is None else (moved(self.mismatched[0]), moved(self.mismatched[1]))
        return PreferenceBatch(
            moved(self.x), moved(self.y), self.tokens, self.rows, self.answers, desirable, mismatched
        )


class PreferenceRows:
    """A split's rows as the objective reads them: pairs (two examples each), or unpaired answers (a paired
    dataset's chosen answers desirable and rejected ones not, for KTO)."""

    def __init__(self, examples: ExampleFile, paired_data: bool, paired: bool, desirable: np.ndarray | None):
        self.examples, self.paired = examples, paired
        self.per_row = 2 if paired else 1
        if paired_data:
            desirable = np.arange(len(examples)) % 2 == 0  # chosen, rejected, chosen, ...
        self.desirable = desirable

    def __len__(self) -> int:
        return len(self.examples) // self.per_row

    def batch(self, rows: list[int], block_size: int) -> PreferenceBatch:
        if self.paired:
            answers = [2 * row for row in rows] + [2 * row + 1 for row in rows]
        else:
            answers = rows
        padded = self.answers_batch(answers, block_size)
        if self.paired:
            return PreferenceBatch(padded.x, padded.y, padded.tokens, len(rows), np.array(answers))
        desirable = torch.from_numpy(self.desirable[rows].astype(bool))
        return PreferenceBatch(
            padded.x, padded.y, padded.tokens, len(rows), np.array(answers), desirable,
            self.mismatched(rows, block_size),
        )  # fmt: skip

    def answers_batch(self, answers: list[int], block_size: int):
        """The examples (prompt and answer) right-padded into one batch."""
        pairs = [[self.examples.pair(index, block_size)] for index in answers]
        return padded_examples(pairs, max(len(pair[0][0]) for pair in pairs), packed=False)

    def mismatched(self, rows: list[int], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's prompt with the previous row's answer (the first's with the last's), as TRL's KTO pairs them."""
        examples = self.examples
        prompts = [examples.prompt(row) for row in rows]
        answers = [examples.text_ids(row)[len(prompt) :] for row, prompt in zip(rows, prompts)]
        answers = answers[-1:] + answers[:-1]
        pairs = []
        for prompt, answer in zip(prompts, answers):
            ids = np.concatenate([prompt, answer])[: block_size + 1]
            targets = np.where(np.arange(1, len(ids)) >= len(prompt), ids[1:], IGNORE)
            pairs.append([(ids[:-1], targets)])
        padded = padded_examples(pairs, max(len(pair[0][0]) for pair in pairs), packed=False)
        return padded.x, padded.y


class PreferenceStream(ExampleStream):
    """The rows in seeded epochs, as ExampleStream draws examples (one counter: a resume continues exactly)."""

    def next(self, position: StreamPosition) -> PreferenceBatch:
        rows = []
        for _ in range(self.batch_size):
            rows.append(self.example_index(position.examples_drawn))
            position.examples_drawn += 1
        return self.examples.batch(rows, self.block_size)


def base_dropout_off(module: torch.nn.Module) -> None:
    """No dropout in the model itself (adapters keep theirs): the policy then equals its reference at the start."""
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Dropout) and "lora_dropout" not in name:
            layer.p = 0.0


class Reference:
    """What the policy is measured against: the base with its adapters off (peft's disable_adapter: no second
    copy), or for full fine-tuning a frozen copy of the starting weights, made before a checkpoint is loaded."""

    def __init__(self, run_model: RunModel, device: torch.device):
        self.run_model = run_model
        self.frozen = None
        if not run_model.adapters:
            self.frozen = copy.deepcopy(run_model.module).to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, readout: Readout | None = None) -> tuple:
        """Called as the model is: the reference's logits of x, or what `readout` reads of its outputs."""
        if self.frozen is not None:
            return self.frozen(x, readout=readout)
        with self.run_model.inner.disable_adapter():
            return self.run_model.module(x, readout=readout)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The weights it adds to the run's: the frozen copy's, none for the adapters' base."""
        return [] if self.frozen is None else list(self.frozen.parameters())


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, stable on both sides of −ln 2 (TRL's branches), finite as x approaches 0. Each
    branch is fed only the values it is used for, so the unused one adds no NaN to the gradient."""
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near = x >= -LN2
    near_zero = torch.log(-torch.expm1(torch.where(near, x, -LN2)))
    far = torch.log1p(-torch.exp(torch.where(near, -LN2, x)))
    return torch.where(near, near_zero, far)


@dataclass
class PairTerms:
    """Per pair (or unpaired row): the loss, the rewards, and the policy's log-probabilities."""

    loss: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor
    logp_chosen: torch.Tensor
    logp_rejected: torch.Tensor


def pair_losses(
    name: str, train, policy: tuple[torch.Tensor, ...], reference: tuple[torch.Tensor, ...] | None
) -> PairTerms:
    """The loss per pair of a paired objective, from the policy's (logp chosen, logp rejected, tokens chosen, tokens
    rejected) and the reference's (logp chosen, logp rejected) when it has one."""
    chosen, rejected, chosen_tokens, rejected_tokens = policy
    beta = train.beta
    if name in ("orpo", "simpo"):  # no reference: the per-token mean log-probabilities
        chosen_mean, rejected_mean = chosen / chosen_tokens.clamp(min=1), rejected / rejected_tokens.clamp(min=1)
        if name == "orpo":
            log_odds = (chosen_mean - rejected_mean) - (log1mexp(chosen_mean) - log1mexp(rejected_mean))
            loss = -chosen_mean - beta * F.logsigmoid(log_odds)
        else:
            loss = -F.logsigmoid(beta * (chosen_mean - rejected_mean) - train.simpo_gamma)
        return PairTerms(loss, beta * chosen_mean.detach(), beta * rejected_mean.detach(), chosen, rejected)
    chosen_ratio, rejected_ratio = chosen - reference[0], rejected - reference[1]
    if name == "dpo":
        delta, smoothing = beta * (chosen_ratio - rejected_ratio), train.label_smoothing
        loss = (-(1 - smoothing) * F.logsigmoid(delta) + smoothing * F.logsigmoid(-delta)) / (1 - 2 * smoothing)
    else:  # ipo
        per_token = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        loss = (per_token - 1 / (2 * beta)) ** 2
    return PairTerms(loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach(), chosen, rejected)


def kto_losses(train, logps: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor):
    """KTO's loss per row, and the rows' rewards β·(log π − log π_ref)."""
    ratio = logps - reference
    loss = torch.where(
        desirable,
        train.kto_desirable_weight * (1 - torch.sigmoid(train.beta * (ratio - kl))),
        train.kto_undesirable_weight * (1 - torch.sigmoid(train.beta * (kl - ratio))),
    )
    return loss, train.beta * ratio.detach()


def figure_sums(terms: PairTerms, batch: PreferenceBatch) -> torch.Tensor:
    """What a batch adds to the reported figures: the loss and its rows; the chosen answers' reward, log-probability
    and count; the rejected ones' the same; the pairs ranked right (a pair's chosen rewarded above its rejected)."""
    chosen = rejected = torch.ones_like(terms.loss, dtype=torch.bool)  # pairs: every row has both
    if batch.desirable is not None:
        chosen, rejected = batch.desirable, ~batch.desirable
    right = (terms.reward_chosen > terms.reward_rejected) & chosen & rejected
    return torch.stack([
        terms.loss.detach().sum(), torch.tensor(len(terms.loss), device=terms.loss.device),
        terms.reward_chosen[chosen].sum(), terms.logp_chosen.detach()[chosen].sum(), chosen.sum(),
        terms.reward_rejected[rejected].sum(), terms.logp_rejected.detach()[rejected].sum(), rejected.sum(),
        right.sum(),
    ]).double()  # fmt: skip


class Objective(CausalLM):
    def __init__(self, context: TrainingContext):
        super().__init__(context)
        self.spec = OBJECTIVES[context.config.train.objective]
        meta = context.dataset.meta
        if self.spec.paired and meta.row_format != PAIRS:
            raise StudioError(
                f"train.objective {self.spec.name} learns from pairs (prompt, chosen, rejected); dataset {meta.name} "
                "holds unpaired rows (completion, label): use --objective kto, or give paired rows"
            )
        self.reference: Reference | None = None  # set by the trainer once the model is built (attach)
        self.reference_logps: dict[str, np.ndarray] = {}  # split -> per example, when precomputed (attach)
        # figure_sums since the last train event
        self.window = torch.zeros(9, dtype=torch.float64, device=context.accelerator.device)

    def attach(self, run_model: RunModel) -> list[torch.nn.Parameter]:
        """The reference of an objective that has one, from the run's starting weights: a model, or the answers'
        log-probabilities computed now (then the weights it adds are none)."""
        base_dropout_off(run_model.module)
        kind = reference_kind(self.context.config)
        if kind == "precomputed":
            self.reference_logps = self.kept_reference_logps(run_model)
        elif kind is not None:
            self.reference = Reference(run_model, self.context.accelerator.device)
            return self.reference.parameters()
        return []

    def kept_reference_logps(self, run_model: RunModel) -> dict[str, np.ndarray]:
        """The answers' reference log-probabilities, computed at the run's first start and kept in its folder: a
        resumed run reads them (its starting weights and its examples are the run's own), unless the file does not
        hold one value per example of each split, when they are computed again."""
        path = self.context.run_dir / REFERENCE_LOGPS
        counts = {split: len(self.rows(split).examples) for split in ("train", "val")}
        if path.is_file():
            try:
                kept = safetensors.numpy.load(path.read_bytes())
            except safetensors.SafetensorError:
                kept = {}
            if {split: len(kept.get(split, ())) for split in counts} == counts:
                return kept
        logps = self.precomputed_logps(run_model)
        if self.context.accelerator.is_main_process:
            write_atomically(path, safetensors.numpy.save(logps))
        return logps

    @torch.no_grad()
    def precomputed_logps(self, run_model: RunModel) -> dict[str, np.ndarray]:
        """Every answer's log-probability under the starting weights (adapters off), in one pass over both splits.
        Each process computes them all: a pass done once, that any process's rows may then read."""
        context, module = self.context, run_model.module
        if context.config.train.method != "qlora":  # a 4-bit base is placed on its device when loaded
            module.to(context.accelerator.device)
        training, adapters_off = module.training, contextlib.nullcontext()
        if run_model.adapters:
            adapters_off = run_model.inner.disable_adapter()
        module.eval()
        logps = {}
        with adapters_off:
            for split in ("train", "val"):
                rows, batch_size = self.rows(split), context.config.train.batch_size
                values = []
                for start in range(0, len(rows.examples), batch_size):
                    answers = list(range(start, min(start + batch_size, len(rows.examples))))
                    batch = rows.answers_batch(answers, context.block_size)
                    with context.accelerator.autocast():
                        answer = self.answer_logps(module, batch.x, batch.y, context.accelerator.device)[0]
                    values.append(answer.cpu().numpy())
                logps[split] = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
        module.train(training)
        return logps

    def reference_of(self, batch: PreferenceBatch, split: str) -> torch.Tensor | None:
        """The reference's log-probabilities of the batch's answers: precomputed, or from the reference model."""
        if self.reference_logps:
            return torch.from_numpy(self.reference_logps[split][batch.answers]).to(batch.x.device)
        if self.reference is None:
            return None
        return self.answer_logps(self.reference, batch.x, batch.y)[0]

    def answer_logps(self, model, x: torch.Tensor, y: torch.Tensor, device: torch.device | None = None):
        """Per row, the answer's log-probability under `model` (the policy, or its reference) and its number of
        tokens, read from the final states a chunk of tokens at a time (studio.model.readout)."""
        x, y = (x, y) if device is None else (x.to(device), y.to(device))
        return answer_sums(model(x, readout=TokenLogProbs(y, self.chunk_rows))[0], y)

    def rows(self, split: str) -> PreferenceRows:
        dataset = self.context.dataset
        desirable_path = dataset.path / f"{split}.desirable"
        desirable = np.fromfile(desirable_path, dtype=np.uint8) if desirable_path.is_file() else None
        examples = ExampleFile(dataset.bin_path(split), dataset.dtype)
        return PreferenceRows(examples, dataset.meta.row_format == PAIRS, self.spec.paired, desirable)

    def batches(self, split: str, shuffle: bool) -> PreferenceStream:
        context = self.context
        return PreferenceStream(
            self.rows(split), context.config.train.batch_size, context.block_size, False,
            context.config.train.seed, context.rank, context.world, shuffle,
        )  # fmt: skip

    def terms(self, model: torch.nn.Module, batch: PreferenceBatch, split: str = "train") -> PairTerms:
        """The loss and what is reported, per pair (KTO: per row), from one forward of all the batch's rows."""
        logps, tokens = self.answer_logps(model, batch.x, batch.y)
        reference = self.reference_of(batch, split)
        train = self.context.config.train
        if batch.desirable is None:
            pairs = batch.rows
            policy = (logps[:pairs], logps[pairs:], tokens[:pairs], tokens[pairs:])
            return pair_losses(self.spec.name, train, policy, None if reference is None else reference.chunk(2))
        kl = self.kl_estimate(model, batch)
        loss, rewards = kto_losses(train, logps, reference, batch.desirable, kl)
        return PairTerms(loss, rewards, rewards, logps, logps)

    def kl_estimate(self, model: torch.nn.Module, batch: PreferenceBatch) -> torch.Tensor:
        """KTO's z: the mean log-ratio of the prompts answered with other rows' answers, at least 0, no gradient.
        Over the micro-batch, on each process: z is then the same whether a step's rows are split between processes
        or accumulated by one (TRL gathers it over the processes, so its z changes with their number)."""
        x, y = batch.mismatched
        with torch.no_grad():
            policy = self.answer_logps(model, x, y)[0]
            reference = self.answer_logps(self.reference, x, y)[0]
        return (policy - reference).mean().clamp(min=0)

    def loss_sums(self, model: torch.nn.Module, batch: PreferenceBatch) -> torch.Tensor:
        terms = self.terms(model, batch)
        self.window += figure_sums(terms, batch)
        loss = terms.loss.sum()
        return torch.stack([loss, loss.detach(), torch.zeros_like(loss)])

    def train_fields(self, seconds: float) -> dict[str, Any]:
        """The figures evaluation reports, over the rows since the last train event (its loss is the trainer's)."""
        sums = self.context.accelerator.reduce(self.window, "sum").tolist()
        self.window.zero_()
        fields = self.figures(sums, prefix="")
        del fields["loss"]
        return fields

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, eval_steps: int) -> dict[str, Any]:
        """The whole validation split, each process its share of the rows (`figures`)."""
        context = self.context
        rows = self.rows("val")
        totals = torch.zeros(9, dtype=torch.float64, device=context.accelerator.device)
        for share in context.shares(len(rows)):
            batch = rows.batch(share or [0], context.block_size).to(context.accelerator.device)
            terms = self.terms(model, batch, "val")
            if share:  # else this process had run out of rows: its forwards were only its part in FSDP's gathers
                totals += figure_sums(terms, batch)
        return self.figures(context.accelerator.reduce(totals, "sum").tolist(), prefix="val_")

    def figures(self, sums: list[float], prefix: str) -> dict[str, Any]:
        """From figure_sums added up: the loss, the rewards of chosen and rejected answers, their margin, the share
        of pairs whose chosen answer is rewarded above the rejected one (pairs only; KTO's rewards are of its
        desirable and undesirable answers), and the answers' log-probabilities."""
        loss, count, chosen_reward, chosen_logp, chosen_n, rejected_reward, rejected_logp, rejected_n, right = sums
        reward_chosen, reward_rejected = chosen_reward / max(chosen_n, 1), rejected_reward / max(rejected_n, 1)
        figures = {
            "loss": round(loss / max(count, 1), 6),
            "pair_acc": round(right / max(count, 1), 6) if self.spec.paired else None,
            "margin": round(reward_chosen - reward_rejected, 6),
            "reward_chosen": round(reward_chosen, 6),
            "reward_rejected": round(reward_rejected, 6),
            "logp_chosen": round(chosen_logp / max(chosen_n, 1), 6),
            "logp_rejected": round(rejected_logp / max(rejected_n, 1), 6),
        }
        return {prefix + key: value for key, value in figures.items()}

    def samples(self, model: torch.nn.Module, generator: torch.Generator) -> list[dict[str, str]]:
        """The first held-out rows' prompts (as the chat template rendered them), answered by the model."""
        dataset = self.context.dataset
        split = "val" if dataset.meta.examples.get("val") else "train"
        rows = self.rows(split)
        tokenizer = self.context.tokenizer
        samples = []
        for row in range(min(SAMPLED_EXAMPLES, len(rows))):
            ids = rows.examples.prompt(row * rows.per_row)
            prompt = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
            samples.append({"prompt": prompt, "text": self.continued(model, ids, generator)})
        return samples
