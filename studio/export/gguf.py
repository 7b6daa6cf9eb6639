"""`llm-studio export --format gguf`: a run's checkpoint as one GGUF file that llama.cpp (and Ollama, LM Studio)
runs, verified by llama.cpp itself, with an Ollama Modelfile beside it.

    NAME.gguf            the weights (f32, f16, bf16, q8_0 or q4_k_m), hyperparameters, tokenizer, chat template
    verification.json    llama.cpp against the studio: token ids, logits, greedy text, a chat answer's stop
    Modelfile            `ollama create NAME -f Modelfile` (studio.export.ollama)

The file is written with `gguf`, llama.cpp's own Python library, from the model's Hugging Face layout (the names
and config.json the HF export writes; a run of a Hugging Face model is that already), the way llama.cpp's
converter writes its family (`Architecture.gguf`, `GGUF_FAMILIES`). What llama.cpp cannot run as the studio does
(an encoder or classifier, an architecture it has no loader for, a sliding window it would ignore, a tokenizer it
would split otherwise) is refused before anything is written. q4_k_m is llama.cpp's own quantiser, from an f16
file. Verification needs llama-cpp-python (the `gguf` extra); without it the export says it is unverified.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.architectures import GGUF_FAMILIES, architecture
from studio.architectures.base import Gguf
from studio.config import RunConfig
from studio.data.prepare import Dataset, open_dataset
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError
from studio.export import GGUF_QUANTS
from studio.export.huggingface import merged_native_weights, model_config_json
from studio.export.ollama import modelfile
from studio.inference.generate import Generator, SamplingConfig, load_generator
from studio.inference.load import read_checkpoint
from studio.model.trainable import build_run_model
from studio.model.weights import hf_names
from studio.objectives import objective_of
from studio.output_folder import check_replaceable, replaced_whole
from studio.run_folder.layout import run_or_folder

INSTALL = "pip install 'llm-studio[gguf]'"
VERIFICATION = "verification.json"
MODELFILE = "Modelfile"

# The pre-tokenizers llama.cpp implements, by the regex a byte-level BPE's tokenizer.json splits text with, as
# its Split step before a ByteLevel that splits no further (Qwen2's, Llama 3's). Qwen2's tokenizer also puts text
# in NFC, which llama.cpp does not: the two agree on text already in NFC (nearly all text), as they do for every
# GGUF of Qwen that llama.cpp's own converter writes.
SPLIT_PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{"
    r"1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}
# GPT-2's regex, which a ByteLevel step applies itself: llama.cpp's "gpt-2". The studio's own BPE adds a cut of
# pre-tokens into pieces of at most MAX_PRETOKEN_BYTES, which llama.cpp does not: the two agree on every
# pre-token (a word, a number, a run of spaces) up to that length, which the probes check.
GPT2_PRE_TOKENIZER = "gpt-2"

# Probe strings whose token ids llama.cpp must give as the studio does (the special tokens are added to them).
PROBES = (
    "Hello, world! It's a test of the tokenizer.",
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n",
    "digits 0123456789 3.14159 -42 1e-10 2026",
    "spaces:   two  three   tabs\t\tend\n\n\n    indented",
    "中文分词测试：你好，世界。日本語も。",
    "emoji 🙂🚀 and 👩‍💻 joined",
)
# Logits are compared on each probe and on this text, every position pooled: a 2% rule needs many positions
LOGIT_PROBE = "def add(a, b):\n    return a + b\n\nThe quick brown fox jumps over the lazy dog 12345."
GREEDY_PROMPT = "def "
GREEDY_TOKENS = 32
CHAT_PROBE = [{"role": "user", "content": "add"}]
CHAT_TOKENS = 32

# What verification asks of each format: the largest logit difference (f32), the share of positions whose top
# token is the studio's (near-ties aside), and whether greedy text must equal the studio's token for token.
# q4_k_m is reported only.
F32_TOLERANCE = 1e-3
# An f32 file of a family whose GELU llama.cpp looks up in f16 (`Gguf.gelu_f16_table`) is allowed this share of
# the largest logit: eight of f16's roundings (2^-11 each). Measured on tiny trained models: 4.4e-4 of it at most
# (Gemma 3 8.7e-3 of 19.7, GPT-2 1.0e-3 of 10.1; Gemma 3's median position 2.9e-6 once the table's rounding is
# copied into the studio's model); a Gemma 3 written with the wrong sliding layers or rotary base, 0.45 of it
GELU_TABLE_TOLERANCE = 2**-8
# A position whose top two logits are within this share of its largest |logit| is a near-tie, which a file's
# rounding may swap: the top-1 agreement asked is over the other positions. f16's rounding, compounded over the
# layers, moved the gap between two logits by up to 2.4% of the largest on tiny trained models (phi3: 0.14 of 5.6);
# every top token f16 flipped in 42 exports (7 families, 6 training settings) was within 6.4e-3 of it (phi3's
# 0.036 of 5.6; the others within 2^-8); 2^-6 (1.6e-2) is 2.4 times that
NEAR_TIE = 2**-6
REQUIRED_TOP1 = {"f32": 1.0, "f16": 1.0, "bf16": 0.98, "q8_0": 0.98, "q4_k_m": 0.0}
GREEDY_MUST_MATCH = ("f32", "f16")


@dataclass
class GgufExport:
    out: Path
    files: list[str]
    verdict: str  # one line: verified with its figures, or unverified and why
    ollama_command: str
    template_note: str | None  # when the Modelfile carries no TEMPLATE: why
    fallback: str | None = None  # when a damaged latest checkpoint was passed over: which, and why


@dataclass
class Vocabulary:
    """A tokenizer as GGUF's tokenizer.ggml.* fields hold it."""

    tokens: list[str]
    types: list[int]  # gguf.TokenType
    merges: list[str]
    pre: str  # llama.cpp's pre-tokenizer name
    specials: list[str]  # the special tokens' texts, which the probes include


@dataclass
class SpecialIds:
    bos: int
    eos: int  # the end of text
    end_of_turn: int | None  # the chat template's, when it has one besides eos


@dataclass
class Reference:
    """What the studio's own model says on the probes, which llama.cpp must say too."""

    context: int  # the longest sequence the studio's model takes
    probe_ids: dict[str, list[int]]
    logit_ids: list[list[int]]  # sequences
    logits: np.ndarray  # (positions of every sequence, vocabulary)
    greedy_prompt: list[int]
    greedy_budget: int  # the most tokens generated
    greedy_ids: list[int]  # up to a stop token
    stop_ids: list[int]
    chat_answer: str | None  # None: not a chat run
    chat_stopped: bool


def export_gguf(
    run: str, out: Path, step: int | None = None, quant: str = GGUF_QUANTS[0], verify: bool = True
) -> GgufExport:
    if quant not in GGUF_QUANTS:
        raise StudioError(f"--quant must be one of {', '.join(GGUF_QUANTS)}, not {quant!r}")
    gguf = require_gguf()
    run_dir = run_or_folder(run)
    read = read_checkpoint(run_dir, step)
    config = read.config
    check_exportable(run_dir.name, config)
    dataset = open_dataset(config.data.dataset)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    hf_config, weights = hf_layout(read, dataset)
    facts = gguf_facts(run_dir.name, config, hf_config)
    vocabulary = gguf_vocabulary(run_dir.name, tokenizer, hf_config["vocab_size"], gguf)
    if quant == "q4_k_m" and not llama_cpp_installed():
        raise StudioError(f"--quant q4_k_m is llama.cpp's quantiser, which llama-cpp-python brings: {INSTALL}")
    out = out.expanduser().resolve()
    check_replaceable(out)
    verifying = verify and llama_cpp_installed()
    reference = studio_reference(run_dir, read.step, probe_texts(vocabulary)) if verifying else None
    started = time.monotonic()
    name = f"{run_dir.name}-{quant}.gguf"
    with replaced_whole(out, {"run": run_dir.name, "step": read.step, "format": "gguf"}) as staging:
        specials = special_ids(tokenizer, dataset, hf_config)
        template = pinned_chat_template(dataset, tokenizer, specials)
        writing = "f16" if quant == "q4_k_m" else quant
        written = staging / (name if writing == quant else f".{run_dir.name}-f16.gguf")
        write_gguf(written, gguf, facts, hf_config, weights, vocabulary, specials, template, writing)
        if quant == "q4_k_m":
            quantize_k(written, staging / name)
            written.unlink()
        figures = {"format": quant, "bytes": (staging / name).stat().st_size, "write_seconds": since(started)}
        if reference is None:
            why = "asked not to" if not verify else f"llama-cpp-python is not installed ({INSTALL})"
            verdict = f"unverified: {why}"
            figures["verified"] = False
        else:
            started = time.monotonic()
            figures |= llama_cpp_figures(staging / name, reference)
            figures["verify_seconds"] = since(started)
            if quant == "f32":
                figures["max_logit_diff_allowed"] = f32_tolerance(facts, reference)
            verdict = judge(figures, quant, reference)
            figures["verified"] = True
        figures["verdict"] = verdict
        (staging / VERIFICATION).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        stop_texts = [tokenizer.id_to_token(i) for i in sorted({specials.eos, *dataset.meta.stop_ids})]
        text, template_note = modelfile(name, dataset.meta.chat_template, dataset.meta.chat_tokens, stop_texts)
        (staging / MODELFILE).write_text(text, encoding="utf-8")
        files = sorted(path.name for path in staging.iterdir())
    command = f"ollama create {run_dir.name} -f {out / MODELFILE}"
    return GgufExport(out, files, verdict, command, template_note, read.note)


def since(started: float) -> float:
    return round(time.monotonic() - started, 2)


# ---- what can be exported ----------------------------------------------------------------------------------
def require_gguf():
    try:
        import gguf
    except ImportError:
        raise StudioError(f"--format gguf writes with llama.cpp's gguf package: {INSTALL}") from None
    return gguf


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def check_exportable(name: str, config: RunConfig) -> None:
    """Refuses, before the model is loaded, a run llama.cpp cannot run: not a causal LM, or a studio architecture
    it has no loader for."""
    objective = objective_of(config)
    if not objective.generates:
        raise StudioError(
            f"run {name} is {objective.model_kind}: llama.cpp runs language models that continue text; "
            "export it with --format huggingface"
        )
    if not config.model.pretrained and architecture(config.model.arch).gguf is None:
        raise StudioError(
            f"run {name}: llama.cpp has no loader for the studio's {config.model.arch} models; "
            "export it with --format huggingface"
        )


def gguf_facts(name: str, config: RunConfig, hf_config: dict[str, Any]) -> Gguf:
    """The run's family's GGUF facts; refused when the export does not write its family, or llama.cpp would run it
    otherwise than trained (a sliding window or an activation its loader lacks)."""
    model_type = hf_config["model_type"]
    facts = GGUF_FAMILIES.get(model_type) if config.model.pretrained else architecture(config.model.arch).gguf
    if facts is None:
        raise StudioError(
            f"run {name}: GGUF export does not write {model_type} models (it writes Hugging Face "
            f"{', '.join(sorted(GGUF_FAMILIES))}); export it with --format huggingface"
        )
    if hf_config.get("activation_function") == "relu2":  # llama.cpp's gpt2 graph has GELU only
        raise StudioError(
            f"run {name}: its MLP's activation is {hf_config['activation_function']}, which llama.cpp's gpt2 "
            "loader does not have (it would run GELU); export it with --format huggingface"
        )
    window = hf_config.get("sliding_window") if hf_config.get("use_sliding_window", True) else None
    context = hf_config.get("max_position_embeddings", 0)
    if window and window < context and not facts.sliding_window:
        raise StudioError(
            f"run {name}: its {model_type} model attends within a sliding window of {window} tokens, which "
            f"llama.cpp's {facts.arch} loader does not have (it would attend to all {context}); export it with "
            "--format huggingface"
        )
    return facts


def gguf_vocabulary(name: str, tokenizer, vocab_size: int, gguf) -> Vocabulary:
    """The tokenizer as GGUF holds it: a byte-level BPE whose pre-tokenizer llama.cpp implements alike; anything
    else is refused (a character-level tokenizer: llama.cpp drops a character its vocabulary lacks, where the
    studio writes <|unk|>)."""
    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    if model["type"] == "BPE" and not model["merges"] and spec["pre_tokenizer"] is None:
        raise StudioError(
            f"run {name} has a character-level tokenizer, which llama.cpp cannot express: it drops a character "
            "its vocabulary lacks where the studio writes <|unk|>; train with --tokenizer bpe to export GGUF"
        )
    pre = llama_cpp_pre_tokenizer(spec) if model["type"] == "BPE" else None
    if pre is None:
        raise StudioError(
            f"run {name}'s tokenizer ({model['type']}, pre-tokenizer {describe(spec['pre_tokenizer'])}) splits text "
            "in a way no llama.cpp pre-tokenizer does; GGUF export takes byte-level BPE with GPT-2's, Llama 3's or "
            "Qwen2's split"
        )
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items()}
    specials = {added["content"] for added in spec["added_tokens"] if added["special"]}
    tokens, types = [], []
    for token_id in range(vocab_size):
        token = by_id.get(token_id)
        tokens.append(f"[PAD{token_id}]" if token is None else token)
        if token is None:
            types.append(gguf.TokenType.UNUSED)
        elif token in specials:
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    return Vocabulary(tokens, types, merges, pre, sorted(specials))


def llama_cpp_pre_tokenizer(spec: dict[str, Any]) -> str | None:
    """The name of llama.cpp's pre-tokenizer that splits text as the tokenizer.json `spec` does; None: none."""
    pre, normalizer = spec["pre_tokenizer"], spec.get("normalizer")
    if pre is None:
        return None
    steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    first, *rest = steps
    if normalizer is None and gpt2_byte_level(first) and all(map(studio_cut, rest)):
        return GPT2_PRE_TOKENIZER
    if normalizer in (None, {"type": "NFC"}) and len(steps) == 2 and first["type"] == "Split":
        byte_level = rest[0]["type"] == "ByteLevel" and not rest[0]["use_regex"] and not rest[0]["add_prefix_space"]
        whole = first["behavior"] == "Isolated" and not first["invert"]
        return SPLIT_PRE_TOKENIZERS.get(first["pattern"].get("Regex", "")) if byte_level and whole else None
    return None


def gpt2_byte_level(pre: dict[str, Any]) -> bool:
    return pre["type"] == "ByteLevel" and not pre["add_prefix_space"] and pre.get("use_regex", True)


def studio_cut(pre: dict[str, Any]) -> bool:
    """The studio's cut of long pre-tokens (studio.data.tokenizer.train_bpe)."""
    return pre["type"] == "Split" and pre["pattern"].get("Regex", "").startswith(".{1,")


def describe(pre: dict[str, Any] | None) -> str:
    if pre is None:
        return "none"
    if pre["type"] == "Sequence":
        return "+".join(describe(step) for step in pre["pretokenizers"])
    return pre["type"]


# ---- the model in Hugging Face's layout --------------------------------------------------------------------
def hf_layout(read, dataset: Dataset) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The merged model's config.json and weights under Hugging Face's names: a studio model's as the HF export
    writes them, a Hugging Face model's as transformers holds them (a tied head once, as the embedding)."""
    config = read.config
    if not config.model.pretrained:
        hf_config = model_config_json(config, objective_of(config), dataset.eot_id, "fp32", dataset.meta)
        return hf_config, hf_names(merged_native_weights(read), config.model)
    run_model = build_run_model(config, dequantized=True)
    run_model.load_state(read.weights)
    merged = run_model.merged()
    hf_config = merged.config.to_dict()
    weights = merged.state_dict()
    if hf_config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)
    return hf_config, weights


def special_ids(tokenizer, dataset: Dataset, hf_config: dict[str, Any]) -> SpecialIds:
    """The end of text the run trained with; a Hugging Face base's own start token (a studio model's is the end
    of text, as in its HF export); the chat template's end of turn when it is another token."""
    eos = dataset.eot_id
    bos = hf_config.get("bos_token_id") if hf_config.get("bos_token_id") is not None else eos
    turns = [token_id for token_id in dataset.meta.stop_ids if token_id != eos]
    return SpecialIds(bos, eos, turns[0] if turns else None)


def pinned_chat_template(dataset: Dataset, tokenizer, specials: SpecialIds) -> str | None:
    """The run's chat template, rendering bos_token and eos_token as the studio rendered them in training:
    llama.cpp passes the texts of the GGUF's start and end tokens, which may differ (a studio model has no start
    token; its template's bos_token renders as nothing)."""
    template = dataset.meta.chat_template
    if not template:
        return None
    trained = dataset.meta.chat_tokens
    pins = ""
    for name, text, token_id in (("bos_token", trained.bos, specials.bos), ("eos_token", trained.eos, specials.eos)):
        if tokenizer.id_to_token(token_id) != text:
            pins += "{% set " + name + " = " + json.dumps(text, ensure_ascii=False) + " %}"
    return pins + template


# ---- the file ----------------------------------------------------------------------------------------------
def write_gguf(
    path: Path,
    gguf,
    facts: Gguf,
    hf_config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    vocabulary: Vocabulary,
    specials: SpecialIds,
    chat_template: str | None,
    quant: str,
) -> None:
    arch = gguf.MODEL_ARCH[facts.arch.upper()]
    # no general.name: llama.cpp changes how it tokenizes by the name (one holding "phi3" strips spaces after
    # special tokens), and a run's name is the user's
    writer = gguf.GGUFWriter(path, facts.arch)
    write_hyperparameters(writer, hf_config, facts)
    writer.add_file_type(FILE_TYPES[quant](gguf))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocabulary.pre)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    writer.add_token_merges(vocabulary.merges)
    writer.add_bos_token_id(specials.bos)
    writer.add_eos_token_id(specials.eos)
    writer.add_pad_token_id(specials.eos)
    if specials.end_of_turn is not None:
        writer.add_eot_token_id(specials.end_of_turn)
    writer.add_add_bos_token(False)  # the studio encodes prompts without special tokens
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    names = gguf.get_tensor_name_map(arch, hf_config.get("num_hidden_layers") or hf_config["n_layer"])
    for hf_name, tensor in weights.items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise StudioError(f"llama.cpp's {facts.arch} has no tensor for {hf_name}; it cannot be exported to GGUF")
        data = gguf_tensor(hf_name, tensor, facts, hf_config).numpy()
        add_tensor(writer, gguf, gguf_name, data, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


FILE_TYPES = {
    "f32": lambda gguf: gguf.LlamaFileType.ALL_F32,
    "f16": lambda gguf: gguf.LlamaFileType.MOSTLY_F16,
    "bf16": lambda gguf: gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": lambda gguf: gguf.LlamaFileType.MOSTLY_Q8_0,
}


def write_hyperparameters(writer, hf_config: dict[str, Any], facts: Gguf) -> None:
    """The shape, as llama.cpp's converter reads it from config.json (GPT-2's names, or Llama's and the like)."""
    get = hf_config.get
    width = get("hidden_size") or get("n_embd")
    heads = get("num_attention_heads") or get("n_head")
    writer.add_block_count(get("num_hidden_layers") or get("n_layer"))
    writer.add_context_length(get("max_position_embeddings") or get("n_positions"))
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(get("intermediate_size") or get("n_inner") or 4 * width)
    writer.add_head_count(heads)
    writer.add_head_count_kv(get("num_key_value_heads") or heads)
    writer.add_vocab_size(get("vocab_size"))
    if get("layer_norm_epsilon") is not None:
        writer.add_layer_norm_eps(get("layer_norm_epsilon"))
    if get("rms_norm_eps") is not None:
        writer.add_layer_norm_rms_eps(get("rms_norm_eps"))
    rope = get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)  # Gemma 3's: one per kind of layer (the sliding ones' with the window)
    theta = rope.get("rope_theta", get("rope_theta"))
    if theta is not None:
        head_dim = get("head_dim") or width // heads
        writer.add_rope_freq_base(theta)
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if facts.sliding_window and get("sliding_window"):
        write_sliding_window(writer, hf_config)


def write_sliding_window(writer, hf_config: dict[str, Any]) -> None:
    """The window, which layers slide and their rotary base: without the last two llama.cpp's gemma3 assumes
    Gemma 3's own (five sliding layers to one global, base 10000), another model where a config differs."""
    writer.add_sliding_window(hf_config["sliding_window"])
    writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in hf_config["layer_types"]])
    sliding_rope = (hf_config.get("rope_parameters") or {}).get("sliding_attention")
    if sliding_rope is not None:
        writer.add_rope_freq_base_swa(sliding_rope["rope_theta"])


def gguf_tensor(name: str, tensor: torch.Tensor, facts: Gguf, hf_config: dict[str, Any]) -> torch.Tensor:
    """A weight as llama.cpp's family reads it: Conv1D weights back to (out, in), Gemma's norms from offsets to
    weights, Llama's q and k rows reordered for its pairwise rotation."""
    tensor = tensor.detach().float()
    if name.endswith(facts.transposed):
        tensor = tensor.t()
    if name.endswith("norm.weight"):
        tensor = tensor + facts.norm_shift
    if facts.rotary_pairs and name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = hf_config["num_attention_heads"]
        if name.endswith("k_proj.weight"):
            heads = hf_config.get("num_key_value_heads") or heads
        tensor = tensor.reshape(heads, 2, tensor.shape[0] // heads // 2, *tensor.shape[1:]).swapaxes(1, 2)
        tensor = tensor.reshape(-1, *tensor.shape[3:])
    return tensor.contiguous()


def add_tensor(writer, gguf, name: str, data: np.ndarray, quant: str) -> None:
    """Vectors (norms, biases) stay f32, as llama.cpp keeps them; matrices take the format, q8_0 only where
    a row is whole blocks of 32 (else f16, as the converter does)."""
    target = "f32" if data.ndim == 1 else quant
    if target == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        target = "f16"
    if target == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif target == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType.BF16 if target == "bf16" else gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)


def quantize_k(source: Path, target: Path) -> None:
    """llama.cpp's own Q4_K_M quantiser, from the f16 file."""
    import llama_cpp

    quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise StudioError(f"llama.cpp could not quantise {source.name} to q4_k_m")


# ---- verification --------------------------------------------------------------------------------------------
def probe_texts(vocabulary: Vocabulary) -> list[str]:
    """The probe strings, and one holding every special token between words."""
    return [*PROBES, " x ".join(["start", *vocabulary.specials, "end"])]


@torch.inference_mode()
def studio_reference(run_dir: Path, step: int, probes: list[str]) -> Reference:
    """The studio's model as `llm-studio generate` loads it (adapters unmerged, full precision), on the probes."""
    generator = load_generator(str(run_dir), step)
    tokenizer = generator.tokenizer
    probe_ids = {text: tokenizer.encode(text, add_special_tokens=False).ids for text in probes}
    logit_probe = tokenizer.encode(LOGIT_PROBE, add_special_tokens=False).ids
    logit_ids = [ids[: generator.block_size] for ids in [*probe_ids.values(), logit_probe] if ids]
    logits = np.concatenate([generator.model(torch.tensor([ids]))[0][0].float().numpy() for ids in logit_ids])
    prompt = generator.encode(GREEDY_PROMPT)
    budget = min(GREEDY_TOKENS, generator.block_size - len(prompt))  # within the context: no window slides
    greedy = greedy_ids(generator, prompt, budget)
    chat_answer, chat_stopped = None, False
    if generator.chat_template is not None:
        chat_prompt = generator.encode(generator.chat_prompt(CHAT_PROBE))
        chat_budget = min(CHAT_TOKENS, generator.block_size - len(chat_prompt))
        answer = greedy_ids(generator, chat_prompt, chat_budget)
        chat_answer, chat_stopped = tokenizer.decode(answer), len(answer) < chat_budget
    stops = generator.stop_ids
    return Reference(
        generator.block_size, probe_ids, logit_ids, logits, prompt, budget, greedy, stops, chat_answer, chat_stopped
    )


def greedy_ids(generator: Generator, prompt: list[int], new_tokens: int) -> list[int]:
    """The studio's greedy continuation of `prompt`, up to a stop token or `new_tokens` tokens."""
    answer: list[list[int]] = [[]]
    sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
    for _ in generator.stream_ids([prompt], sampling, answer_ids=answer):
        pass
    return answer[0]


def llama_cpp_figures(path: Path, reference: Reference) -> dict[str, Any]:
    """llama.cpp's answers on the probes, compared with the studio's."""
    import llama_cpp

    quiet_llama_cpp()
    # an f32 cache of keys and values (llama.cpp's default is f16): what is judged is the file, not that rounding
    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=reference.context, logits_all=True, type_k=f32, type_v=f32, verbose=False
    )
    theirs = {text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in reference.probe_ids}
    mismatched = {text: ids for text, ids in theirs.items() if ids != reference.probe_ids[text]}
    logits = np.concatenate([llama_cpp_logits(llm, ids) for ids in reference.logit_ids])
    agree = logits.argmax(-1) == reference.logits.argmax(-1)
    clear = ~near_ties(reference.logits)
    greedy = llama_cpp_greedy(llm, reference.greedy_prompt, reference.greedy_budget, reference.stop_ids)
    figures: dict[str, Any] = {
        "llama_cpp": llama_cpp.__version__,
        "probes": len(reference.probe_ids),
        "probes_tokenized_alike": len(reference.probe_ids) - len(mismatched),
        "mismatched_probes": {text: ids[:16] for text, ids in mismatched.items()},
        "logit_positions": len(logits),
        "max_logit_diff": float(np.abs(logits - reference.logits).max()),
        "top1_agreement": float(agree.mean()),
        "near_ties": int((~clear).sum()),
        # where every position is a near-tie, nothing shows that the file agrees: 0
        "top1_agreement_clear": float(agree[clear].mean()) if clear.any() else 0.0,
        "greedy_tokens": len(reference.greedy_ids),
        "greedy_equal_tokens": common_prefix(greedy, reference.greedy_ids),
        "greedy_equal": greedy == reference.greedy_ids,
    }
    if reference.chat_answer is not None:
        completion = llm.create_chat_completion(CHAT_PROBE, max_tokens=CHAT_TOKENS, temperature=0.0, top_k=1)
        choice = completion["choices"][0]
        figures |= {
            "chat_answer": choice["message"]["content"],
            "chat_finish_reason": choice["finish_reason"],
            "chat_studio_answer": reference.chat_answer,
            "chat_studio_stopped": reference.chat_stopped,
        }
    llm.close()
    return figures


def near_ties(logits: np.ndarray) -> np.ndarray:
    """The positions whose top two logits are within NEAR_TIE of the largest |logit| there."""
    top_two = np.partition(logits, -2, axis=-1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0] <= NEAR_TIE * np.abs(logits).max(-1)


def llama_cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # a copy: the next evaluation reuses them


def quiet_llama_cpp() -> None:
    """llama.cpp logs to stderr as it loads (a context longer than trained, say), which the export's one-line
    verdict says better: its log goes nowhere."""
    import llama_cpp

    global LLAMA_CPP_LOG
    if LLAMA_CPP_LOG is None:
        LLAMA_CPP_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(LLAMA_CPP_LOG, None)


LLAMA_CPP_LOG = None  # the callback llama.cpp logs to, kept alive while it may be called


def llama_cpp_greedy(llm, prompt: list[int], new_tokens: int, stop_ids: list[int]) -> list[int]:
    answer: list[int] = []
    if new_tokens == 0:
        return answer
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        if token in stop_ids:
            break
        answer.append(token)
        if len(answer) == new_tokens:
            break
    return answer


def common_prefix(a: list[int], b: list[int]) -> int:
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same


def f32_tolerance(facts: Gguf, reference: Reference) -> float:
    """The largest logit difference allowed of an f32 file: f32's rounding, or where llama.cpp looks its GELU up
    in f16, that rounding's share of the largest logit."""
    if facts.gelu_f16_table:
        return max(F32_TOLERANCE, GELU_TABLE_TOLERANCE * float(np.abs(reference.logits).max()))
    return F32_TOLERANCE


def judge(figures: dict[str, Any], quant: str, reference: Reference) -> str:
    """The one-line verdict; a StudioError when the file does not behave like the trained model."""
    problems = []
    if figures["mismatched_probes"]:
        text, ids = next(iter(figures["mismatched_probes"].items()))
        problems.append(f"llama.cpp tokenizes {text!r} as {ids}, the studio as {reference.probe_ids[text][:16]}")
    if quant == "f32" and not figures["max_logit_diff"] <= figures["max_logit_diff_allowed"]:
        allowed = figures["max_logit_diff_allowed"]
        problems.append(f"logits differ by {figures['max_logit_diff']:.2e} (allowed {allowed:.1e})")
    if figures["top1_agreement_clear"] < REQUIRED_TOP1[quant]:
        problems.append(
            f"the top token agrees on {figures['top1_agreement_clear']:.1%} of positions that are not near-ties "
            f"(at least {REQUIRED_TOP1[quant]:.0%} asked of {quant})"
        )
    if quant in GREEDY_MUST_MATCH and not figures["greedy_equal"]:
        problems.append(f"greedy text departs from the studio's after {figures['greedy_equal_tokens']} tokens")
    chat_stops = figures.get("chat_finish_reason") == "stop"
    if reference.chat_stopped and not chat_stops and quant != "q4_k_m":
        problems.append("llama.cpp's chat completion does not stop at the end of the turn where the studio's does")
    if problems:
        raise StudioError(f"GGUF check failed ({quant}): {problems[0]}; the file was not kept")
    line = (
        f"verified by llama.cpp {figures['llama_cpp']} ({quant}): token ids equal on {figures['probes']} probes; "
        f"top-1 {figures['top1_agreement_clear']:.1%} ({figures['top1_agreement']:.1%} with "
        f"{figures['near_ties']} near-ties), max |Δlogit| {figures['max_logit_diff']:.2e} on "
        f"{figures['logit_positions']} positions; greedy {figures['greedy_equal_tokens']}/{figures['greedy_tokens']}"
        " tokens equal"
    )
    if "chat_finish_reason" in figures:
        line += "; chat stops at end of turn" if chat_stops else "; chat does not stop (nor does the studio's)"
    return line
