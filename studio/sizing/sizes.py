"""Sizes without building anything: parameter counts, FLOPs per token, training memory.

Pure Python on purpose: the studio's Model tab shows live counts and memory estimates while the user types,
and the UI process never imports torch. `param_count` is exact (the tests hold it equal to the built
model's `num_params()`); FLOPs and memory are estimates whose formulas are written out below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from studio.architectures import architecture
from studio.config import ModelConfig, RunConfig, TrainConfig
from studio.errors import StudioError
from studio.objectives import objective_of, reference_kind
from studio.sizing.hf_facts import HFFacts


def param_count(cfg: ModelConfig, vocab_size: int | None = None, num_labels: int = 0) -> int:
    """Exact number of distinct parameters (a tied embedding counted once) of build_model(cfg), or with num_labels
    of build_classifier(cfg, num_labels): its language-model head replaced by a classifier's."""
    vocab = _vocab(cfg, vocab_size)
    facts = architecture(cfg.arch)
    total = facts.params(cfg, vocab)
    if not num_labels:
        return total
    return total - facts.lm_head_params(cfg, vocab) + facts.classifier_head_params(cfg, num_labels)


def flops_per_token(cfg: ModelConfig, vocab_size: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token.

    Decoders: 6·N + 12·n_layer·n_embd·block_size (PaLM, appendix B; the second term is attention's
    QK^T and AV). Recurrent models: 6·N. N counts the parameters that take part in a matmul: not the
    position table, and not the input embedding when it is untied (a lookup costs no FLOPs).
    """
    vocab = _vocab(cfg, vocab_size)
    n = param_count(cfg, vocab)
    if not cfg.tie_embeddings:
        n -= vocab * cfg.n_embd
    if architecture(cfg.arch).learned_positions:  # a lookup
        n -= cfg.block_size * cfg.n_embd
    if cfg.recurrent:
        return 6.0 * n
    return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * cfg.block_size


def estimate_train_memory(
    cfg: ModelConfig, train: TrainConfig, vocab_size: int | None = None, num_labels: int = 0
) -> dict[str, int]:
    """Bytes one training process needs, roughly: {weights, gradients, optimizer, activations, total}; with
    num_labels, of a classifier (param_count's), whose logits are one row per text.

    - weights: fp32 master copy (4 bytes each); under bf16/fp16 autocast add the 16-bit copies that
      autocast makes for the matmuls and keeps for the backward (2 bytes each).
    - gradients: fp32, 4 bytes each.
    - optimizer: `optimizer_values_per_weight` fp32 values (4 bytes each) per trained weight.
    - activations: the most the step holds at once, at the start of the backward, for batch_size·block_size
      tokens: what autograd keeps, counted in values per token at the mixed-precision width (4 bytes, 2 under
      bf16/fp16). Each layer keeps what its architecture's `activations_per_layer` counts (studio.architectures:
      an attention layer's inputs, q, k, v and outputs and its MLP's inner tensors; a recurrent layer's gates and
      states). On top: the embedding output, and the logits' fp32
      cross-entropy: its log-probabilities kept for the backward, then the loss's gradient and the
      log-softmax's beside them when the backward starts (3·vocab values per token); with train.chunked_loss,
      those 3·vocab values for one chunk of tokens alone (`loss_chunk_rows`: longer when the head trains), and per
      token the learned states and their gradient kept from the forward (2·n_embd values: _cross_entropy_bytes).
      Checked against autograd's saved tensors and peak memory on the small presets (tests/test_memory.py);
      dropout masks and allocator slack are not counted, nor, on a CPU, that 16-bit attention over short
      sequences keeps its q, k, v and output in fp32 (studio.model.kv_cache.attend; ~4·n_embd values of 2 bytes
      more per layer and token). With activation checkpointing the layers keep only
      their inputs, plus the one layer being recomputed (_kept_by_layers); with train.lean_activations a gated
      MLP keeps one mlp_width fewer (_recomputed_per_layer).
    - mixed_precision "auto" counts as fp32 (half_precision).

    What it is held against (studio.train.memory): on a GPU, the tensors' peak; on a CPU, the process's peak RSS
    against this estimate plus the runtime's baseline, which the trainer measures once it is set up (interpreter,
    libraries, data, FLOP/s probe). That stays within a fifth on the small presets; the training's own part runs
    above the estimate by what glibc's malloc keeps of freed blocks (docs/ARCHITECTURE.md, *Memory*).
    """
    vocab = _vocab(cfg, vocab_size)
    n = param_count(cfg, vocab, num_labels)
    mixed = half_precision(train)
    act_bytes = 2 if mixed else 4
    optimizer_values = optimizer_values_per_weight(train)
    tokens = train.batch_size * cfg.block_size
    per_layer = architecture(cfg.arch).activations_per_layer(cfg) - _recomputed_per_layer(cfg, train)
    per_token = _kept_by_layers(cfg.n_layer, cfg.n_layer * per_layer, cfg.n_embd, train.activation_checkpointing)
    per_token += cfg.n_embd
    memory = {
        "weights": 4 * n + (2 * n if mixed else 0),
        "gradients": 4 * n,
        "optimizer": 4 * optimizer_values * n,
        "activations": tokens * per_token * act_bytes
        + _cross_entropy_bytes(train, cfg.block_size, vocab, cfg.n_embd, num_labels),
    }
    return _with_total(_per_process(memory, train, _gathered_params(cfg, vocab, num_labels)))


# ---- fine-tuning methods -------------------------------------------------------------------------------
def native_linear_layers(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """(name, in, out) of every linear layer of a studio model but the output head, as LoRA sees them."""
    return architecture(cfg.arch).linear_layers(cfg) * cfg.n_layer


def adapted_layers(linear_layers: list, targets: list[str]) -> list[tuple[str, int, int]]:
    """The (name, in, out) layers the adapters go on: those named in train.lora_targets, or all."""
    return [(name, fan_in, fan_out) for name, fan_in, fan_out in linear_layers if not targets or name in targets]


def adapter_params(linear_layers: list, rank: int, targets: list[str], dora: bool) -> int:
    """Trainable values of LoRA (rank·(in + out) per adapted layer) or DoRA (plus a magnitude per output)."""
    chosen = adapted_layers(linear_layers, targets)
    return sum(rank * (fan_in + fan_out) + (fan_out if dora else 0) for _, fan_in, fan_out in chosen)


@dataclass
class MethodSizes:
    """What training a model by a method involves: its parameters, those that train, and the memory, per process."""

    total: int
    trainable: int
    memory: dict[str, int]  # weights, gradients, optimizer, activations, total (bytes)


def method_sizes(
    model: ModelConfig, train: TrainConfig, facts: HFFacts | None = None, method: str = "", num_labels: int = 0
) -> MethodSizes:
    """Sizes of the run's model (a studio architecture, or a Hugging Face checkpoint described by its `facts`, see
    studio.hf.inspection) trained by `method` (default: train.method); a studio classifier of num_labels classes when
    given (the logits are then per text, not per token).

    Weights are fp32 (~0.55 bytes each for qlora's 4-bit base, scales included) with the adapters on top; gradients
    and optimizer moments exist for the trainable values only (a private run's gradients are held batch_size + 2
    times: one per example, their clipped sum and the gradient itself, studio.train.privacy); activations as
    estimate_train_memory counts them (for a Hugging Face model: every linear layer's output and four residual-width
    tensors per layer and token), plus what the adapters keep (_adapter_activations)."""
    method = method or train.method
    if facts is None:
        total, layers = param_count(model, model.vocab_size, num_labels), native_linear_layers(model)
        activations = estimate_train_memory(model, train, num_labels=num_labels)["activations"]
        gathered = _gathered_params(model, model.vocab_size, num_labels)
        layer_count = model.n_layer
    else:
        total, layers = facts.params, facts.linear_layers
        activations = _pretrained_activations(model, train, facts)
        in_layers = sum(fan_in * fan_out for _, fan_in, fan_out in layers)  # the rest is the root's: embeddings, head
        gathered = total - in_layers + 2 * in_layers / max(facts.layers or 1, 1)
        layer_count = max(facts.layers or 1, 1)
    adapters = method != "full"
    if adapters:
        activations += _adapter_activations(layers, layer_count, model.block_size, train)
    trainable = adapter_params(layers, train.lora_rank, train.lora_targets, method == "dora") if adapters else total
    optimizer_values = optimizer_values_per_weight(train)
    memory = {
        "weights": (int(0.55 * total) if method == "qlora" else 4 * total) + (4 * trainable if adapters else 0),
        "gradients": 4 * trainable * (train.batch_size + 2 if train.private else 1),
        "optimizer": 4 * optimizer_values * trainable,
        "activations": activations,
    }
    return MethodSizes(total, trainable, _with_total(_per_process(memory, train, gathered)))


def run_sizes(config: RunConfig, facts: dict | None, num_labels: int = 0, teacher_params: int = 0) -> MethodSizes:
    """method_sizes of a run's model and method, with its distillation teacher of teacher_params parameters: frozen
    beside the student, the teacher's fp32 weights count (4 bytes each); it has no gradients or optimizer state, and
    runs without autograd, so it keeps no activations for a backward. A preference objective's reference is the
    same, a frozen copy of the model under full fine-tuning (the base itself, adapters off, under LoRA; nothing when
    its log-probabilities are precomputed: `reference_kind`), and its pairs
    double the rows of a forward (GRPO's groups: G rows per prompt). The one figure the CLI prints before a
    launch, the trainer records and the studio's Train tab shows."""
    objective = objective_of(config)
    rows = 2 if objective.paired else 1  # a batch of pairs is chosen and rejected rows in one forward
    if objective.dataset == "prompts":  # GRPO: G answers per prompt in one forward
        rows = config.train.group_size
    train = replace(config.train, batch_size=config.train.batch_size * rows)
    sizes = method_sizes(config.model, train, facts, num_labels=num_labels)
    teacher = 4 * teacher_params
    reference = 4 * sizes.total if reference_kind(config) == "frozen copy" else 0
    extra = {"teacher": teacher, "reference": reference, "total": sizes.memory["total"] + teacher + reference}
    return replace(sizes, memory={**sizes.memory, **extra})


def _adapter_activations(linear_layers: list, layer_count: int, block_size: int, train: TrainConfig) -> int:
    """What peft's adapters keep for the backward besides the layers they adapt, per token: each adapter's rank-wide
    inner output, and with train.lora_dropout each adapter's own dropped-out copy of its layer's input (q, k and v
    each make one) at the activations' width, with its mask (a byte per value). Checked with autograd's saved-tensor
    hooks (tests/test_memory.py): on benchmarks/alignment_cost.py's 3M-parameter Llama at full context, the copies
    add 62% to what the rest of a LoRA step keeps. Under activation checkpointing only the layer being recomputed
    holds them; with train.lean_activations none are kept (the dropout is redrawn in the backward)."""
    chosen = adapted_layers(linear_layers, train.lora_targets)
    act_bytes = 2 if half_precision(train) else 4
    per_token = len(chosen) * train.lora_rank * act_bytes
    if train.lora_dropout > 0 and not train.recomputes_cheap_steps:
        per_token += sum(fan_in * (act_bytes + 1) for _, fan_in, _ in chosen)
    if train.activation_checkpointing:
        per_token //= max(layer_count, 1)
    return train.batch_size * block_size * per_token


def _recomputed_per_layer(cfg: ModelConfig, train: TrainConfig) -> int:
    """Values per token a layer no longer keeps when cheap steps are recomputed (studio.model.recompute): a gated
    MLP's act(gate), recomputed with the product from gate and up."""
    return cfg.mlp_width if train.recomputes_cheap_steps and architecture(cfg.arch).gated_mlp else 0


def _gathered_params(cfg: ModelConfig, vocab: int, num_labels: int) -> float:
    """Under FSDP, the most weights a process holds whole at once: the root unit (embeddings, final norm, head)
    and two blocks, the one running and the next; a recurrent model is one unit."""
    total = param_count(cfg, vocab, num_labels)
    if cfg.recurrent:
        return total
    root = param_count(replace(cfg, n_layer=0), vocab, num_labels)
    return root + 2 * (total - root) / cfg.n_layer


def _per_process(memory: dict[str, int], train: TrainConfig, gathered_params: float) -> dict[str, int]:
    """What one process holds: everything under DDP; under FSDP (train.sharding) 1/N of the weights, gradients
    and optimizer state, plus the units gathered whole at once, their weights and gradients at the compute width."""
    if train.sharding != "fsdp":
        return memory
    world = train.world_size
    shared = {part: memory[part] // world for part in ("weights", "gradients", "optimizer")}
    shared["weights"] += int(2 * (2 if half_precision(train) else 4) * gathered_params)
    return {**memory, **shared}


def _with_total(memory: dict[str, int]) -> dict[str, int]:
    return {**memory, "total": sum(memory.values())}


def _pretrained_activations(model: ModelConfig, train: TrainConfig, facts: HFFacts) -> int:
    act_bytes = 2 if half_precision(train) else 4
    layers = max(facts.layers or 1, 1)
    hidden = facts.hidden or 0
    per_token = sum(fan_out for _, _, fan_out in facts.linear_layers) + layers * 4 * hidden
    per_token = _kept_by_layers(layers, per_token, hidden, train.activation_checkpointing)
    tokens = train.batch_size * model.block_size
    return tokens * per_token * act_bytes + _cross_entropy_bytes(train, model.block_size, facts.vocab or 0, hidden)


LOSS_CHUNK_BYTES = 64 * 2**20  # the fp32 logits of one chunk of tokens: large enough for an efficient matmul


def loss_chunk_rows(vocab: int, chunked: bool, trained_head_width: int = 0) -> int:
    """Tokens per chunk of the loss's head (studio.model.readout), 0 for whole logits (train.chunked_loss off).
    When the head's weight trains (trained_head_width: its width; 0 when frozen), at least that many tokens: each
    chunk reads the weight (vocab × width) twice and adds into its fp32 gradient, so a chunk of fewer tokens than
    the width spends more on those passes than on its own logits (full fine-tuning at 110 tokens a chunk, width 256:
    0.84x the whole logits' tokens/s at context 2048, benchmarks/chunked_ce.py)."""
    if not chunked:
        return 0
    return max(1, LOSS_CHUNK_BYTES // (4 * max(vocab, 1)), trained_head_width)


def _cross_entropy_bytes(train: TrainConfig, block_size: int, vocab: int, width: int, num_labels: int = 0) -> int:
    """The fp32 cross-entropy at its peak: the log-probabilities, the loss's gradient and the log-softmax's, one
    row per token (or per text for a classifier) at the start of the backward. Chunked (train.chunked_loss), the
    same three rows for one chunk of tokens (a longer chunk when full fine-tuning trains the head:
    loss_chunk_rows), and per token the learned final states and their gradient, which the forward computes and
    keeps (fp32, width values each)."""
    if num_labels:
        return 3 * 4 * train.batch_size * num_labels
    tokens = train.batch_size * block_size
    chunk = loss_chunk_rows(vocab, train.chunked_readout, width if train.method == "full" else 0)
    if not chunk:
        return 3 * 4 * tokens * vocab
    return 3 * 4 * min(chunk, tokens) * vocab + 2 * 4 * tokens * width


def half_precision(train: TrainConfig) -> bool:
    """Whether the estimate counts 16-bit autocast: bf16 or fp16 asked for. "auto" counts as fp32, what it is on a
    CPU, so the estimate holds there; on a GPU (bf16) it then overstates the activations."""
    return train.mixed_precision in ("bf16", "fp16")


def _kept_by_layers(layers: int, all_layers: int, width: int, checkpointing: bool) -> int:
    """Activation values per token that the layers keep for the backward: all of every layer's (`all_layers`); or,
    with activation checkpointing, each layer's input (width) and the one layer being recomputed."""
    return layers * width + all_layers // layers if checkpointing else all_layers


def _vocab(cfg: ModelConfig, vocab_size: int | None) -> int:
    vocab = vocab_size or cfg.vocab_size
    if vocab <= 0:
        raise StudioError(
            "model.vocab_size is 0 (the dataset's) and no vocabulary size was given; "
            "prepare the data first or set model.vocab_size"
        )
    return vocab


def optimizer_values_per_weight(train: TrainConfig) -> int:
    """The fp32 values an optimizer keeps per trained weight: AdamW two moments, SGD one momentum buffer (none at
    momentum 0); muon is counted as AdamW (Muon keeps one buffer for the hidden matrices, AdamW two for the rest)."""
    if train.optimizer == "sgd":
        return 1 if train.momentum > 0 else 0
    return 2
