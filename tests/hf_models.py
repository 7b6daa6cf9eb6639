"""Tiny Hugging Face checkpoints built in the test from transformers' config classes: one per family the studio
is tested with, each with a small byte-level BPE tokenizer (and optionally a chat template). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n    y: int\n\n"
SPECIAL_TOKENS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHATML = (  # Qwen2.5's template without its default system prompt
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # pad == eos, as in many real checkpoints


def family_config(family: str, vocab: int = 320):
    """The config of a tiny model of the family: the trait the family is tested for is turned on."""
    import transformers

    common = {"vocab_size": vocab, "max_position_embeddings": 128, **IDS}
    if family == "llama":  # grouped-query attention
        return transformers.LlamaConfig(**SIZES, **common, num_key_value_heads=2, tie_word_embeddings=False)
    if family == "qwen2":  # biases on q, k, v
        return transformers.Qwen2Config(**SIZES, **common, num_key_value_heads=2, tie_word_embeddings=True)
    if family == "qwen3":  # RMSNorm on q and k
        return transformers.Qwen3Config(**SIZES, **common, num_key_value_heads=2, head_dim=16)
    if family == "gemma3":  # a sliding-window layer beside a global one, each kind with its rotary base
        return transformers.Gemma3TextConfig(
            **SIZES,
            **common,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=8,
            query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
        )
    if family == "mistral":
        return transformers.MistralConfig(**SIZES, **common, num_key_value_heads=2, sliding_window=16)
    if family == "phi3":  # fused qkv_proj and gate_up_proj
        return transformers.Phi3Config(**SIZES, **common, num_key_value_heads=4)
    if family == "gpt2":  # Conv1D layers, learned positions
        return transformers.GPT2Config(
            vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=1
        )
    raise ValueError(family)


FAMILIES = ("llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3", "gpt2")


def make_hf_model(
    folder: Path, family: str, chat_template: str | None = None, vocab: int = 320, corpus: str = TEXT
) -> torch.nn.Module:
    """A tiny model of the family saved in folder with save_pretrained, with its tokenizer (trained on `corpus`);
    returned in eval mode."""
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(family_config(family, vocab)).eval()
    model.save_pretrained(folder)
    save_tokenizer(folder, chat_template, corpus)
    return model


def save_tokenizer(folder: Path, chat_template: str | None = None, corpus: str = TEXT) -> int:
    """A small byte-level BPE trained here on `corpus`, saved the way transformers saves fast tokenizers (pad = eos);
    its pre-tokenizer is plain ByteLevel, whatever the family's tokenizer class would read it as."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([corpus * 20], trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return tokenizer.get_vocab_size()
