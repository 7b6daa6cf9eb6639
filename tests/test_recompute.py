"""Cheap steps recomputed in the backward (studio.model.recompute, train.lean_activations): the same loss and
gradients bit for bit as peft's layers with the same dropout draws, less kept from the forward by exactly what is
recomputed, applied by the run's model builder except in a private run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from studio.model.recompute import DroppedLinear, keep_fewer_activations, quick_dropout
from tests.helpers import tiny_config
from tests.hf_models import family_config

ROWS, LENGTH = 2, 32


def hf_lora_model(family: str, dropout: float, lean: bool) -> torch.nn.Module:
    """A tiny transformers model of the family with LoRA on every linear layer, cheap steps recomputed or not."""
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(family_config(family))
    lora = LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear", fan_in_fan_out=family == "gpt2")
    model = get_peft_model(model, lora)
    if lean:
        keep_fewer_activations(model)
    return model.train()


def studio_model(method: str, dropout: float, lean: bool) -> torch.nn.Module:
    """The studio's tiny Llama, built by the run's model builder (which applies train.lean_activations)."""
    from studio.model.trainable import build_run_model

    config = tiny_config({"model.vocab_size": 64, "train.method": method, "train.lora_dropout": dropout})
    config.train.lean_activations = lean
    torch.manual_seed(0)
    return build_run_model(config).module.train()


class QuickDropout(torch.nn.Module):
    """peft's dropout drawn as the recomputed one draws it: the reference that the lean model must equal."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_dropout(x, self.p) if self.training else x


def with_quick_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        for name, dropout in getattr(module, "lora_dropout", {}).items():
            if isinstance(dropout, torch.nn.Dropout):
                module.lora_dropout[name] = QuickDropout(dropout.p)
    return model


def loss_and_grads(model: torch.nn.Module, vocab: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.randint(vocab, (ROWS, LENGTH), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # the dropout's draws
    logits = model(ids)[0]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss, {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def assert_same_step(plain: torch.nn.Module, lean: torch.nn.Module, vocab: int) -> None:
    plain_loss, plain_grads = loss_and_grads(plain, vocab)
    lean_loss, lean_grads = loss_and_grads(lean, vocab)
    assert torch.equal(plain_loss, lean_loss)
    assert plain_grads.keys() == lean_grads.keys()  # the same parameters under the same names
    for name, grad in plain_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "phi3", "gpt2"])
def test_a_transformers_model_under_lora_takes_the_same_step_with_cheap_steps_recomputed(family):
    lean = hf_lora_model(family, 0.1, lean=True)
    assert any(isinstance(module, DroppedLinear) for module in lean.modules())
    assert_same_step(with_quick_dropout(hf_lora_model(family, 0.1, lean=False)), lean, 320)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_studios_llama_takes_the_same_step_with_its_product_recomputed(method):
    lean = studio_model(method, 0.1, lean=True)
    assert all(mlp.recompute_product for mlp in lean.modules() if hasattr(mlp, "recompute_product"))
    assert_same_step(with_quick_dropout(studio_model(method, 0.1, lean=False)), lean, 64)


def test_compiled_the_recomputed_steps_take_the_same_step():
    """torch.compile (on by default on CUDA) traces the checkpoints and the redrawn masks: the same loss, and the
    gradients within float rounding of the eager reference (inductor fuses the elementwise steps). About 8 s."""
    reference = with_quick_dropout(studio_model("lora", 0.1, lean=False))
    compiled = torch.compile(studio_model("lora", 0.1, lean=True))
    reference_loss, reference_grads = loss_and_grads(reference, 64)
    loss, grads = loss_and_grads(compiled, 64)
    assert torch.equal(loss, reference_loss)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[f"_orig_mod.{name}"], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("family, replaced", [("llama", True), ("qwen2", True), ("gemma3", True), ("phi3", False),
                                               ("gpt2", False)])  # fmt: skip
def test_only_gated_mlps_whose_forward_transformers_writes_so_are_replaced(family, replaced):
    """Llama, Qwen2 and Gemma 3 write the gated MLP alike (their forward is replaced); Phi-3's fused gate_up_proj
    and GPT-2's MLP are left as they are."""
    model = hf_lora_model(family, 0.0, lean=True)
    mlps = [module for module in model.modules() if type(module).__name__.endswith("MLP")]
    assert mlps and all(("forward" in vars(mlp)) == replaced for mlp in mlps)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_the_quick_dropout_drops_a_share_p_and_keeps_the_expectation(p):
    """Four 16-bit lanes per 64-bit draw: the share dropped is p (rounded to 1/65,536) within sampling error, the
    kept values scaled so that the mean stays the input's, and the same generator state draws the same mask."""
    ones = torch.ones(1000, 1000)
    torch.manual_seed(3)
    dropped = quick_dropout(ones, p)
    share = (dropped == 0).float().mean().item()
    assert abs(share - p) < 5 * (p * (1 - p) / ones.numel()) ** 0.5
    assert torch.allclose(dropped[dropped != 0], torch.tensor(65536 / (65536 - round(p * 65536))))
    assert abs(dropped.mean().item() - 1) < 5 * (p / (1 - p) / ones.numel()) ** 0.5
    torch.manual_seed(3)
    assert torch.equal(quick_dropout(ones, p), dropped)
    assert quick_dropout(ones, 1e-6) is ones  # p under half a lane: nothing to drop


def test_a_dropout_just_under_one_keeps_one_lane_and_a_finite_scale():
    """train.lora_dropout may be anything below 1: 0.999999 rounds to all 65,536 lanes, and would divide by zero."""
    torch.manual_seed(3)
    dropped = quick_dropout(torch.ones(1000, 1000), 0.999999)
    assert torch.isfinite(dropped).all() and set(dropped.unique().tolist()) <= {0.0, 65536.0}


def kept_by_forward(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes the forward leaves allocated (what autograd keeps for the backward), from the profiler's record of every
    allocation and release during it; the output itself not counted."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        out = model(ids)[0]
    return sum(event.self_cpu_memory_usage for event in profile.events()) - out.untyped_storage().nbytes()


def test_the_forward_keeps_no_dropout_copies_and_one_mlp_width_fewer_per_layer():
    """Qwen2 (2 layers, MLP 128 wide, LoRA on its 7 linear layers): without recomputation, dropout adds a copy and a
    mask of every adapted layer's input; recomputed, only the generator's state (a few KB per adapted layer), and
    each layer keeps act(gate) no more: 2 layers x tokens x 128 fp32 values fewer."""
    tokens = ROWS * 128  # enough that the generator's states are small beside a copy
    ids = torch.randint(320, (ROWS, 128), generator=torch.Generator().manual_seed(1))
    kept = {(lean, p): kept_by_forward(hf_lora_model("qwen2", p, lean), ids) for lean in (0, 1) for p in (0, 0.1)}
    dropout_copies = kept[(0, 0.1)] - kept[(0, 0)]
    assert dropout_copies >= tokens * 2 * (6 * 64 + 128) * 5  # 2 layers' q k v o gate up (64 wide) and down (128)
    assert kept[(1, 0.1)] - kept[(1, 0)] < 0.1 * dropout_copies  # the generator's states alone
    assert kept[(0, 0)] - kept[(1, 0)] == 2 * tokens * 128 * 4  # act(gate), fp32


def test_the_estimate_follows_what_the_forward_keeps():
    """The studio's tiny Llama with LoRA: the estimate's activations differ, lean or not, by what the profiler
    measures the forward to keep less (dropout's copies and masks, and act(gate)), to the byte but for the random
    generator's states that the redrawn dropouts keep."""
    from studio.sizing.sizes import method_sizes

    config = tiny_config({"model.vocab_size": 64, "train.method": "lora", "train.lora_dropout": 0.1})
    ids = torch.randint(64, (config.train.batch_size, config.model.block_size), generator=torch.Generator())

    def kept_and_estimated(lean: bool) -> tuple[int, int]:
        config.train.lean_activations = lean
        model = studio_model("lora", 0.1, lean)
        return kept_by_forward(model, ids), method_sizes(config.model, config.train).memory["activations"]

    (kept_plain, estimated_plain), (kept_lean, estimated_lean) = map(kept_and_estimated, (False, True))
    assert kept_plain - kept_lean > 0.3 * kept_plain
    adapted = 2 * 7  # 2 layers' q k v o gate up down
    generator_states = adapted * torch.get_rng_state().nbytes  # each redrawn dropout's, which the estimate omits
    assert estimated_plain - estimated_lean == kept_plain - kept_lean + generator_states


def test_a_private_run_keeps_its_dropout_where_opacus_sees_it(tmp_path):
    """Opacus takes each example's gradient from lora_A's input: a private run's adapters keep peft's dropout."""
    from studio.model.trainable import build_run_model

    config = tiny_config({"model.vocab_size": 64, "train.method": "lora", "train.lora_dropout": 0.1})
    config.train.privacy_noise_multiplier = 1.0
    model = build_run_model(config).module
    assert not any(isinstance(module, DroppedLinear) for module in model.modules())
    assert not any(getattr(module, "recompute_product", False) for module in model.modules())
