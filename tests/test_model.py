"""The model zoo: shapes, loss at init, learning, tying, exact sizes, Hugging Face equivalence."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from studio.architectures.gpt2 import GPT2 as GPT2_FACTS
from studio.config import ModelConfig, TrainConfig
from studio.errors import StudioError
from studio.formatting import counted, format_bytes, format_count
from studio.model import build_classifier, build_model, param_groups
from studio.model.kv_cache import CPU_FP32_ATTENTION_BELOW, attend
from studio.sizing.sizes import estimate_train_memory, flops_per_token, param_count

VOCAB = 97
ARCHS = ("llama", "gpt2", "lstm", "rnn", "bert")


def tiny(arch: str, **changes) -> ModelConfig:
    base = ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=VOCAB)
    return dataclasses.replace(base, **changes)


def batch(seed: int = 0, B: int = 4, T: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (B, T + 1), generator=g)
    return data[:, :-1], data[:, 1:]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_initial_loss(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch))
    x, y = batch()
    logits, loss = model(x, y)
    assert logits.shape == (4, 16, VOCAB)
    assert loss.ndim == 0
    assert abs(loss.item() - math.log(VOCAB)) < 0.1 * math.log(VOCAB)  # near-uniform predictions at init
    logits_only, no_loss = model(x)
    assert no_loss is None and torch.equal(logits_only, logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_backward_and_overfit_one_batch(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch))
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=2e-2)
    x, y = batch()
    _, first = model(x, y)
    for _ in range(40):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
    # 0.75·ln(97) is below the batch's own unigram entropy (~3.9): the model memorises sequences.
    # The decoders get near zero; the recurrent baselines are slower at memorising random tokens.
    assert loss.item() < 0.75 * first.item()


@pytest.mark.parametrize("arch", ARCHS)
def test_tied_weights_are_one_tensor_and_survive_a_load_without_lm_head(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch))
    embedding = model.input_embedding()
    assert model.output_head().weight is embedding.weight

    torch.manual_seed(1)
    source = build_model(tiny(arch))
    state = {k: v for k, v in source.state_dict().items() if k != model.HEAD}  # what checkpoints store
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == [model.HEAD] and unexpected == []
    assert model.output_head().weight is embedding.weight
    assert torch.equal(model.output_head().weight, source.output_head().weight)
    x, _ = batch()
    assert torch.equal(model(x)[0], source(x)[0])

    model.load_state_dict(state, strict=False, assign=True)  # replaces tensors: tie_weights() restores the tie
    model.tie_weights()
    assert model.output_head().weight is model.input_embedding().weight


@pytest.mark.parametrize("arch", ARCHS)
def test_untied_head_is_its_own_tensor(arch):
    model = build_model(tiny(arch, tie_embeddings=False))
    assert model.output_head().weight is not model.input_embedding().weight


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", (True, False))
@pytest.mark.parametrize("bias", (True, False))
def test_param_count_is_exact(arch, tie, bias):
    cfg = tiny(arch, tie_embeddings=tie, bias=bias, n_layer=3)
    assert param_count(cfg) == build_model(cfg).num_params()
    custom = tiny(arch, tie_embeddings=tie, bias=bias, mlp_hidden=40)
    assert param_count(custom) == build_model(custom).num_params()
    for labels in (2, 5):  # a classifier: the language-model head replaced by its head
        assert param_count(cfg, num_labels=labels) == build_classifier(cfg, labels).num_params()


def test_param_count_takes_the_vocabulary_from_the_argument_or_refuses():
    cfg = tiny("llama")
    assert param_count(dataclasses.replace(cfg, vocab_size=0), VOCAB) == param_count(cfg)
    with pytest.raises(StudioError, match="vocab_size"):
        param_count(dataclasses.replace(cfg, vocab_size=0))
    with pytest.raises(StudioError, match="vocab_size"):
        build_model(dataclasses.replace(cfg, vocab_size=0))


def test_mlp_width_rules():
    assert ModelConfig(arch="llama", n_embd=128).mlp_width == 384  # 341 rounded up to 64
    assert ModelConfig(arch="llama", n_embd=2048).mlp_width == 5504
    assert ModelConfig(arch="gpt2", n_embd=768).mlp_width == 3072
    assert ModelConfig(arch="llama", n_embd=2048, mlp_hidden=8192).mlp_width == 8192


def test_param_groups_decay_matrices_only_and_count_tied_weights_once():
    model = build_model(tiny("gpt2", bias=True))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    grouped = decay["params"] + no_decay["params"]
    assert len({id(p) for p in grouped}) == len(grouped) == len(list(model.parameters()))
    assert sum(p.numel() for p in grouped) == model.num_params()


def test_llama_parameter_names_are_hugging_faces():
    cfg = tiny("llama", tie_embeddings=False)
    names = set(build_model(cfg).state_dict())
    expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(cfg.n_layer):
        prefix = f"model.layers.{i}."
        expected |= {prefix + "input_layernorm.weight", prefix + "post_attention_layernorm.weight"}
        expected |= {f"{prefix}self_attn.{p}_proj.weight" for p in "qkvo"}
        expected |= {f"{prefix}mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    assert names == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_acts_in_training_only(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch, dropout=0.3))
    x, _ = batch()
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize(("keys", "in_fp32"), [(64, True), (CPU_FP32_ATTENTION_BELOW, False)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_short_16_bit_attention_on_a_cpu_runs_in_fp32(keys, in_fp32, dtype):
    """Below CPU_FP32_ATTENTION_BELOW keys, 16-bit attention on a CPU is fp32 SDPA's output rounded once (faster
    there, studio.model.kv_cache), autocast or not, and its gradient reaches the 16-bit q, k, v; from there on, SDPA
    in 16 bits as given."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, keys, 8, generator=g).to(dtype).requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=dtype):
        out = attend(q, k, v, 0.0, None, 0, 0)
    in_fp32_out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(dtype)
    in_16_bits_out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == dtype
    assert torch.equal(out, in_fp32_out if in_fp32 else in_16_bits_out)
    assert not torch.equal(in_fp32_out, in_16_bits_out)  # the two paths are told apart
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == dtype for t in (q, k, v))


def test_residual_projections_start_smaller():
    torch.manual_seed(0)
    model = build_model(tiny("llama", n_embd=64, n_layer=8))
    q = model.model.layers[0].self_attn.q_proj.weight.std().item()
    o = model.model.layers[0].self_attn.o_proj.weight.std().item()
    assert q == pytest.approx(0.02, rel=0.1)
    assert o == pytest.approx(0.02 / math.sqrt(16), rel=0.1)


def test_size_estimates():
    cfg = ModelConfig(arch="gpt2", n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True)
    n = param_count(cfg, 50257)
    assert n == 124_439_808
    assert flops_per_token(cfg, 50257) == 6 * (n - 1024 * 768) + 12 * 12 * 768 * 1024
    memory = estimate_train_memory(cfg, TrainConfig(batch_size=12, mixed_precision="no"), 50257)
    assert memory["weights"] == memory["gradients"] == 4 * n
    assert memory["optimizer"] == 8 * n
    assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
    assert 1e9 < memory["activations"] < 5e10  # nanoGPT's 12 x 1024 batch needs some GB
    half = estimate_train_memory(cfg, TrainConfig(batch_size=12, mixed_precision="bf16"), 50257)
    assert half["activations"] < memory["activations"]
    sgd = estimate_train_memory(cfg, TrainConfig(optimizer="sgd", momentum=0.0), 50257)
    assert sgd["optimizer"] == 0
    assert format_count(124_439_808) == "124.4M" and format_count(999) == "999" and format_count(1.2e9) == "1.2B"
    assert format_bytes(3.4 * 1024**3) == "3.4 GB" and format_bytes(512) == "512 B"


def test_counts_take_the_plural_only_when_more_or_none():
    assert counted(1, "run") == "1 run" and counted(0, "run") == "0 runs" and counted(2, "column") == "2 columns"
    assert counted(1234, "row") == "1,234 rows" and counted(3, "class", "classes") == "3 classes"


# ---- Hugging Face equivalence (transformers is in the test extra) -------------------------------
def _transformers():
    return pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")


def llama_twin(cfg: ModelConfig):
    """A transformers LlamaForCausalLM of cfg's shape holding the studio model's weights (a plain copy)."""
    transformers = _transformers()
    ours = build_model(cfg).eval()
    hf_config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    theirs = transformers.LlamaForCausalLM(hf_config).eval()
    state = ours.state_dict()
    if cfg.tie_embeddings:
        state.pop("lm_head.weight")
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    return ours, theirs


def gpt2_twin(cfg: ModelConfig):
    """A transformers GPT2LMHeadModel of cfg's shape holding the studio model's weights (Conv1D ones transposed)."""
    transformers = _transformers()
    ours = build_model(cfg).eval()
    hf_config = transformers.GPT2Config(  # the export's config.json fields
        vocab_size=VOCAB, tie_word_embeddings=True, **GPT2_FACTS.huggingface.config_json(cfg, 0, {})
    )
    theirs = transformers.GPT2LMHeadModel(hf_config).eval()
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {k: v.t() if k.endswith(conv1d) else v for k, v in ours.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    return ours, theirs


@pytest.mark.parametrize(("tie", "kv_heads"), [(True, 0), (False, 0), (True, 2), (False, 1)])
def test_llama_logits_equal_hugging_faces(tie, kv_heads):
    torch.manual_seed(0)
    cfg = tiny("llama", n_embd=64, n_head=4, n_kv_head=kv_heads, tie_embeddings=tie, rope_theta=5e5, norm_eps=1e-6)
    assert build_model(cfg).num_params() == param_count(cfg)
    ours, theirs = llama_twin(cfg)
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["gelu", "relu2"])
def test_gpt2_logits_equal_hugging_faces(activation):
    torch.manual_seed(0)
    ours, theirs = gpt2_twin(tiny("gpt2", n_embd=64, n_head=4, bias=True, mlp_hidden=96, activation=activation))
    assert theirs.config.activation_function == {"gelu": "gelu_new", "relu2": "relu2"}[activation]
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("twin", "cfg"),
    [
        (llama_twin, tiny("llama", n_embd=64, n_head=4, n_kv_head=1, rope_theta=5e5)),  # grouped-query heads
        (gpt2_twin, tiny("gpt2", n_embd=64, n_head=4, bias=True)),
    ],
)
def test_the_attention_view_recomputes_the_weights_transformers_returns(twin, cfg):
    """The studio's decoders attend through SDPA, which returns no weights: the view's recomputation (a hook on one
    layer) equals transformers' eager attention on the same weights, for every layer and head, and the same function
    asks a Hugging Face model for its own (its attention implementation put back after)."""
    from studio.inference.attention import attention_rows
    from studio.model.trainable import PretrainedLM

    torch.manual_seed(0)
    ours, theirs = twin(cfg)
    theirs.set_attn_implementation("eager")
    x = batch(B=1)[0]
    with torch.no_grad():
        expected = theirs(x, output_attentions=True).attentions
    theirs.set_attn_implementation("sdpa")
    for layer in range(cfg.n_layer):
        for head in range(cfg.n_head):
            want = expected[layer][0, head]
            torch.testing.assert_close(attention_rows(ours, x, layer, head), want, atol=1e-6, rtol=0)
            from_folder = attention_rows(PretrainedLM(theirs, cfg.block_size), x, layer, head)
            torch.testing.assert_close(from_folder, want, atol=1e-6, rtol=0)
    assert theirs.config._attn_implementation == "sdpa"


def test_a_relu2_gpt2_resumes_as_itself_from_its_runs_saved_config(tmp_path):
    """A resumed run rebuilds its model from config.toml: the activation comes back with it, and the checkpoint's
    weights give the same logits (a GELU model of the same weights would not)."""
    from studio.config import RunConfig

    torch.manual_seed(0)
    config = RunConfig(model=tiny("gpt2", activation="relu2"))
    config.save(tmp_path / "config.toml")
    saved = build_model(config.model).eval()
    rebuilt_config = RunConfig.load(tmp_path / "config.toml").model
    assert rebuilt_config.activation == "relu2"
    rebuilt, gelu = build_model(rebuilt_config).eval(), build_model(tiny("gpt2")).eval()
    rebuilt.load_state_dict(saved.state_dict())
    gelu.load_state_dict(saved.state_dict())
    x, _ = batch()
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], saved(x)[0]) and not torch.allclose(gelu(x)[0], saved(x)[0])
