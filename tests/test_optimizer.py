"""The optimizers: which parameters Muon takes, that Muon with AdamW learns, and that its state resumes exactly."""

from __future__ import annotations

import pytest
import torch

from studio.checkpoints import files as checkpoint
from studio.config import ModelConfig, TrainConfig
from studio.errors import StudioError
from studio.model import build_classifier, build_model, lm_loss
from studio.train.optimizer import MuonWithAdamW, ShapeBatchedMuon, build_optimizer, set_lr


def tiny_model(arch: str = "gpt2", tie: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, tie_embeddings=tie)
    )


def muon_train(**changes) -> TrainConfig:
    return TrainConfig(optimizer="muon", lr=3e-3, muon_lr=0.02, momentum=0.95, **changes)


def names_of(model: torch.nn.Module, params: list[torch.Tensor]) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("tie", [True, False])
def test_muon_takes_the_blocks_linear_weights_and_adamw_the_rest(tie):
    model = tiny_model("gpt2", tie)
    muon, adamw = build_optimizer(model, muon_train()).parts
    orthogonalised = names_of(model, muon.param_groups[0]["params"])
    assert orthogonalised == {
        f"transformer.h.{layer}.{name}.weight"
        for layer in range(2)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    rest = names_of(model, [p for group in adamw.param_groups for p in group["params"]])
    assert orthogonalised.isdisjoint(rest)
    assert orthogonalised | rest == {name for name, _ in model.named_parameters()}
    assert "transformer.wte.weight" in rest and ("lm_head.weight" in rest) == (not tie)


def test_a_classifier_head_and_the_llama_projections():
    model = build_classifier(ModelConfig(arch="llama", n_layer=1, n_head=2, n_embd=32, vocab_size=50), num_labels=3)
    muon, _ = build_optimizer(model, muon_train()).parts
    orthogonalised = names_of(model, muon.param_groups[0]["params"])
    assert "score.weight" not in orthogonalised and len(orthogonalised) == 7  # q k v o, gate up down


def test_a_model_without_hidden_linear_layers_is_refused_in_one_line():
    with pytest.raises(StudioError, match="use adamw"):
        build_optimizer(tiny_model("lstm"), muon_train())


def test_the_schedule_scales_muons_lr():
    optimizer = build_optimizer(tiny_model(), muon_train())
    set_lr(optimizer, 1.5e-3)  # half the peak
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.01, 1.5e-3, 1.5e-3])


def steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, count: int, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(count):
        ids = torch.randint(0, 10, (4, 17), generator=generator)  # a small alphabet: quick to learn
        logits, _ = model(ids[:, :-1])
        loss = lm_loss(logits, ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_muon_with_adamw_learns():
    model = tiny_model()
    losses = steps(model, build_optimizer(model, muon_train()), 30, seed=1)
    assert losses[-1] < losses[0] - 1.0


def test_its_state_saved_as_safetensors_resumes_bit_for_bit(tmp_path):
    """Five steps, a checkpoint's optimizer file, then five more: a fresh model and optimizer loaded from that file
    take exactly the same five steps."""
    model = tiny_model()
    optimizer = build_optimizer(model, muon_train())
    steps(model, optimizer, 5, seed=1)
    checkpoint.write_optimizer(tmp_path, optimizer.state_dict())
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    expected = steps(model, optimizer, 5, seed=2)

    resumed = tiny_model()
    resumed.load_state_dict(weights)
    resumed_optimizer = build_optimizer(resumed, muon_train())
    resumed_optimizer.load_state_dict(checkpoint.read_optimizer_state(tmp_path))
    assert isinstance(resumed_optimizer, MuonWithAdamW)
    assert steps(resumed, resumed_optimizer, 5, seed=2) == expected
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def trained(ns_steps: int, count: int) -> tuple[torch.nn.Module, list[float]]:
    model = tiny_model()
    return model, steps(model, build_optimizer(model, muon_train(muon_ns_steps=ns_steps)), count, seed=1)


def test_fewer_newton_schulz_iterations_take_a_different_step_that_still_learns():
    """train.muon_ns_steps reaches Muon's orthogonalisation: 2 iterations move the weights elsewhere than 5 do."""
    weight = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(trained(2, 1)[0].state_dict()[weight], trained(5, 1)[0].state_dict()[weight])
    losses = trained(2, 30)[1]
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize("nesterov", [True, False])
def test_shape_batched_muon_takes_torchs_muon_steps_bit_for_bit(nesterov):
    """The batched Newton-Schulz iterations (llama's 2 layers: 12 matrices in 3 shapes, tall and wide) change
    nothing of torch.optim.Muon's updates, weight decay and momentum included, over several steps."""
    models = [tiny_model("llama"), tiny_model("llama")]
    settings = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov)
    optimizers = [
        optimizer_class([p for p in model.parameters() if p.dim() == 2], **settings)
        for model, optimizer_class in zip(models, (ShapeBatchedMuon, torch.optim.Muon))
    ]
    losses = [steps(model, optimizer, 4, seed=3) for model, optimizer in zip(models, optimizers)]
    assert losses[0] == losses[1]
    for (name, batched), single in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(batched, single), name
