"""Export targets: a run as a Hugging Face folder (huggingface)."""
