"""The loss without whole logits (studio.model.readout): the chunked path equals the whole-logits one, loss and
gradients, for each readout the objectives use; then on the studio's models and Hugging Face folders."""

from __future__ import annotations

import pytest
import torch

from studio.data.batches import IGNORE
from studio.model import lm_loss_sum
from studio.model.readout import CrossEntropySum, DivergenceSum, OutputHead, States, TokenLogProbs
from tests.helpers import tiny_config
from tests.hf_models import SIZES, family_config, make_hf_model

RTOL = 1e-5
CHUNK = 5  # tokens per chunk: several chunks, the last one short


def assert_close(chunked: torch.Tensor, whole: torch.Tensor, scale: float | None = None) -> None:
    """Equal to RTOL of each value, or of `scale` (by default the largest value) for values near 0."""
    scale = whole.abs().max().item() if scale is None else scale
    torch.testing.assert_close(chunked, whole, rtol=RTOL, atol=RTOL * scale)


def assert_gradients_close(chunked: list[torch.Tensor], whole: list[torch.Tensor]) -> None:
    """Each gradient to RTOL, measured against the largest of them all: a gradient that is 0 in theory (a bias
    that softmax's shift invariance cancels) is rounding noise either way."""
    scale = max(grad.abs().max().item() for grad in whole)
    for chunked_grad, whole_grad in zip(chunked, whole):
        assert_close(chunked_grad, whole_grad, scale)


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
    assert_gradients_close(chunked_grads, whole_grads)


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


# ---- through the models' forward: the studio's decoders and encoder, Hugging Face families --------------------
VOCAB = 64


def studio_model(arch: str, tied: bool) -> torch.nn.Module:
    from studio.model import build_model

    config = tiny_config({"model.arch": arch, "model.vocab_size": VOCAB, "model.tie_embeddings": tied})
    torch.manual_seed(0)
    return build_model(config.model).train()


def hf_model(family: str, tied: bool) -> torch.nn.Module:
    """transformers' model of the family (tests/hf_models.py's tiny config), called the studio's way; Gemma 3 with
    its final logit soft-capping on (Gemma 2's 30, scaled to these small logits)."""
    import transformers

    from studio.model.trainable import PretrainedLM

    config = family_config(family, VOCAB)
    config.tie_word_embeddings = tied
    if family == "gemma3":
        config.final_logit_softcapping = 0.5
    torch.manual_seed(0)
    return PretrainedLM(transformers.AutoModelForCausalLM.from_config(config).train(), 32)


MODELS = {
    "llama": lambda tied: studio_model("llama", tied),
    "gpt2": lambda tied: studio_model("gpt2", tied),
    "bert": lambda tied: studio_model("bert", tied),
    "hf-llama": lambda tied: hf_model("llama", tied),
    "hf-qwen2": lambda tied: hf_model("qwen2", tied),
    "hf-gemma3": lambda tied: hf_model("gemma3", tied),
}


def readouts(kind: str, targets: torch.Tensor, teacher: torch.nn.Module):
    """The readout of an objective and what its loss makes of it: (make(rows), reduce(value))."""
    if kind == "cross_entropy":  # causal LM, masked LM, SFT (masked: only the answers learned)
        return lambda rows: CrossEntropySum(targets, rows), lambda value: value
    if kind == "token_logps":  # preference objectives (per row) and GRPO (per token), weighed as they weigh
        weights = torch.linspace(-1, 1, targets.numel()).view(targets.shape)
        return lambda rows: TokenLogProbs(targets, rows), lambda value: (value * weights).sum()
    with torch.no_grad():  # distillation: a teacher of another width, read as its final states and head
        states = teacher(targets.clamp(min=0), readout=States())[0]
    return lambda rows: DivergenceSum(targets, states, 2.0, rows), lambda value: value


@pytest.mark.parametrize("kind", ["cross_entropy", "token_logps", "divergence"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_models_loss_and_gradients_equal_whole_logits(name, tied, masked, kind):
    model = MODELS[name](tied)
    ids = torch.randint(VOCAB, (2, 12), generator=torch.Generator().manual_seed(7))
    targets = masked_targets((2, 12), VOCAB, masked, torch.Generator().manual_seed(8))
    make, reduce = readouts(kind, targets, studio_model("llama", tied=True).eval())
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for rows in (CHUNK, 0):
        value = model(ids, readout=make(rows))[0]
        results.append((value.detach(), gradients_of(reduce(value), params)))
    (chunked_value, chunked_grads), (whole_value, whole_grads) = results
    if kind == "cross_entropy":  # the whole path is the loss as it was: the logits of a plain forward
        torch.testing.assert_close(whole_value, lm_loss_sum(model(ids)[0], targets))
    assert_close(chunked_value, whole_value)
    assert_gradients_close(chunked_grads, whole_grads)


def test_the_hf_families_heads_are_the_studios_to_apply():
    """Not a fallback to whole logits: the head is read from the model, soft-capping included."""
    from studio.model.trainable import output_head

    for name in ("hf-llama", "hf-qwen2", "hf-gemma3"):
        head = output_head(MODELS[name](tied=False).hf)
        assert head is not None and head.weight.shape[0] == VOCAB
    assert output_head(MODELS["hf-gemma3"](tied=False).hf).softcap == 0.5


def test_a_family_that_scales_its_logits_is_read_from_its_logits():
    """Granite divides its logits after the head: the studio reads them whole rather than miss the scale."""
    import transformers

    from studio.model.trainable import PretrainedLM, output_head

    config = transformers.GraniteConfig(**SIZES, vocab_size=VOCAB, num_key_value_heads=2, logits_scaling=4.0)
    torch.manual_seed(0)
    model = PretrainedLM(transformers.AutoModelForCausalLM.from_config(config), 32)
    ids = torch.randint(VOCAB, (2, 12), generator=torch.Generator().manual_seed(9))
    assert output_head(model.hf) is None
    chunked = model(ids, readout=CrossEntropySum(ids, CHUNK))[0]
    assert_close(chunked, lm_loss_sum(model(ids)[0], ids))


def test_adapters_on_a_hf_folder_read_the_decoder_with_its_adapters(tmp_path):
    """The run's model as the trainer builds it (peft around transformers' model): chunked equals whole, and the
    adapters' gradients are there."""
    from studio.model.trainable import build_run_model

    folder = tmp_path / "qwen2"
    make_hf_model(folder, "qwen2", vocab=VOCAB)
    config = tiny_config({"model.arch": "hf", "train.init_from": str(folder), "train.method": "lora"})
    config.model.vocab_size = VOCAB
    module = build_run_model(config).module
    ids = torch.randint(VOCAB, (2, 12), generator=torch.Generator().manual_seed(10))
    targets = masked_targets((2, 12), VOCAB, True, torch.Generator().manual_seed(11))
    adapters = [p for p in module.parameters() if p.requires_grad]
    results = []
    for rows in (CHUNK, 0):
        torch.manual_seed(0)  # the adapters' dropout: the same masks
        loss = module(ids, readout=CrossEntropySum(targets, rows))[0]
        results.append((loss.detach(), gradients_of(loss, adapters)))
    assert_close(results[0][0], results[1][0])
    assert_gradients_close(results[0][1], results[1][1])
    assert any(grad.abs().sum() > 0 for grad in results[0][1])


def test_automatic_chunks_hold_64_mib_of_the_heads_own_vocabulary(monkeypatch):
    """The head decides, not the tokenizer: a checkpoint's head often has more rows than its tokenizer has tokens."""
    from studio.model import readout

    sizes = []
    original = readout.chunk_logits
    monkeypatch.setattr(
        readout, "chunk_logits", lambda states, *rest: sizes.append(len(states)) or original(states, *rest)
    )
    vocab = 2**18  # 64 rows of fp32 logits in 64 MiB
    hidden = torch.randn(1, 150, 2)
    CrossEntropySum(torch.zeros(1, 150, dtype=torch.long), readout.AUTO)(hidden, OutputHead(torch.zeros(vocab, 2)))
    assert sizes == [64, 64, 22]


@pytest.mark.parametrize("trains", [False, True])
def test_a_trained_head_is_read_in_chunks_of_at_least_its_width(monkeypatch, trains):
    """Each chunk passes over the head's weight and, when it trains, its gradient: a chunk of fewer tokens than the
    width would spend more on those passes than on its logits. A frozen head keeps the 64 MiB chunks."""
    from studio.model import readout

    sizes = []
    original = readout.chunk_logits
    monkeypatch.setattr(
        readout, "chunk_logits", lambda states, *rest: sizes.append(len(states)) or original(states, *rest)
    )
    vocab, width = 2**18, 100  # 64 rows of fp32 logits in 64 MiB, fewer than the width
    hidden = torch.randn(1, 150, width)
    weight = torch.zeros(vocab, width, requires_grad=trains)
    CrossEntropySum(torch.zeros(1, 150, dtype=torch.long), readout.AUTO)(hidden, OutputHead(weight))
    assert sizes == ([100, 50] if trains else [64, 64, 22])


def test_the_path_the_running_event_reports(monkeypatch):
    from studio.model import readout

    assert readout.cross_entropy_backend("cpu", chunked=False) == "whole logits"
    assert readout.cross_entropy_backend("cpu", chunked=True) == "chunked (pytorch)"
    monkeypatch.setattr(readout, "installed", lambda package: package == "cut_cross_entropy")
    assert readout.cross_entropy_backend("cuda", chunked=True) == "cut-cross-entropy"
    assert readout.cross_entropy_backend("cpu", chunked=True) == "chunked (pytorch)"  # a CUDA kernel: CUDA only
