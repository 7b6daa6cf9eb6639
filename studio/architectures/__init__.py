"""The studio's own architectures as data (litgpt's "architecture variation as data"): one `Architecture` per
`model.arch`, each filled in by its facts module (llama.py, gpt2.py, recurrent.py, bert.py), from which the rest of
the engine reads what differs between them instead of asking which one it is: the torch module that builds it
(studio.model), its sizes (studio.sizing.sizes), its flags (studio.config), and how it leaves as a Hugging Face
folder (studio.model.weights, studio.export.huggingface).

Torch-free, like everything the UI imports. A Hugging Face model (`model.arch = "hf"`) is none of these:
transformers builds it and says what it is (studio.hf).
"""

from __future__ import annotations

from studio.architectures.base import Architecture, Gguf
from studio.architectures.bert import BERT
from studio.architectures.gpt2 import GPT2
from studio.architectures.llama import LLAMA
from studio.architectures.recurrent import LSTM, RNN
from studio.errors import StudioError

ARCHITECTURES: dict[str, Architecture] = {facts.name: facts for facts in (LLAMA, GPT2, LSTM, RNN, BERT)}

# The Hugging Face families whose runs leave as GGUF, by config.json's model_type. llama.cpp runs Mistral as a
# Llama (its converter does too); Qwen2 and Qwen3 rotate halves as Hugging Face does, so nothing is permuted.
GGUF_FAMILIES: dict[str, Gguf] = {
    "llama": LLAMA.gguf,
    "mistral": LLAMA.gguf,
    "gpt2": GPT2.gguf,
    "qwen2": Gguf("qwen2"),
    "qwen3": Gguf("qwen3"),
    "phi3": Gguf("phi3"),  # its fused qkv_proj and gate_up_proj are llama.cpp's attn_qkv and ffn_up as they are
    "gemma3_text": Gguf("gemma3", sliding_window=True, norm_shift=1.0, gelu_f16_table=True),
}


def architecture(name: str) -> Architecture:
    """The facts of the studio's architecture `name` (model.arch)."""
    if name not in ARCHITECTURES:
        raise StudioError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, not {name!r}")
    return ARCHITECTURES[name]
