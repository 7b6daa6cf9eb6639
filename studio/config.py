"""The resolved configuration of a run: model, data, training. TOML in and out, plain-spoken validation.

A run's `config.toml` holds one `[model]`, `[data]` and `[train]` section with exactly the fields below;
presets are partial files of the same shape, and `--set section.key=value` edits one field. Every value
is checked in `validate()`, which raises a StudioError naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import StudioError

ARCHS = ("llama", "gpt2", "lstm", "rnn")
RECURRENT_ARCHS = ("lstm", "rnn")
TOKENIZERS = ("bpe", "char")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "inverse_time", "wsd")
PRECISIONS = ("no", "bf16", "fp16")
MAX_VOCAB = 1 << 20  # token ids are stored as uint32 at most; beyond a million the tokenizer is the problem
MIN_BPE_VOCAB = 257  # 256 byte symbols plus the end-of-text token


@dataclass
class ModelConfig:
    arch: str = "llama"  # llama | gpt2 | lstm | rnn
    n_layer: int = 4
    n_head: int = 4  # decoders only
    n_embd: int = 128  # width; the hidden size for the recurrent models
    block_size: int = 128  # context length (tokens per training sequence)
    vocab_size: int = 0  # 0: the prepared dataset's vocabulary size
    dropout: float = 0.0
    tie_embeddings: bool = True
    mlp_hidden: int = 0  # 0: 4 * n_embd (gpt2) or the SwiGLU 8/3 rule rounded to 64 (llama)
    bias: bool = False  # gpt2 only: biases in linear layers and LayerNorm
    rope_theta: float = 10000.0  # llama only
    norm_eps: float = 1e-5


@dataclass
class DataConfig:
    source: str = "python-stdlib"  # a .txt / .jsonl file, a folder, `python-stdlib`, or a prepared dataset name
    tokenizer: str = "bpe"  # bpe | char
    vocab_size: int = 4096  # bpe only; char vocabularies are the corpus' own characters
    val_fraction: float = 0.05
    text_field: str = "text"  # jsonl only
    glob: str = "**/*"  # folders only: which files to read
    min_chars: int = 1  # documents shorter than this (after cleaning) are dropped
    max_chars: int = 0  # documents longer than this are dropped; 0: no limit
    dedup: bool = True  # drop exact duplicate documents
    strict: bool = False  # refuse non-UTF-8 bytes instead of replacing them
    dataset: str = ""  # the prepared dataset the run trains on; filled in at launch


@dataclass
class TrainConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"  # constant | linear | cosine | inverse_time | wsd
    warmup_steps: int = 100
    decay_fraction: float = 0.2  # wsd: the share of steps spent decaying at the end
    inverse_time_k: float = 0.01  # inverse_time: lr0 / (1 + k * t)
    max_steps: int = 2000
    batch_size: int = 32  # sequences per process per micro-step
    grad_accum: int = 1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    momentum: float = 0.9  # sgd only
    grad_clip: float = 1.0  # 0: no clipping
    eval_interval: int = 250
    eval_steps: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    sample_interval: int = 500  # 0: no samples
    sample_tokens: int = 64
    sample_prompts: list[str] = field(default_factory=lambda: ["\n", "def ", "The "])
    seed: int = 1337
    mixed_precision: str = "no"  # no | bf16 | fp16
    compile: bool = False
    num_processes: int = 1
    init_from: str = ""  # start from these weights: a local Hugging Face folder or a run's name ("": from scratch)


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

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
        path.write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> "RunConfig":
        config = cls()
        config.update(raw, where)
        return config

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise StudioError(f"cannot read {path}: {error}; fix or remove the file") from None
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

    def copy(self) -> "RunConfig":
        return RunConfig.from_dict(self.to_dict())


SECTIONS = ("model", "data", "train")


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


# ---- one field at a time (presets, --set, the studio's forms) -----------------------------------
def field_names() -> list[str]:
    """Every settable key, as `section.key`."""
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(_section_type(s))]


def _section_type(section: str) -> type:
    return {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}[section]


def set_field(config: RunConfig, dotted_key: str, value: Any, where: str = "--set") -> None:
    """Set `section.key` to value, converting strings (from the command line) to the field's type."""
    section, _, key = dotted_key.partition(".")
    if section not in SECTIONS or key not in {f.name for f in dataclasses.fields(_section_type(section))}:
        raise StudioError(f"{where}: unknown key {dotted_key!r}; run `llm-studio presets --keys` for the list")
    target = getattr(config, section)
    kind = type(getattr(target, key))
    setattr(target, key, _coerce(value, kind, dotted_key, where))


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
            return [item for item in value.split("|")]
        raise wrong
    if not isinstance(value, str):
        raise wrong
    return value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number",
            list: "a list (on the command line: items separated by |)"}.get(kind, "text")


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
    _choice("model.arch", m.arch, ARCHS)
    _positive("model.n_layer", m.n_layer)
    _positive("model.n_embd", m.n_embd)
    _positive("model.block_size", m.block_size)
    if m.arch not in RECURRENT_ARCHS:
        _positive("model.n_head", m.n_head)
        if m.n_embd % m.n_head:
            raise StudioError(
                f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head}); "
                f"try n_head={_nearest_divisor(m.n_embd, m.n_head)}")
        if m.arch == "llama" and (m.n_embd // m.n_head) % 2:
            raise StudioError(f"model: the head size n_embd/n_head = {m.n_embd // m.n_head} must be even "
                              "for rotary embeddings; change n_embd or n_head")
    if not 0.0 <= m.dropout < 1.0:
        raise StudioError(f"model.dropout must be in [0, 1), not {m.dropout}")
    if m.vocab_size < 0 or m.vocab_size > MAX_VOCAB:
        raise StudioError(f"model.vocab_size must be between 0 (take the dataset's) and {MAX_VOCAB}")
    if m.mlp_hidden < 0:
        raise StudioError("model.mlp_hidden must be 0 (automatic) or positive")

    _choice("data.tokenizer", d.tokenizer, TOKENIZERS)
    if d.tokenizer == "bpe" and not MIN_BPE_VOCAB <= d.vocab_size <= MAX_VOCAB:
        raise StudioError(f"data.vocab_size {d.vocab_size} is out of range: a byte-level BPE needs "
                          f"between {MIN_BPE_VOCAB} and {MAX_VOCAB} tokens (try 4096)")
    if not 0.0 < d.val_fraction < 0.5:
        raise StudioError(f"data.val_fraction must be above 0 and below 0.5, not {d.val_fraction} (try 0.05)")
    if d.min_chars < 0 or d.max_chars < 0 or (d.max_chars and d.max_chars < d.min_chars):
        raise StudioError("data.min_chars and data.max_chars must be >= 0, and max_chars >= min_chars (0: no limit)")

    _choice("train.optimizer", t.optimizer, OPTIMIZERS)
    _choice("train.schedule", t.schedule, SCHEDULES)
    _choice("train.mixed_precision", t.mixed_precision, PRECISIONS)
    for key in ("lr", "max_steps", "batch_size", "grad_accum", "eval_interval", "eval_steps",
                "log_interval", "checkpoint_interval", "keep_checkpoints", "num_processes", "sample_tokens"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("min_lr", "warmup_steps", "weight_decay", "momentum", "grad_clip", "sample_interval",
                "inverse_time_k"):
        if getattr(t, key) < 0:
            raise StudioError(f"train.{key} must not be negative, not {getattr(t, key)}")
    if t.min_lr > t.lr:
        raise StudioError(f"train.min_lr ({t.min_lr}) must not exceed train.lr ({t.lr})")
    if not (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1):
        raise StudioError("train.beta1 and train.beta2 must be in [0, 1), e.g. 0.9 and 0.99")
    if not 0 < t.decay_fraction <= 1:
        raise StudioError("train.decay_fraction must be in (0, 1], e.g. 0.2")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise StudioError(f"{key} must be positive, not {value}")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise StudioError(f"{key} must be one of {', '.join(choices)}, not {value!r}")


def _nearest_divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))
