"""The GPU fast path, checked on the CPU: its decisions per device, pinned copies, activation checkpointing (the
same losses and gradients), the fallback when torch.compile fails, and no tensor read back inside a step."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from studio.config import RunConfig, TrainConfig, set_field, validate
from studio.data.batches import Batch
from studio.errors import StudioError
from studio.run_folder.events import read_events
from studio.run_folder.layout import run_path
from studio.sizing.sizes import estimate_train_memory
from studio.train.fast_path import FastPath, fast_path
from tests.helpers import tiny_config


# ---- decisions -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "device, bf16, changes, expected",
    [
        ("cuda", True, {}, FastPath(precision="bf16", tf32=True, compile=True, pin_memory=True)),
        ("cuda", False, {}, FastPath(precision="no", tf32=True, compile=True, pin_memory=True)),  # pre-Ampere
        ("cpu", False, {}, FastPath(precision="no", tf32=False, compile=False, pin_memory=False)),
        ("mps", True, {}, FastPath(precision="no", tf32=False, compile=False, pin_memory=False)),
        ("cpu", False, {"mixed_precision": "bf16", "compile": "true"}, FastPath("bf16", False, True, False)),
        ("cuda", True, {"mixed_precision": "no", "compile": "false"}, FastPath("no", True, False, True)),
        ("cuda", True, {"mixed_precision": "fp16"}, FastPath("fp16", True, True, True)),
    ],
)
def test_the_fast_path_is_on_by_default_on_a_cuda_gpu_and_off_on_a_cpu(device, bf16, changes, expected):
    assert fast_path(device, TrainConfig(**changes), bf16_supported=bf16) == expected


def test_tf32_is_turned_on_for_a_cuda_device_only(monkeypatch):
    from studio.train.trainer import device_fast_path

    precisions = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", precisions.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: not including_emulation)
    assert device_fast_path(torch.device("cpu"), TrainConfig()).precision == "no" and precisions == []
    assert device_fast_path(torch.device("cuda", 0), TrainConfig()).precision == "bf16" and precisions == ["high"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_decoders_train_through_causal_sdpa_without_a_mask_which_keeps_flash_attention(arch, monkeypatch):
    """Flash attention takes no explicit mask: training calls SDPA with is_causal alone (packed rows, whose mask is
    block-causal, are the exception, and run on the memory-efficient kernel)."""
    import studio.model.kv_cache as kv_cache
    from studio.model import build_model

    calls = []
    sdpa = kv_cache.F.scaled_dot_product_attention
    monkeypatch.setattr(kv_cache.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(k) or sdpa(*a, **k))
    build_model(tiny_config({"model.arch": arch, "model.vocab_size": 64}).model).train()(torch.randint(64, (2, 16)))
    assert calls and all(call.get("is_causal") is True and call.get("attn_mask") is None for call in calls)


def test_compile_reads_old_boolean_configs_and_checkpointing_is_refused_for_recurrent_models():
    config = RunConfig.from_dict({"train": {"compile": False}})  # a config.toml written when compile was a bool
    assert config.train.compile == "false"
    assert RunConfig().train.compile == "auto" and RunConfig().train.mixed_precision == "auto"
    set_field(config, "model.arch", "lstm")
    set_field(config, "train.activation_checkpointing", "true")
    with pytest.raises(StudioError, match="activation_checkpointing: lstm has no blocks to recompute"):
        validate(config)


def test_pinning_copies_each_tensor_through_page_locked_memory_and_only_when_asked(monkeypatch):
    pinned = []

    def pin_memory(tensor):  # a CPU-only build cannot pin: record what would be pinned
        pinned.append(tensor)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    batch = Batch(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), 8, torch.zeros(2, 4))
    moved = batch.to(torch.device("cpu"))
    assert pinned == [] and moved.x is batch.x  # the CPU path: nothing copied
    moved = batch.to(torch.device("cpu"), pin=True)
    assert [t is s for t, s in zip(pinned, (batch.x, batch.y, batch.positions))] == [True, True, True]
    assert torch.equal(moved.y, batch.y) and moved.lengths is None and moved.tokens == 8


# ---- activation checkpointing --------------------------------------------------------------------------------------
def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from studio.model import lm_loss

    torch.manual_seed(0)  # the same dropout masks in both runs
    logits, _ = model(ids)
    loss = lm_loss(logits, ids) if logits.dim() == 3 else logits.square().mean()
    model.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert", "llama-classifier"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch):
    from studio.model.trainable import build_run_model

    config = tiny_config({"model.arch": arch.split("-")[0], "model.dropout": 0.1, "model.vocab_size": 64})
    if arch.endswith("classifier"):
        config.train.task = "classify"
    ids = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(1))
    results = []
    for checkpointing in (False, True):
        config.train.activation_checkpointing = checkpointing
        torch.manual_seed(0)
        if arch.endswith("classifier"):
            from studio.model import build_classifier

            model = build_classifier(config.model, 3)
            if checkpointing:
                from studio.model.trainable import checkpoint_activations

                checkpoint_activations(model)
        else:
            model = build_run_model(config).module
        assert model.checkpoint_blocks is checkpointing
        results.append(_loss_and_grads(model.train(), ids))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    assert torch.allclose(loss, loss_ckpt, rtol=0, atol=1e-6)
    assert all(torch.allclose(g, h, rtol=1e-5, atol=1e-7) for g, h in zip(grads, grads_ckpt))


def test_activation_checkpointing_recomputes_the_blocks_in_the_backward(monkeypatch):
    """Checked, not assumed: with it on, each block runs twice per training step (forward, then again in the
    backward, stopped early once what the backward needs is back); in evaluation, once."""
    from studio.model import build_model

    model = build_model(tiny_config({"model.vocab_size": 64}).model)
    model.checkpoint_blocks = True
    calls = Counter()
    for index, block in enumerate(model.model.layers):
        block.register_forward_pre_hook(lambda *_, index=index: calls.update([index]))
    ids = torch.randint(64, (2, 16))
    model.train()(ids)[0].sum().backward()
    assert calls == {0: 2, 1: 2}
    calls.clear()
    with torch.no_grad():
        model.eval()(ids)
    assert calls == {0: 1, 1: 1}


def test_a_transformers_model_checkpoints_its_layers_with_the_same_gradients(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio.model.trainable import checkpoint_activations

    hf_config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    ids = torch.randint(64, (2, 16))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(hf_config).train()
        if checkpointing:
            checkpoint_activations(model)
        assert model.is_activation_checkpointing is checkpointing
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(results[0][0], results[1][0])
    assert all(torch.allclose(g, h, rtol=1e-5, atol=1e-7) for g, h in zip(results[0][1], results[1][1]))


def test_the_memory_estimate_keeps_only_the_layers_inputs_under_activation_checkpointing():
    model = tiny_config({"model.n_layer": 12, "model.n_embd": 768, "model.n_head": 12, "model.block_size": 1024}).model
    plain = estimate_train_memory(model, TrainConfig(batch_size=8), 50257)
    kept = estimate_train_memory(model, TrainConfig(batch_size=8, activation_checkpointing=True), 50257)
    assert {key: kept[key] for key in ("weights", "gradients", "optimizer")} == {
        key: plain[key] for key in ("weights", "gradients", "optimizer")
    }
    one_fewer = estimate_train_memory(dataclasses.replace(model, n_layer=11), TrainConfig(batch_size=8), 50257)
    tokens = 8 * 1024
    per_layer = (plain["activations"] - one_fewer["activations"]) // (tokens * 4)  # one layer's values per token
    layers_saved = tokens * 4 * (12 * per_layer - (12 * 768 + per_layer))  # fp32 values ("auto" counts as fp32)
    assert plain["activations"] - kept["activations"] == layers_saved > 0


# ---- the trainer ---------------------------------------------------------------------------------------------------
def _trainer(code_corpus: Path, name: str, changes: dict | None = None):
    from studio.runs.prepare import prepare_run
    from studio.train.trainer import Trainer

    settings = {"data.source": str(code_corpus), "train.sample_interval": 0, "train.max_steps": 10}
    return Trainer(prepare_run(tiny_config({**settings, **(changes or {})}), name))


def _events(name: str, kind: str) -> list[dict]:
    return [event for event in read_events(run_path(name) / "events.jsonl") if event["kind"] == kind]


class FailsToCompile(torch.nn.Module):
    """What torch.compile returns on a machine without a working compiler: it fails at the first call."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.wrapped = module

    def forward(self, *args, **kwargs):
        raise torch._dynamo.exc.TorchDynamoException("InductorError: no working C compiler found")


def test_a_failed_compile_trains_uncompiled_with_one_line_and_the_same_losses(studio_home, code_corpus, monkeypatch):
    _trainer(code_corpus, "eager", {"train.compile": "false"}).run()
    monkeypatch.setattr(torch, "compile", FailsToCompile)
    trainer = _trainer(code_corpus, "fallback", {"train.compile": "true"})
    assert isinstance(trainer.trained_model, FailsToCompile)
    trainer.run()
    assert trainer.trained_model is trainer.prepared_model
    [note] = _events("fallback", "note")
    assert note["step"] == 0 and note["message"].startswith("torch.compile failed (InductorError: no working C")
    assert [e["loss"] for e in _events("fallback", "train")] == [e["loss"] for e in _events("eager", "train")]


def test_an_error_after_the_first_step_is_not_taken_for_a_failed_compile(studio_home, code_corpus, monkeypatch):
    trainer = _trainer(code_corpus, "later")
    trainer.train_step(log=False)
    monkeypatch.setattr(trainer.objective, "loss_sums", FailsToCompile(trainer.model).forward)
    with pytest.raises(torch._dynamo.exc.TorchDynamoException):
        trainer.train_step(log=False)


READBACKS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def test_a_step_reads_no_tensor_back_but_the_host_batch_and_at_log_steps(studio_home, code_corpus, monkeypatch):
    """On a GPU a tensor read back (`.item()`, `float(t)`...) makes the host wait for the queued work. On a CPU
    every tensor is on the host, so the check is where reads happen: in a step that does not log, only the data
    pipeline reads its own host batch (the learned targets, before the batch moves); the logged values are read
    at log steps. Reads inside PyTorch's C++ (a boolean index's count) are beyond this check."""
    trainer = _trainer(code_corpus, "sync", {"train.grad_accum": 2})
    assert trainer.optimizer.optimizer.defaults["fused"] is True  # fused AdamW wherever the device has it
    reads = Counter()

    def spy(name: str):
        original = getattr(torch.Tensor, name)

        def read(tensor, *args, **kwargs):
            reads[(name, Path(sys._getframe(1).f_code.co_filename).name)] += 1
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in READBACKS:
        spy(name)
    for _ in range(3):
        trainer.train_step(log=False)
    assert reads and {file for _, file in reads} == {"batches.py"}
    reads.clear()
    trainer.train_step(log=True)
    assert ("__float__", "trainer.py") in reads  # the gradient norm, read for the log line
