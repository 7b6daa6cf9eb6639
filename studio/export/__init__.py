"""Export targets: a run as a Hugging Face folder (huggingface), or a GGUF file for llama.cpp with an Ollama
Modelfile (gguf, ollama). Torch-free here: the studio's export dialog offers what the CLI takes."""

FORMATS = ("huggingface", "gguf")
GGUF_QUANTS = ("f16", "bf16", "q8_0", "q4_k_m", "f32")  # the first is the default
