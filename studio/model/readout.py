"""What a loss reads from the final hidden states through the output head, without whole logits.

A language model's logits are batch × context × vocabulary floats, and a loss on them keeps two or three such
tensors for its backward: at today's vocabularies (128K–262K tokens) more than the model itself. A `Readout` is
handed to the model's forward (`model(ids, readout=...)`), which then returns what the readout computes from its
final hidden states and its `OutputHead` instead of the logits. Its chunked path takes the tokens a chunk at a
time (`chunk_rows` of them, studio.sizing.sizes.loss_chunk_rows: 64 MiB of fp32 logits, or the head's width in
tokens when more and its weight trains): the head's matmul, the
upcast to fp32 and the loss, and the gradient of the chunk computed right there (Liger's fused linear
cross-entropy does the same), so nothing vocabulary-wide outlives its chunk. A loss that is one sum (the
cross-entropy, the distillation's KL) keeps its gradients from the forward, scaled in the backward; per-token
values (the preference objectives' and GRPO's log-probabilities) recompute each chunk in the backward, whose
gradient then weighs each token differently. With `chunk_rows` 0 a readout computes the whole logits, exactly as
before (train.chunked_loss false).

Going through the forward keeps what wraps it (DDP's hooks, FSDP's gathered weights, autocast) around the head too.
On CUDA, when `cut-cross-entropy` is installed, the cross-entropy sum goes through its kernel instead
(`cross_entropy_backend`, reported in the run's `running` event).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studio.data.batches import IGNORE
from studio.model import distill_loss_sum, lm_loss_sum, token_logps
from studio.sizing.sizes import loss_chunk_rows

AUTO = -1  # a readout's chunk_rows: loss_chunk_rows of the head's own vocabulary and width


def cross_entropy_backend(device_type: str, chunked: bool) -> str:
    """How the cross-entropy reads the head on this device: a fused kernel when one is installed for it (CUDA),
    the chunked PyTorch path elsewhere, or the whole logits when chunking is off."""
    if not chunked:
        return "whole logits"
    if device_type == "cuda" and installed("cut_cross_entropy"):
        return "cut-cross-entropy"
    return "chunked (pytorch)"


@functools.cache
def installed(package: str) -> bool:
    """Whether a package can be imported (looked up once: the loss asks at every step)."""
    return importlib.util.find_spec(package) is not None


@dataclass
class OutputHead:
    """The map from final hidden states to logits: weight (vocab, width), an optional bias, and Gemma's final
    soft-capping (cap·tanh(logits/cap)). No weight: the states are the logits already (a model whose head the
    studio does not apply itself)."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None = None
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden if self.weight is None else F.linear(hidden, self.weight, self.bias)
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


LOGITS_ALREADY = OutputHead(None)


# ---- what a chunk's loss is, and its gradient with respect to the chunk's fp32 logits ------------------------
class CrossEntropyScore:
    """−log p(target) per token, of the learned tokens alone (the readouts hand it those rows' states)."""

    def __init__(self, targets: torch.Tensor):
        self.targets = targets  # (N,), none IGNORE

    def values(self, logits: torch.Tensor, rows: slice, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        picked = self.targets[rows].unsqueeze(1)
        log_probs = torch.log_softmax(logits, -1)  # one fused pass where logsumexp, a subtraction and exp took three
        values = -log_probs.gather(1, picked).squeeze(1)
        if not with_grad:
            return values, None
        grad = log_probs.exp_()  # softmax − one-hot, in the same buffer
        return values, grad.scatter_add_(1, picked, torch.full_like(picked, -1, dtype=grad.dtype))


class DivergenceScore:
    """T²·KL(teacher ‖ student) per token of the distributions softened by T, the teacher's logits computed from
    its own states and head a chunk at a time (no gradient), over the vocabulary both share."""

    def __init__(self, teacher_states: torch.Tensor, teacher_head: OutputHead, temperature: float):
        self.teacher_states, self.teacher_head, self.temperature = teacher_states, teacher_head, temperature

    def values(self, logits: torch.Tensor, rows: slice, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        temperature = self.temperature
        with torch.no_grad():
            teacher_logits = self.teacher_head.logits(self.teacher_states[rows]).float()
        vocab = min(logits.size(-1), teacher_logits.size(-1))  # a padded embedding's extra rows never occur
        student = (logits[:, :vocab] / temperature).log_softmax(-1)
        teacher = (teacher_logits[:, :vocab] / temperature).log_softmax(-1)
        values = temperature**2 * (teacher.exp() * (teacher - student)).sum(-1)
        if not with_grad:
            return values, None
        grad = torch.zeros_like(logits)
        grad[:, :vocab] = temperature * (student.exp() - teacher.exp())
        return values, grad


# ---- the head and a score, a chunk of tokens at a time -------------------------------------------------------
def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's when it is on, else the states'."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return hidden.dtype


def chunk_logits(
    states: torch.Tensor, head: OutputHead, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A chunk's logits in fp32, and the soft-capping's derivative (1 − tanh²) when the head caps them."""
    bias = None if head.bias is None else head.bias.to(dtype)
    logits = F.linear(states.to(dtype), head.weight.to(dtype), bias).float()
    if not head.softcap:
        return logits, None
    capped = torch.tanh(logits / head.softcap)
    return head.softcap * capped, 1 - capped.square()


def add_chunk_grads(grads: list, rows: slice, grad_logits: torch.Tensor, cap_slope, states, head, dtype) -> None:
    """The chunk's share of the gradients of (states, weight, bias), from the gradient of its fp32 logits."""
    if cap_slope is not None:
        grad_logits = grad_logits * cap_slope
    grad_states, grad_weight, grad_bias = grads
    grad = grad_logits.to(dtype)
    if grad_states is not None:
        grad_states[rows] = grad @ head.weight.to(dtype)
    if grad_weight is not None and dtype == torch.float32:
        grad_weight.addmm_(grad.T, states)  # in place: no vocabulary-wide temporary per chunk
    elif grad_weight is not None:
        grad_weight.add_((grad.T @ states.to(dtype)).float())
    if grad_bias is not None:
        grad_bias.add_(grad_logits.sum(0))


class ChunkedHead(torch.autograd.Function):
    """score(head(states)) for states (N, width), `rows` tokens at a time: per-token values (N,), or their sum."""

    @staticmethod
    def forward(ctx, states, weight, bias, score, head: OutputHead, rows: int, summed: bool, grad_enabled: bool):
        dtype = compute_dtype(states)
        needs = [needed and grad_enabled for needed in ctx.needs_input_grad[:3]]  # none under no_grad
        keep_grads = summed and any(needs)  # a sum's gradient is known now, up to the scale the backward brings
        grads = gradient_buffers(states, weight, bias, needs) if keep_grads else None
        values = torch.zeros(states.size(0), device=states.device)
        for start in range(0, states.size(0), rows):
            chunk = slice(start, start + rows)
            logits, cap_slope = chunk_logits(states[chunk], head, dtype)
            values[chunk], grad_logits = score.values(logits, chunk, keep_grads)
            if keep_grads:
                add_chunk_grads(grads, chunk, grad_logits, cap_slope, states[chunk], head, dtype)
        ctx.summed, ctx.grads, ctx.score, ctx.head, ctx.rows, ctx.dtype = summed, grads, score, head, rows, dtype
        ctx.input_dtypes = [None if tensor is None else tensor.dtype for tensor in (states, weight, bias)]
        if not summed:
            ctx.save_for_backward(states)
        return values.sum() if summed else values

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.summed:
            grads = [None if grad is None else grad * grad_output.to(grad.dtype) for grad in ctx.grads]
            return *cast(grads, ctx.input_dtypes), None, None, None, None, None
        (states,) = ctx.saved_tensors
        head, dtype = ctx.head, ctx.dtype
        grads = gradient_buffers(states, head.weight, head.bias, ctx.needs_input_grad[:3])
        for start in range(0, states.size(0), ctx.rows):  # each chunk again, its tokens weighed by grad_output
            chunk = slice(start, start + ctx.rows)
            logits, cap_slope = chunk_logits(states[chunk], head, dtype)
            _, grad_logits = ctx.score.values(logits, chunk, True)
            grad_logits.mul_(grad_output[chunk].unsqueeze(1))
            add_chunk_grads(grads, chunk, grad_logits, cap_slope, states[chunk], head, dtype)
        return *cast(grads, ctx.input_dtypes), None, None, None, None, None


def cast(grads: list, dtypes: list) -> list:
    """Each gradient in its input's dtype (the weight's and bias's were added up in fp32)."""
    return [None if grad is None else grad.to(dtype) for grad, dtype in zip(grads, dtypes)]


def gradient_buffers(states, weight, bias, needs) -> list:
    """Zeroed gradients of states, weight and bias, for those that need one (None for the others): the weight's
    and bias's in fp32, where the chunks add up."""
    return [
        torch.zeros_like(states) if needs[0] else None,
        torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None,
        torch.zeros_like(bias, dtype=torch.float32) if bias is not None and needs[2] else None,
    ]


def chunked(states: torch.Tensor, head: OutputHead, score, rows: int, summed: bool) -> torch.Tensor:
    return ChunkedHead.apply(states, head.weight, head.bias, score, head, rows, summed, torch.is_grad_enabled())


# ---- the readouts the objectives hand to the model ----------------------------------------------------------
class Readout:
    """What a loss reads from the final hidden states (B, T, width) and the head, `chunk_rows` tokens at a time:
    AUTO (the head's vocabulary decides: a model's may be larger than its tokenizer's), a number, or 0 for whole
    logits."""

    def __init__(self, chunk_rows: int):
        self.chunk_rows = chunk_rows

    @property
    def whole(self) -> bool:
        """Whether it reads whole logits (chunk_rows 0)."""
        return not self.chunk_rows

    def __call__(self, hidden: torch.Tensor, head: OutputHead):
        if self.whole or head.weight is None:
            return self.of_logits(head.logits(hidden))
        rows = self.chunk_rows
        if rows == AUTO:
            trains = head.weight.requires_grad and torch.is_grad_enabled()
            rows = loss_chunk_rows(head.weight.size(0), True, head.weight.size(1) if trains else 0)
        return self.chunked(hidden, head, rows)

    def of_logits(self, logits: torch.Tensor):
        raise NotImplementedError

    def chunked(self, hidden: torch.Tensor, head: OutputHead, rows: int):
        raise NotImplementedError


def learned_rows(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The states (n, width) of the positions whose target is learned, and which those are (B·T,)."""
    learned = targets.reshape(-1) != IGNORE
    return hidden.reshape(-1, hidden.size(-1))[learned], learned


class TargetsReadout(Readout):
    """A readout of the targets (B, T) a batch learns (IGNORE: not learned)."""

    def __init__(self, targets: torch.Tensor, chunk_rows: int):
        super().__init__(chunk_rows)
        self.targets = targets


class CrossEntropySum(TargetsReadout):
    """The summed cross-entropy of the learned targets (B, T) (IGNORE: not learned), in fp32."""

    def of_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return lm_loss_sum(logits, self.targets)

    def chunked(self, hidden: torch.Tensor, head: OutputHead, rows: int) -> torch.Tensor:
        states, learned = learned_rows(hidden, self.targets)
        targets = self.targets.reshape(-1)[learned]
        if cross_entropy_backend(hidden.device.type, True) == "cut-cross-entropy":
            return fused_cross_entropy_sum(states, head, targets)
        return chunked(states, head, CrossEntropyScore(targets), rows, summed=True)


def fused_cross_entropy_sum(states: torch.Tensor, head: OutputHead, targets: torch.Tensor) -> torch.Tensor:
    """Cut Cross-Entropy's kernel (CUDA): the same sum, the logits never in memory."""
    from cut_cross_entropy import linear_cross_entropy

    dtype = compute_dtype(states)
    bias = None if head.bias is None else head.bias.to(dtype)
    return linear_cross_entropy(
        states.to(dtype), head.weight.to(dtype), targets, bias=bias, softcap=head.softcap, reduction="sum"
    ).float()


class TokenLogProbs(TargetsReadout):
    """Each target's log-probability (B, T) in fp32; 0 where the target is IGNORE."""

    def of_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return token_logps(logits, self.targets)

    def chunked(self, hidden: torch.Tensor, head: OutputHead, rows: int) -> torch.Tensor:
        states, learned = learned_rows(hidden, self.targets)
        score = CrossEntropyScore(self.targets.reshape(-1)[learned])
        logps = -chunked(states, head, score, rows, summed=False)
        every = torch.zeros(learned.shape, dtype=logps.dtype, device=logps.device)
        return every.masked_scatter(learned, logps).view(self.targets.shape)


class DivergenceSum(Readout):
    """T²·KL(teacher ‖ student) summed over the positions that learn a target (Hinton et al.: T² keeps the
    gradients' scale as T changes), in fp32; the teacher given as its final states and head (`States`)."""

    def __init__(self, targets: torch.Tensor, teacher: tuple[torch.Tensor, OutputHead], temperature: float, rows):
        super().__init__(rows)
        self.targets, self.teacher, self.temperature = targets, teacher, temperature

    def of_logits(self, logits: torch.Tensor) -> torch.Tensor:
        teacher_states, teacher_head = self.teacher
        return distill_loss_sum(logits, teacher_head.logits(teacher_states), self.targets, self.temperature)

    def chunked(self, hidden: torch.Tensor, head: OutputHead, rows: int) -> torch.Tensor:
        states, learned = learned_rows(hidden, self.targets)
        teacher_states, teacher_head = self.teacher
        teacher_states = teacher_states.reshape(-1, teacher_states.size(-1))[learned]
        score = DivergenceScore(teacher_states, teacher_head, self.temperature)
        return chunked(states, head, score, rows, summed=True)


class EvaluationSums(TargetsReadout):
    """The summed cross-entropy of the learned targets and how many of them are the top logit (no gradient)."""

    def of_logits(self, logits: torch.Tensor) -> torch.Tensor:
        correct = ((logits.argmax(-1) == self.targets) & (self.targets != IGNORE)).sum()
        return torch.stack([lm_loss_sum(logits, self.targets), correct.float()])

    def chunked(self, hidden: torch.Tensor, head: OutputHead, rows: int) -> torch.Tensor:
        states, learned = learned_rows(hidden, self.targets)
        targets = self.targets.reshape(-1)[learned]
        sums = torch.zeros(2, device=hidden.device)
        for start in range(0, len(states), rows):
            chunk = slice(start, start + rows)
            sums += EvaluationSums(targets[chunk], 0).of_logits(head.logits(states[chunk]))
        return sums


class Together(Readout):
    """Several readouts from one forward: a tuple of what each reads."""

    def __init__(self, *readouts: Readout):
        super().__init__(chunk_rows=1)
        self.readouts = readouts

    def __call__(self, hidden: torch.Tensor, head: OutputHead) -> tuple:
        return tuple(readout(hidden, head) for readout in self.readouts)

    def of_logits(self, logits: torch.Tensor) -> tuple:
        return tuple(readout.of_logits(logits) for readout in self.readouts)


class States(Readout):
    """The final states and the head themselves (a teacher's, for `DivergenceSum`); a model whose head the
    studio does not apply gives its logits, with a head that keeps them."""

    def __init__(self):
        super().__init__(chunk_rows=1)

    def __call__(self, hidden: torch.Tensor, head: OutputHead) -> tuple[torch.Tensor, OutputHead]:
        return hidden, head

    def of_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, OutputHead]:
        return logits, LOGITS_ALREADY
