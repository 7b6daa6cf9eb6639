"""The loss without whole logits (studio.model.readout): the chunked path equals the whole-logits one, loss and
gradients, for each readout the objectives use; then on the studio's models and Hugging Face folders."""

from __future__ import annotations

import pytest
import torch

from studio.data.batches import IGNORE
from studio.model.readout import CrossEntropySum, DivergenceSum, OutputHead, States, TokenLogProbs

RTOL = 1e-5
CHUNK = 5  # tokens per chunk: several chunks, the last one short


def assert_close(chunked: torch.Tensor, whole: torch.Tensor) -> None:
    torch.testing.assert_close(chunked, whole, rtol=RTOL, atol=RTOL * whole.abs().max().item())


def masked_targets(shape: tuple[int, int], vocab: int, masked: bool, generator: torch.Generator) -> torch.Tensor:
    targets = torch.randint(vocab, shape, generator=generator)
    if masked:  # a prompt and padding learn nothing
        targets[0, :3] = IGNORE
        targets[-1, -4:] = IGNORE
    return targets


def head_case(bias: bool, softcap: float | None, vocab: int = 37, width: int = 8):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 11, width, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, width, generator=generator, requires_grad=True)
    head_bias = torch.randn(vocab, generator=generator, requires_grad=True) if bias else None
    return hidden, OutputHead(weight, head_bias, softcap), generator


def gradients_of(value: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, tensors))


def compare(make_readout, reduce, bias: bool, softcap: float | None) -> None:
    """The readout's value and the gradients of reduce(value) through the head, chunked and whole."""
    hidden, head, _ = head_case(bias, softcap)
    tensors = [t for t in (hidden, head.weight, head.bias) if t is not None]
    results = []
    for rows in (CHUNK, 0):
        value = make_readout(rows)(hidden, head)
        results.append((value.detach(), gradients_of(reduce(value), tensors)))
    (chunked_value, chunked_grads), (whole_value, whole_grads) = results
    assert_close(chunked_value, whole_value)
    for chunked_grad, whole_grad in zip(chunked_grads, whole_grads):
        assert_close(chunked_grad, whole_grad)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias,softcap", [(False, None), (True, 3.0)])
def test_cross_entropy_sum_equals_whole_logits(masked, bias, softcap):
    targets = masked_targets((2, 11), 37, masked, torch.Generator().manual_seed(1))
    compare(lambda rows: CrossEntropySum(targets, rows), lambda value: 0.5 * value, bias, softcap)


@pytest.mark.parametrize("masked", [False, True])
def test_token_log_probs_equal_whole_logits_under_any_weighting(masked):
    """Per-token values are recomputed in the backward: each token's gradient weighed as the loss weighs it."""
    targets = masked_targets((2, 11), 37, masked, torch.Generator().manual_seed(2))
    weights = torch.randn(2, 11, generator=torch.Generator().manual_seed(3))
    compare(lambda rows: TokenLogProbs(targets, rows), lambda value: (value * weights).sum(), True, 3.0)


@pytest.mark.parametrize("masked", [False, True])
def test_divergence_equals_whole_logits(masked):
    """The teacher's vocabulary may be smaller (a padded student embedding): the KL is over the shared part."""
    targets = masked_targets((2, 11), 30, masked, torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(5)
    teacher = (torch.randn(2, 11, 6, generator=generator), OutputHead(torch.randn(30, 6, generator=generator)))
    compare(lambda rows: DivergenceSum(targets, teacher, 2.0, rows), lambda value: value, False, None)


def test_nothing_learned_is_a_zero_loss_with_zero_gradients():
    hidden, head, _ = head_case(False, None)
    targets = torch.full((2, 11), IGNORE)
    loss = CrossEntropySum(targets, CHUNK)(hidden, head)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum() == 0 and head.weight.grad.abs().sum() == 0


def test_no_gradient_work_under_no_grad():
    """Evaluation: values alone (a sum's gradients are computed in the forward only when wanted)."""
    hidden, head, _ = head_case(False, None)
    targets = masked_targets((2, 11), 37, False, torch.Generator().manual_seed(6))
    with torch.no_grad():
        loss = CrossEntropySum(targets, CHUNK)(hidden, head)
    assert not loss.requires_grad
    assert_close(loss, CrossEntropySum(targets, 0)(hidden, head).detach())


def test_states_readout_hands_back_the_states_and_head():
    hidden, head, _ = head_case(False, None)
    assert States()(hidden, head) == (hidden, head)
