"""The resolved configuration of a run: model, data, training, distillation. Each field declared once; TOML in
and out.

A run's `config.toml` holds one `[model]`, `[data]`, `[train]` and `[distill]` section with exactly the fields below;
presets are partial files of the same shape, and `--set section.key=value` edits one field. A field is
declared once, with `setting()`: its type (a `Literal` names the allowed values), its default, its one-line
help and its label. The CLI's options and `--help`, `presets --keys`, and the studio's form fields and their
tooltips all read that declaration (`config_field`). Every value is checked in `validate()`, which raises a
StudioError naming the key and the fix. Values derived from fields (`head_dim`, `mlp_width`) are properties.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from studio.architectures import ARCHITECTURES, architecture
from studio.atomic_write import write_atomically
from studio.errors import StudioError
from studio.redaction import redaction_kinds
from studio.rewards import parse_reward

Arch = Literal["llama", "gpt2", "lstm", "rnn", "bert", "hf"]
Activation = Literal["gelu", "relu2"]
TokenizerKind = Literal["bpe", "char"]
Optimizer = Literal["adamw", "sgd", "muon"]
Schedule = Literal["constant", "linear", "cosine", "inverse_time", "wsd"]
Precision = Literal["auto", "no", "bf16", "fp16"]
Compile = Literal["auto", "true", "false"]
Sharding = Literal["ddp", "fsdp"]
Method = Literal["full", "lora", "dora", "qlora"]
DataFormat = Literal["auto", "text", "alpaca", "messages", "sharegpt"]
Overlong = Literal["truncate", "drop"]
Shingles = Literal["word", "char"]
Task = Literal["lm", "classify"]
TrainObjective = Literal["lm", "dpo", "ipo", "orpo", "simpo", "kto", "grpo"]
PRETRAINED_ARCH = "hf"  # a Hugging Face checkpoint that transformers builds (train.init_from names its folder)
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")  # through Accelerate's tracker integration
MAX_VOCAB = 1 << 20  # token ids are stored as uint32 at most; beyond a million the tokenizer is the problem
MIN_BPE_VOCAB = 257  # 256 byte symbols plus the end-of-text token


def setting(default: Any, help: str, label: str = "") -> Any:
    """A config field: its default, its one-line help, and its label in the studio's forms (default: its name)."""
    metadata = {"help": help, "label": label}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    arch: Arch = setting(
        "llama",
        "the architecture: a Llama- or GPT-2-style decoder, an LSTM/RNN baseline, a BERT encoder (masked LM), or "
        "hf: the Hugging Face checkpoint of train.init_from, built by transformers (set at launch)",
        "architecture",
    )
    n_layer: int = setting(4, "layers (blocks)", "layers")
    n_head: int = setting(4, "attention heads; must divide the width (decoders only)", "heads")
    n_kv_head: int = setting(
        0, "llama only: key/value heads, dividing the heads (grouped-query attention); 0: one per head", "KV heads"
    )
    n_embd: int = setting(128, "n_embd: the residual stream's size (the hidden size of recurrent models)", "width")
    block_size: int = setting(128, "block_size: tokens per training sequence (the context length)", "context")
    vocab_size: int = setting(0, "0: the prepared dataset's vocabulary", "vocab")
    dropout: float = setting(0.0, "dropout probability during training", "dropout")
    tie_embeddings: bool = setting(True, "share input and output embeddings", "tie embeddings")
    mlp_hidden: int = setting(
        0, "the MLP's inner width; 0: 4 * n_embd (gpt2, bert) or SwiGLU's 8/3 rule rounded to 64 (llama)", "MLP width"
    )
    bias: bool = setting(False, "gpt2 only: biases in linear layers and LayerNorm", "bias")
    activation: Activation = setting(
        "gelu",
        "gpt2 only: the MLP's activation: GPT-2's tanh GELU, or relu2, ReLU squared (modded-nanogpt's: cheaper, and "
        "it learns faster; transformers' GPT-2 has it)",
        "activation",
    )
    rope_theta: float = setting(10000.0, "llama only: the base of the rotary embeddings' frequencies", "RoPE theta")
    norm_eps: float = setting(1e-5, "the epsilon of RMSNorm / LayerNorm", "norm eps")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, else one per attention head (multi-head attention)."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_width(self) -> int:
        """The MLP's inner width: mlp_hidden, else its architecture's rule from the width (studio.architectures)."""
        return self.mlp_hidden or architecture(self.arch).mlp_width(self.n_embd)

    @property
    def recurrent(self) -> bool:
        return self.arch in ARCHITECTURES and ARCHITECTURES[self.arch].recurrent

    @property
    def encoder(self) -> bool:
        """A bidirectional encoder: it learns to fill masked tokens, not to continue text."""
        return self.arch in ARCHITECTURES and ARCHITECTURES[self.arch].encoder

    @property
    def pretrained(self) -> bool:
        """Built by transformers from a Hugging Face folder (the fields above then only describe it)."""
        return self.arch == PRETRAINED_ARCH


@dataclass
class DataConfig:
    source: str = setting(
        "python-stdlib",
        "a text file (.gz .bz2 .xz .zst too), rows (.jsonl .json .csv .tsv .parquet), a folder, a datasets folder, "
        "python-stdlib, or a prepared dataset's name",
        "source",
    )
    tokenizer: TokenizerKind = setting("bpe", "byte-level BPE, or one token per character", "tokenizer")
    vocab_size: int = setting(
        4096, "BPE only: the vocabulary size; char vocabularies are the corpus' own characters", "vocab size"
    )
    val_fraction: float = setting(
        0.05,
        "the share held out for validation; 0: none (evaluation skipped). Examples: round(count × share) of them, so "
        "the default holds none out of fewer than 10",
        "val fraction",
    )
    text_field: str = setting("text", "rows: the column (JSON key) holding each document's text", "text field")
    format: DataFormat = setting(
        "auto",
        "rows: text (continued pretraining), alpaca, messages (OpenAI style) or sharegpt; auto: from the "
        "first row's keys",
        "row format",
    )
    supervise_all: bool = setting(
        False, "chat data: learn every token, not only the assistant turns and their end tokens", "learn all tokens"
    )
    overlong: Overlong = setting(
        "truncate", "chat data: examples longer than the context are truncated or dropped (and counted)", "overlong"
    )
    packing: bool = setting(
        False, "chat data: pack short examples into full sequences (attention and loss stay within each)", "packing"
    )
    label_field: str = setting("label", "classification: the column (JSON key) holding each row's label", "label field")
    text_pair_field: str = setting(
        "",
        "classification: the column (JSON key) of a second text, read as a pair with the first; empty: none",
        "pair field",
    )
    val_file: str = setting(
        "",
        "classification: a file of held-out rows to validate on; empty: the rows' split field, else a "
        "stratified holdout",
        "validation file",
    )
    glob: str = setting("**/*", "folders: which files to read", "folder files")
    min_chars: int = setting(1, "drop documents shorter than this (after cleaning)", "min chars")
    max_chars: int = setting(0, "drop documents longer than this; 0: no limit", "max chars")
    dedup: bool = setting(True, "drop exact duplicate documents", "dedup")
    near_dedup: float = setting(
        0.0,
        "drop documents (rows) whose Jaccard similarity to a kept one reaches this, by MinHash and LSH; e.g. 0.8; "
        "0: off",
        "near-dedup",
    )
    near_dedup_shingles: Shingles = setting(
        "word", "near-dedup: compare runs of 5 words (documents), or of 5 characters (short rows)", "shingles"
    )
    redact: str = setting(
        "",
        "replace personal data and secrets by typed placeholders (<EMAIL> ...): all, or some of email, phone, ip, "
        "card, iban, cn_id, ssn, secret, separated by commas; rows field by field, roles and labels kept",
        "redact",
    )
    redact_numbered: bool = setting(
        False, "redact: number the placeholders within a document, a value keeping its number (<EMAIL_1>)", "numbered"
    )
    decontaminate: list[str] = setting(
        [],
        "evaluation files (task files, rows or text): drop training documents (rows) sharing a run of "
        "data.decontaminate_ngram words with any of their rows",
        "decontaminate",
    )
    decontaminate_ngram: int = setting(13, "decontaminate: the words a shared run must have", "n-gram")
    strict: bool = setting(
        False,
        "refuse bytes that are not UTF-8 instead of replacing them, and rows whose text is null or empty instead of "
        "skipping them",
        "strict",
    )
    dataset: str = setting("", "the prepared dataset the run trains on; filled in at launch", "dataset")


@dataclass
class TrainConfig:
    optimizer: Optimizer = setting(
        "adamw",
        "the optimizer; muon: Muon on the hidden weight matrices (train.muon_lr), AdamW on the rest (embeddings, "
        "output head, norms, biases)",
        "optimizer",
    )
    lr: float = setting(1e-3, "the peak learning rate (AdamW's part of muon)", "learning rate")
    muon_lr: float = setting(
        0.02,
        "muon only: the peak learning rate of the hidden matrices; the schedule scales it as it scales lr",
        "Muon lr",
    )
    muon_ns_steps: int = setting(
        5,
        "muon only: Newton-Schulz iterations orthogonalising each update; fewer are cheaper but orthogonalise more "
        "roughly (3 cost speedrun-cpu more steps than they saved time)",
        "Muon NS steps",
    )
    min_lr: float = setting(1e-4, "where linear, cosine and wsd decay to", "min lr")
    schedule: Schedule = setting("cosine", "the learning-rate schedule after warmup", "schedule")
    warmup_steps: int = setting(100, "steps of linear warmup", "warmup steps")
    decay_fraction: float = setting(0.2, "wsd: the share of steps spent decaying at the end", "wsd decay")
    inverse_time_k: float = setting(0.01, "inverse_time: lr / (1 + k·t)", "inverse-time k")
    max_steps: int = setting(2000, "optimizer steps to train for", "steps")
    epochs: float = setting(
        0.0,
        "instead of max_steps: passes over the training examples (text: its tokens), turned into max_steps when the "
        "data is prepared; 0: max_steps as given",
        "epochs",
    )
    batch_size: int = setting(32, "sequences per process per micro-step", "batch")
    grad_accum: int = setting(1, "micro-steps per optimizer step", "grad accum")
    weight_decay: float = setting(0.1, "AdamW / SGD weight decay on matrices and embeddings", "weight decay")
    beta1: float = setting(0.9, "AdamW's first-moment decay", "beta1")
    beta2: float = setting(0.99, "AdamW's second-moment decay", "beta2")
    momentum: float = setting(0.9, "sgd and muon: momentum (Nesterov's for muon)", "momentum")
    grad_clip: float = setting(1.0, "clip the gradient norm to this; 0: no clipping", "grad clip")
    eval_interval: int = setting(250, "evaluate every this many steps", "eval every")
    eval_steps: int = setting(20, "validation batches per evaluation (per process)", "eval batches")
    eval_tasks: list[str] = setting(
        [],
        "task files scored at every evaluation (multiple-choice or generation rows, as `evaluate --task` reads "
        "them); their scores are charted beside the loss",
        "eval tasks",
    )
    log_interval: int = setting(10, "write a train event every this many steps", "log every")
    checkpoint_interval: int = setting(500, "save a checkpoint every this many steps", "checkpoint every")
    keep_checkpoints: int = setting(3, "how many of the newest checkpoints to keep", "keep checkpoints")
    sample_interval: int = setting(
        500, "write samples from the fixed prompts every this many steps; 0: none", "sample every"
    )
    sample_tokens: int = setting(64, "tokens generated per sample", "sample tokens")
    sample_prompts: list[str] = setting(
        ["\n", "def ", "The "],
        "the fixed prompts samples continue (chat and classifier runs: held-out examples)",
        "sample prompts",
    )
    seed: int = setting(1337, "the seed of weights, batches and dropout", "seed")
    mixed_precision: Precision = setting(
        "auto",
        "autocast precision: auto (bf16 on a GPU that has it, else fp32), no (fp32), bf16, or fp16 (CUDA only)",
        "precision",
    )
    compile: Compile = setting(
        "auto",
        "torch.compile the model: auto (on a CUDA GPU), true or false; eager when compiling fails",
        "torch.compile",
    )
    activation_checkpointing: bool = setting(
        False,
        "recompute each block's activations in the backward instead of keeping them: less memory, ~1/3 more "
        "compute (decoders, BERT and Hugging Face models)",
        "activation ckpt",
    )
    chunked_loss: bool = setting(
        True,
        "the output head and the loss a chunk of tokens at a time, never the whole batch × context × vocabulary "
        "logits (the same loss and gradients; a fused kernel on CUDA when cut-cross-entropy is installed); "
        "false: whole logits",
        "chunked loss",
    )
    lean_activations: bool = setting(
        True,
        "recompute LoRA's dropout and the gated MLP's activation in the backward instead of keeping their outputs "
        "(the same gradients; at long contexts a third less activation memory for little compute); false: keep them",
        "lean activations",
    )
    num_processes: int = setting(1, "processes on each machine: GPUs, or CPU processes over gloo", "processes")
    sharding: Sharding = setting(
        "ddp",
        "how several processes hold the model: ddp (each all of it, gradients averaged) or fsdp (each 1/N of the "
        "weights, gradients and optimizer state, for models that do not fit on one device; PyTorch's FSDP2)",
        "sharding",
    )
    global_batch: int = setting(
        0,
        "sequences per optimizer step over every process; set, grad_accum is derived from it (global_batch / "
        "(batch_size × processes)), so more processes keep the step the same; 0: batch_size × grad_accum × processes",
        "global batch",
    )
    num_machines: int = setting(1, "machines training together (each runs the same command with its machine_rank)")
    machine_rank: int = setting(0, "several machines: this machine's number, 0 (the main one) to num_machines - 1")
    main_address: str = setting("", "several machines: the main machine's address, reachable from every other one")
    main_port: int = setting(29500, "several machines: the port the main machine listens on for the others")
    report_to: list[str] = setting(
        [], f"mirror metrics, the config and samples to trackers: {', '.join(TRACKERS)}", "report to"
    )
    init_from: str = setting(
        "", "start from these weights: a local Hugging Face folder or a run's name; empty: from scratch", "init from"
    )
    task: Task = setting(
        "lm",
        "lm: the architecture's own objective (the next token; masked tokens for an encoder); classify: a label "
        "per text, judged by accuracy, precision, recall and F1",
        "task",
    )
    objective: TrainObjective = setting(
        "lm",
        "lm: what train.task says; dpo, ipo, orpo, simpo, kto: align a model on preference rows "
        "({prompt, chosen, rejected}, or {prompt, completion, label} for kto); grpo: reward sampled answers to "
        "prompt rows ({prompt, ...})",
        "objective",
    )
    beta: float = setting(
        0.1,
        "preference objectives: β, how far from the reference the policy may move (dpo, ipo, kto; grpo: the KL "
        "term's weight, 0 loads no reference); the reward "
        "scale (simpo); the odds-ratio term's weight (orpo)",
        "β",
    )
    label_smoothing: float = setting(
        0.0, "dpo: the share of pairs assumed mislabelled (robust DPO), in [0, 0.5)", "label smoothing"
    )
    simpo_gamma: float = setting(
        0.5, "simpo: γ, the reward margin asked of chosen over rejected (β·per-token log-probabilities)", "SimPO γ"
    )
    precompute_reference: bool = setting(
        False,
        "dpo, ipo: compute the reference's log-probabilities of every answer in one pass before training, then "
        "keep no reference model (full fine-tuning: frees the frozen copy's memory; adapters: one forward less "
        "per step); redone at each start and resume",
        "precompute ref",
    )
    kto_desirable_weight: float = setting(1.0, "kto: the weight of desirable (label true) answers", "KTO desirable")
    kto_undesirable_weight: float = setting(
        1.0, "kto: the weight of undesirable (label false) answers", "KTO undesirable"
    )
    rewards: list[str] = setting(
        [],
        "grpo: the reward functions, summed: exact:FIELD, regex:PATTERN, length:N, path/to/file.py:function; "
        "WEIGHT*NAME weighs one",
        "rewards",
    )
    group_size: int = setting(4, "grpo: G, the answers sampled per prompt and compared with each other", "group size")
    grpo_epsilon: float = setting(0.2, "grpo: ε, the probability ratio is clipped to 1 ± ε", "GRPO ε")
    grpo_iterations: int = setting(
        1,
        "grpo: μ, the optimizer updates each batch of sampled answers is learned from (from the second on, the "
        "ratio to the sampling weights differs from 1 and ε clips it); each update is one step of max_steps, the "
        "schedule, logs and checkpoints",
        "GRPO iterations",
    )
    max_completion_tokens: int = setting(64, "grpo: the most tokens of a sampled answer", "completion tokens")
    method: Method = setting(
        "full",
        "full fine-tuning, or adapters through peft: lora, dora (weight-decomposed LoRA), qlora (LoRA on a "
        "4-bit base; CUDA and bitsandbytes)",
        "method",
    )
    lora_rank: int = setting(16, "LoRA/DoRA: the rank of the adapters", "LoRA rank")
    lora_alpha: float = setting(32.0, "LoRA/DoRA: the scale alpha (updates are scaled by alpha / rank)", "LoRA alpha")
    lora_dropout: float = setting(0.05, "LoRA/DoRA: dropout on the adapters' input", "LoRA dropout")
    lora_targets: list[str] = setting(
        [],
        "LoRA/DoRA: names of the linear layers to adapt (e.g. q_proj|v_proj); empty: every linear layer "
        "but the output head",
        "LoRA targets",
    )
    privacy_epsilon: float = setting(
        0.0,
        "differential privacy (DP-SGD through Opacus): the ε the run may spend by its last step, at privacy_delta; "
        "the noise is the least that meets it; 0: no target (private when privacy_noise_multiplier is set)",
        "privacy ε",
    )
    privacy_delta: float = setting(
        1e-5,
        "DP-SGD: δ, the probability the ε bound may fail; keep it well below 1 / the training examples "
        "(1e-5, as Opacus's examples and the DP-SGD papers use)",
        "privacy δ",
    )
    privacy_max_grad_norm: float = setting(
        1.0, "DP-SGD: each example's gradient is clipped to this norm before the noise is added", "per-example clip"
    )
    privacy_noise_multiplier: float = setting(
        0.0,
        "DP-SGD: the noise's standard deviation, in units of privacy_max_grad_norm, instead of the least that meets "
        "privacy_epsilon; with both set a run whose steps would spend more than ε refuses to start",
        "noise multiplier",
    )

    @property
    def private(self) -> bool:
        """Differentially private training (studio.train.privacy): a target ε or a noise multiplier is set."""
        return self.privacy_epsilon > 0 or self.privacy_noise_multiplier > 0

    @property
    def chunked_readout(self) -> bool:
        """The loss reads the output head a chunk of tokens at a time (chunked_loss), except in a private run: Opacus
        takes each example's gradient from hooks on the head's module, which a chunked readout (the head's weight in
        a matmul of its own) would go around, leaving the head's gradient unclipped."""
        return self.chunked_loss and not self.private

    @property
    def recomputes_cheap_steps(self) -> bool:
        """LoRA's dropout and gated activations are recomputed in the backward (lean_activations), except in a private
        run: Opacus's hooks on lora_A would see its input without the dropout (studio.model.recompute)."""
        return self.lean_activations and not self.private

    @property
    def world_size(self) -> int:
        """Processes over every machine."""
        return self.num_processes * self.num_machines

    @property
    def accum_steps(self) -> int:
        """Micro-steps per optimizer step on each process: grad_accum, or what keeps global_batch when it is set."""
        if not self.global_batch:
            return self.grad_accum
        return self.global_batch // (self.batch_size * self.world_size)


@dataclass
class DistillConfig:
    teacher: str = setting(
        "", "learn from this model too: a run's name or a Hugging Face folder with the same vocabulary", "teacher"
    )
    alpha: float = setting(0.5, "the loss is alpha·T²·KL(teacher ‖ student) + (1 − alpha)·cross-entropy", "alpha")
    temperature: float = setting(2.0, "T: both distributions are softened by it before the KL", "temperature")


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    # ---- TOML in and out ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_toml(self) -> str:
        lines = [f"preset = {_toml_value(self.preset)}"]
        for section in SECTIONS:
            lines.append(f"\n[{section}]")
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        write_atomically(path, self.to_toml())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> RunConfig:
        config = cls()
        config.update(raw, where)
        return config

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """A run's config.toml. Every save writes `preset` and each section, so a file without one of them was cut
        short (or emptied): it is damaged, never read as the defaults it would otherwise parse to."""
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise StudioError(f"cannot read {path}: {error}; fix or remove the file") from None
        missing = [f"[{name}]" for name in SECTIONS if name not in raw] + (["preset"] if "preset" not in raw else [])
        if missing:
            raise StudioError(f"{path} is damaged (empty or cut short: no {', '.join(missing)}); fix or remove it")
        return cls.from_dict(raw, str(path))

    def update(self, raw: dict[str, Any], where: str) -> None:
        """Merge a (partial) dict of the TOML shape into this config, checking keys and types."""
        for key, value in raw.items():
            if key == "preset":
                self.preset = str(value)
            elif key in SECTIONS and isinstance(value, dict):
                for sub_key, sub_value in value.items():
                    set_field(self, f"{key}.{sub_key}", sub_value, where)
            else:
                raise StudioError(f"{where}: unknown key {key!r}; sections are {', '.join(SECTIONS)}")

    def copy(self) -> RunConfig:
        return RunConfig.from_dict(self.to_dict())

    def value(self, key: str) -> Any:
        """The value of `section.key`."""
        section, _, name = key.partition(".")
        return getattr(getattr(self, section), name)

    def dataset_shaping(self) -> str:
        """What decides which prepared dataset this config uses (studio.runs.prepare.prepared_dataset), as one
        comparable string: the data options, and the model's tokenizer (init_from), context and task."""
        m, t = self.model, self.train
        return json.dumps([dataclasses.asdict(self.data), t.init_from, t.task, m.arch, m.block_size], sort_keys=True)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "distill": DistillConfig}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


# ---- the declarations, read back (the CLI, `presets --keys`, the studio's forms) -------------------
@dataclass(frozen=True)
class FieldSpec:
    """One field's declaration: what setting() and the annotation say about `section.name`."""

    key: str  # section.name
    kind: type  # bool, int, float, str or list
    choices: tuple[str, ...]  # the Literal's values; () when any value of the kind goes
    default: Any
    help: str
    label: str

    @property
    def type_name(self) -> str:
        return "|".join(self.choices) if self.choices else self.kind.__name__


@cache
def field_specs() -> dict[str, FieldSpec]:
    """Every settable field, by `section.key`, in declaration order."""
    specs = {}
    for section, section_type in SECTIONS.items():
        hints = typing.get_type_hints(section_type)
        for item in dataclasses.fields(section_type):
            hint = hints[item.name]
            choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
            kind = str if choices else (typing.get_origin(hint) or hint)
            default = item.default_factory() if item.default is dataclasses.MISSING else item.default
            key = f"{section}.{item.name}"
            specs[key] = FieldSpec(
                key, kind, choices, default, item.metadata["help"], item.metadata["label"] or item.name
            )
    return specs


def field_spec(key: str, where: str = "--set") -> FieldSpec:
    try:
        return field_specs()[key]
    except KeyError:
        raise StudioError(f"{where}: unknown key {key!r}; run `llm-studio presets --keys` for the list") from None


def field_names() -> list[str]:
    """Every settable key, as `section.key`."""
    return list(field_specs())


# ---- one field at a time (presets, --set, the studio's forms) -----------------------------------
def set_field(config: RunConfig, dotted_key: str, value: Any, where: str = "--set") -> None:
    """Set `section.key` to value, converting strings (from the command line) to the field's type."""
    spec = field_spec(dotted_key, where)
    section, _, name = dotted_key.partition(".")
    setattr(getattr(config, section), name, _coerce(value, spec.kind, dotted_key, where))


def _coerce(value: Any, kind: type, key: str, where: str) -> Any:
    wrong = StudioError(f"{where}: {key} must be {_kind_name(kind)}, not {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise wrong
    if kind is int:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise wrong from None
    if kind is float:
        if isinstance(value, bool):
            raise wrong
        try:
            return float(value)
        except (TypeError, ValueError):
            raise wrong from None
    if kind is list:
        if isinstance(value, list):
            return [str(item) for item in value]
        if isinstance(value, str):
            return split_list(value)
        raise wrong
    if isinstance(value, bool):  # a TOML boolean where a choice is expected (`compile = true`): its text
        return format_value(value)
    if not isinstance(value, str):
        raise wrong
    return value


def _kind_name(kind: type) -> str:
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        list: "a list (on the command line: items separated by |, and \\| for a | inside one)",
    }.get(kind, "text")


def format_value(value: Any) -> str:
    """The text that set_field turns back into `value` (the command line's and the forms' spelling); a list's
    items joined by |, each | in an item escaped, and each backslash that would otherwise escape what follows it
    (split_list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(map(_escaped_item, value))
    return repr(value) if isinstance(value, float) else str(value)


def _escaped_item(item: str) -> str:
    """A list item as split_list reads it back: a backslash before each | in it, and before each backslash that
    would otherwise escape what follows it (a |, a backslash, or the separator after the item)."""
    return re.sub(r"\\(?=[\\|]|$)|\|", lambda found: "\\" + found[0], item)


def split_list(text: str, separator: str = "|") -> list[str]:
    """A list's text (--set, the studio's forms, a sweep's values) as its items: they are separated by |, and within
    one \\| is a | and \\\\ a backslash (a reward's regex may hold a |); any other backslash is itself, so a
    regex's \\d stays as written. format_value writes a list so that it reads back as it was. A sweep's `--grid`
    separates its values by commas the same way (`separator`), \\, being a comma within one."""
    items, item = [], ""
    characters = iter(text)
    for character in characters:
        if character == "\\":
            following = next(characters, "")
            item += following if following in (separator, "\\") else character + following
        elif character == separator:
            items.append(item)
            item = ""
        else:
            item += character
    return [*items, item]


def flat_config(config: RunConfig) -> dict[str, Any]:
    """Every field by `section.key`, lists as text: the config as trackers take hyperparameters."""
    return {"preset": config.preset} | {
        key: format_value(value) if isinstance(value := config.value(key), list) else value for key in field_names()
    }


def parse_override(text: str) -> tuple[str, str]:
    """`section.key=value` from the command line."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudioError(f"--set {text!r}: write it as section.key=value, e.g. --set train.lr=3e-4")
    return key.strip(), value.strip()


# ---- validation ---------------------------------------------------------------------------------
def validate(config: RunConfig) -> None:
    """Raise a StudioError for the first value that cannot work, naming the key and the fix."""
    m, d, t = config.model, config.data, config.train
    _choices(config, "model")
    _positive("model.block_size", m.block_size)
    if m.pretrained and not t.init_from:
        raise StudioError("model.arch hf is a Hugging Face checkpoint: name its folder with --init-from DIR")
    if not m.pretrained:
        _positive("model.n_layer", m.n_layer)
        _positive("model.n_embd", m.n_embd)
    if not m.recurrent and not m.pretrained:
        _positive("model.n_head", m.n_head)
        if m.n_embd % m.n_head:
            raise StudioError(
                f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head}); "
                f"try n_head={_nearest_divisor(m.n_embd, m.n_head)}"
            )
        if m.n_kv_head < 0 or m.n_head % m.kv_heads:
            raise StudioError(
                f"model.n_kv_head ({m.n_kv_head}) must divide model.n_head ({m.n_head}); 0 gives every head its own"
            )
        facts = architecture(m.arch)
        if m.activation != "gelu" and m.arch != "gpt2":
            raise StudioError(f"model.activation {m.activation} is for gpt2, not {m.arch}; set it to gelu")
        if not facts.grouped_query and m.kv_heads != m.n_head:
            raise StudioError(f"model.n_kv_head: grouped-query attention is for llama, not {m.arch}; set it to 0")
        if facts.rotary and m.head_dim % 2:
            raise StudioError(
                f"model: the head size n_embd/n_head = {m.head_dim} must be even "
                "for rotary embeddings; change n_embd or n_head"
            )
    if not 0.0 <= m.dropout < 1.0:
        raise StudioError(f"model.dropout must be in [0, 1), not {m.dropout}")
    if m.vocab_size < 0 or m.vocab_size > MAX_VOCAB:
        raise StudioError(f"model.vocab_size must be between 0 (take the dataset's) and {MAX_VOCAB}")
    if m.mlp_hidden < 0:
        raise StudioError("model.mlp_hidden must be 0 (automatic) or positive")

    _choices(config, "data")
    if not d.source.strip():  # Path("") is the working folder: an empty source would read whatever is there
        raise StudioError("data.source is empty: name a file, a folder, python-stdlib or a prepared dataset")
    if d.tokenizer == "bpe" and not MIN_BPE_VOCAB <= d.vocab_size <= MAX_VOCAB:
        raise StudioError(
            f"data.vocab_size {d.vocab_size} is out of range: a byte-level BPE needs "
            f"between {MIN_BPE_VOCAB} and {MAX_VOCAB} tokens (try 4096)"
        )
    if not 0.0 <= d.val_fraction < 0.5:
        raise StudioError(f"data.val_fraction must be at least 0 and below 0.5, not {d.val_fraction} (try 0.05)")
    if d.min_chars < 0 or d.max_chars < 0 or (d.max_chars and d.max_chars < d.min_chars):
        raise StudioError("data.min_chars and data.max_chars must be >= 0, and max_chars >= min_chars (0: no limit)")
    if not 0.0 <= d.near_dedup <= 1.0:
        raise StudioError(
            f"data.near_dedup {d.near_dedup} is not a Jaccard similarity in (0, 1]; e.g. 0.8, or 0 for no near-dedup"
        )
    redaction_kinds(d.redact)
    _positive("data.decontaminate_ngram", d.decontaminate_ngram)

    _choices(config, "train")
    for key in (
        "lr",
        "muon_lr",
        "muon_ns_steps",
        "max_steps",
        "batch_size",
        "grad_accum",
        "eval_interval",
        "eval_steps",
        "log_interval",
        "checkpoint_interval",
        "keep_checkpoints",
        "num_processes",
        "num_machines",
        "sample_tokens",
    ):
        _positive(f"train.{key}", getattr(t, key))
    _check_processes(t)
    for key in ("min_lr", "warmup_steps", "weight_decay", "momentum", "grad_clip", "sample_interval", "inverse_time_k",
                "epochs"):  # fmt: skip
        if getattr(t, key) < 0:
            raise StudioError(f"train.{key} must not be negative, not {getattr(t, key)}")
    unknown = [name for name in t.report_to if name not in TRACKERS]
    if unknown:
        raise StudioError(f"train.report_to: {unknown[0]!r} is not a tracker; choose from {', '.join(TRACKERS)}")
    if t.method != "full":
        if m.recurrent:
            raise StudioError(f"train.method {t.method}: adapters are for the decoders, not {m.arch}; use full")
        _positive("train.lora_rank", t.lora_rank)
        _positive("train.lora_alpha", t.lora_alpha)
        if not 0.0 <= t.lora_dropout < 1.0:
            raise StudioError(f"train.lora_dropout must be in [0, 1), not {t.lora_dropout}")
    if t.activation_checkpointing and m.recurrent:
        raise StudioError(f"train.activation_checkpointing: {m.arch} has no blocks to recompute; set it to false")
    if not 0.0 <= config.distill.alpha <= 1.0:
        raise StudioError(f"distill.alpha must be in [0, 1], not {config.distill.alpha}")
    _positive("distill.temperature", config.distill.temperature)
    _check_preference(config)
    _check_privacy(config)
    if t.min_lr > t.lr:
        raise StudioError(f"train.min_lr ({t.min_lr}) must not exceed train.lr ({t.lr})")
    if not (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1):
        raise StudioError("train.beta1 and train.beta2 must be in [0, 1), e.g. 0.9 and 0.99")
    if not 0 < t.decay_fraction <= 1:
        raise StudioError("train.decay_fraction must be in (0, 1], e.g. 0.2")


def _check_preference(config: RunConfig) -> None:
    """A preference objective aligns a next-token model fine-tuned from --init-from, with its own knobs in range."""
    t = config.train
    if t.precompute_reference and t.objective not in ("dpo", "ipo"):
        raise StudioError(f"train.precompute_reference is for dpo and ipo, whose pairs are fixed ({t.objective} "
                          "has no reference, or draws its answers anew each step): set it to false")  # fmt: skip
    if t.objective == "lm":
        return
    if t.task != "lm" or config.model.encoder or config.model.recurrent:
        raise StudioError(f"train.objective {t.objective} aligns a decoder's answers; use train.task lm and a "
                          "llama, gpt2 or hf model")  # fmt: skip
    if t.objective == "grpo":
        _check_grpo(t)
        return
    _positive("train.beta", t.beta)
    if not 0.0 <= t.label_smoothing < 0.5:
        raise StudioError(f"train.label_smoothing must be in [0, 0.5), not {t.label_smoothing}")
    for key in ("kto_desirable_weight", "kto_undesirable_weight"):
        _positive(f"train.{key}", getattr(t, key))
    if t.simpo_gamma < 0:
        raise StudioError(f"train.simpo_gamma must not be negative, not {t.simpo_gamma}")


def _check_privacy(config: RunConfig) -> None:
    """DP-SGD's knobs in range, and what it is not built for here refused: its per-example clipping needs one
    example per row and one process taking the whole step (studio.train.privacy)."""
    t, m = config.train, config.model
    for key in ("privacy_epsilon", "privacy_noise_multiplier"):
        if getattr(t, key) < 0:
            raise StudioError(f"train.{key} must not be negative (0: not set), not {getattr(t, key)}")
    if not 0 < t.privacy_delta < 1:
        raise StudioError(f"train.privacy_delta must be in (0, 1), e.g. 1e-5, not {t.privacy_delta}")
    _positive("train.privacy_max_grad_norm", t.privacy_max_grad_norm)
    if not t.private:
        return
    refusals = (
        (t.world_size > 1, "runs in one process (its noise and accounting are one process's steps): set "
                           "--num-processes 1"),
        (t.accum_steps > 1, "takes each step's batch at once (Poisson sampling draws a step's examples "
                            "together): set train.grad_accum 1 and train.global_batch 0, and raise train.batch_size"),
        (t.mixed_precision in ("bf16", "fp16"), "trains in fp32 (per-example gradients under autocast are not "
                                                "checked here): set train.mixed_precision auto or no"),
        (t.compile == "true", "does not compile (Opacus's hooks run eagerly): set train.compile auto or false"),
        (t.method not in ("full", "lora"), f"trains full weights or LoRA adapters, not {t.method}: use lora"),
        (t.method == "full" and m.pretrained, "trains a Hugging Face checkpoint through LoRA adapters only (on its "
                                              "full model Opacus's per-example hooks fail at the first step): use "
                                              "--method lora"),
        (t.objective != "lm", f"is for lm and classify runs, not {t.objective}: set train.objective lm"),
        (bool(config.distill.teacher), "learns from the data alone: remove distill.teacher"),
        (config.data.packing, "clips each example's gradient, and a packed row holds several: set data.packing "
                              "false"),
        (m.encoder and t.task == "lm", "does not draw BERT's masks: train a masked LM without privacy"),
    )  # fmt: skip
    for refused, why in refusals:
        if refused:
            raise StudioError(f"differentially private training (train.privacy_*) {why}")


def _check_grpo(t: TrainConfig) -> None:
    """GRPO's knobs in range, and the rewards given known (studio.rewards, torch-free)."""
    if t.beta < 0:
        raise StudioError(f"train.beta must not be negative for grpo (0: no KL term, no reference), not {t.beta}")
    if t.group_size < 2:
        raise StudioError(f"train.group_size must be 2 or more (answers compared per prompt), not {t.group_size}")
    _positive("train.grpo_epsilon", t.grpo_epsilon)
    _positive("train.grpo_iterations", t.grpo_iterations)
    _positive("train.max_completion_tokens", t.max_completion_tokens)
    if t.sharding == "fsdp":  # each process samples answers of its own length: FSDP's gathers would not line up
        raise StudioError("train.objective grpo does not run sharded: use train.sharding ddp")
    for name in t.rewards:  # at least one is asked at launch (a dataset is prepared without them)
        parse_reward(name, run_user_code=False)  # the user's file runs in the trainer, not wherever a config is checked


def _check_sharding(t: TrainConfig) -> None:
    """FSDP shares the model between processes, and leaves out what needs a whole tensor on one process."""
    if t.world_size == 1:
        raise StudioError("train.sharding fsdp shares the model between processes: give --num-processes 2 or more, "
                          "or use ddp")  # fmt: skip
    if t.optimizer == "muon":
        raise StudioError("train.sharding fsdp: Muon orthogonalises whole matrices, which FSDP splits between "
                          "processes; use adamw or sgd, or ddp")  # fmt: skip
    if t.method == "qlora":
        raise StudioError("train.sharding fsdp: a 4-bit base cannot be sharded; use lora, or ddp")


def _check_processes(t: TrainConfig) -> None:
    """The global batch divides among the processes, and several machines know where the main one is."""
    per_micro_step = t.batch_size * t.world_size
    if t.global_batch < 0 or t.global_batch % per_micro_step:
        raise StudioError(
            f"train.global_batch {t.global_batch} is not a multiple of batch_size × processes = {per_micro_step}; "
            f"try {max(round(t.global_batch / per_micro_step), 1) * per_micro_step}, or 0 to use train.grad_accum"
        )
    if t.sharding == "fsdp":
        _check_sharding(t)
    if not 0 <= t.machine_rank < t.num_machines:
        raise StudioError(
            f"train.machine_rank {t.machine_rank} is not a machine of {t.num_machines}; "
            f"give 0 to {t.num_machines - 1} (0 on the main machine)"
        )
    if t.num_machines > 1 and not t.main_address.strip():
        raise StudioError("several machines need the main machine's address: give --main-address HOST")
    if not 0 < t.main_port < 65536:
        raise StudioError(f"train.main_port {t.main_port} is not a port; give one from 1 to 65535, e.g. 29500")


def _choices(config: RunConfig, section: str) -> None:
    """Every field of the section whose declaration names its allowed values holds one of them."""
    for spec in field_specs().values():
        if spec.choices and spec.key.startswith(f"{section}.") and config.value(spec.key) not in spec.choices:
            raise StudioError(f"{spec.key} must be one of {', '.join(spec.choices)}, not {config.value(spec.key)!r}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise StudioError(f"{key} must be positive, not {value}")


def _nearest_divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))
