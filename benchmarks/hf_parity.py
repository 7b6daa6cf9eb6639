"""Fine-tuning a Hugging Face model: the studio, end to end, against a plain transformers loop.

The setting of issue 21: a tiny random Qwen2 (tied embeddings) fully fine-tuned on Python code (25 files of this
Python's standard library), batch 16 x 128, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices only, lr 3e-3
cosine to 2e-4 without warmup, gradient clipping 1.0. The folder's tokenizer.json has a plain ByteLevel
pre-tokenizer, which transformers replaces with Qwen2's own rules (Qwen2Tokenizer: digits one by one).

The studio prepares the corpus itself (`prepare_run`, the path of `llm-studio train --init-from`) and trains on
its dataset. The plain loop trains a fresh copy of the same checkpoint as anyone would write it: the corpus
tokenized by `AutoTokenizer`, random windows, `model(input_ids).logits`, mean cross-entropy, `clip_grad_norm_`,
`optimizer.step()`. Both are scored by transformers on the same 64 fixed windows of 5 other modules, tokenized
by `AutoTokenizer`; the studio's model at the end also from its export (`llm-studio export`), as a user would
read it.

    python benchmarks/hf_parity.py [--steps 60] [--every 20]

Prints whether the studio's training tokens are transformers', and the held-out loss every `--every` steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.config import set_field  # noqa: E402
from studio.data.batches import TokenFile, sample_batch  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.train.trainer import Trainer  # noqa: E402

FILES, HELD_OUT_FILES, BATCH, CONTEXT, SCORED_WINDOWS = 25, 5, 16, 128, 64
LR, MIN_LR, BETAS, WEIGHT_DECAY, CLIP, SEED = 3e-3, 2e-4, (0.9, 0.99), 0.1, 1.0, 1337


def code_corpus(out: Path, held_out: Path) -> Path:
    """25 mid-sized modules of the standard library, one after the other; the next 5 in `held_out`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted(p for p in stdlib.glob("*.py") if 20_000 < p.stat().st_size < 60_000)
    for path, chosen in ((out, modules[:FILES]), (held_out, modules[FILES : FILES + HELD_OUT_FILES])):
        text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in chosen)
        path.write_text(text, encoding="utf-8")
    return out


def transformers_tokens(folder: Path, text: Path, out: Path) -> TokenFile:
    """The text as transformers tokenizes it for this folder, as a token file."""
    import transformers

    ids = transformers.AutoTokenizer.from_pretrained(folder)(text.read_text(encoding="utf-8")).input_ids
    np.asarray(ids, dtype=np.uint16).tofile(out)
    return TokenFile(out, "uint16")


def tiny_qwen2(folder: Path, text: Path) -> None:
    """A random Qwen2 with tied embeddings and a byte-level BPE of 1024 tokens trained on the corpus."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<s>", "</s>", "<|endoftext|>"],  # as a real Qwen2's (else transformers adds it, id 1024)
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text.read_text(encoding="utf-8")], bpe)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    ).save_pretrained(folder)
    config = transformers.Qwen2Config(
        vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)


def lr_at(step: int, steps: int) -> float:
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * step / steps)) * (LR - MIN_LR)


def scored_windows(held_out: TokenFile) -> tuple[torch.Tensor, torch.Tensor]:
    return sample_batch(held_out, SCORED_WINDOWS, CONTEXT, torch.Generator().manual_seed(0))


def same_tokens(studio: TokenFile, plain: TokenFile) -> str:
    """How far the studio's training tokens are transformers' tokens of the same text (the first 10,000)."""
    ours, theirs = np.asarray(studio.ids[:10_000]), np.asarray(plain.ids[:10_000])
    differ = np.nonzero(ours != theirs)[0]
    return "equal" if not len(differ) else f"first differ at token {differ[0]}"


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, windows: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    logits = model(input_ids=windows[0]).logits
    model.train()
    return F.cross_entropy(logits.flatten(0, 1).float(), windows[1].flatten()).item()


def studio_trainer(folder: Path, text: Path, steps: int) -> Trainer:
    config = load_preset("finetune")
    config.data.source, config.train.init_from = str(text), str(folder)
    settings = {
        "model.block_size": CONTEXT, "train.batch_size": BATCH, "train.max_steps": steps, "train.lr": LR,
        "train.min_lr": MIN_LR, "train.warmup_steps": 0, "train.beta1": BETAS[0], "train.beta2": BETAS[1],
        "train.weight_decay": WEIGHT_DECAY, "train.grad_clip": CLIP, "train.seed": SEED, "train.sample_interval": 0,
    }  # fmt: skip
    for key, value in settings.items():
        set_field(config, key, value)
    return Trainer(prepare_run(config, "parity"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    import transformers

    from studio.cli.main import main as studio_cli

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["LLM_STUDIO_HOME"] = str(scratch / "home")
        text, held_out = code_corpus(scratch / "code.py.txt", scratch / "held-out.py.txt"), scratch / "held-out.py.txt"
        folder = scratch / "qwen2"
        tiny_qwen2(folder, text)
        trainer = studio_trainer(folder, text, args.steps)
        train = transformers_tokens(folder, text, scratch / "train.bin")
        windows = scored_windows(transformers_tokens(folder, held_out, scratch / "held-out.bin"))
        studio_train = TokenFile(trainer.dataset.bin_path("train"), trainer.dataset.dtype)
        print(f"the studio's training tokens and transformers': {same_tokens(studio_train, train)}")

        plain = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
        params = [p for p in plain.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
        generator = torch.Generator().manual_seed(SEED)

        print(f"step 0: held-out plain {held_out_loss(plain, windows):.4f}")
        for step in range(args.steps):
            trainer.train_step(log=False)
            trainer.state.step += 1
            x, y = sample_batch(train, BATCH, CONTEXT, generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args.steps)
            loss = F.cross_entropy(plain(input_ids=x).logits.flatten(0, 1), y.flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain.parameters(), CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % args.every == 0 or step + 1 == args.steps:
                studio_score = held_out_loss(trainer.run_model.inner, windows)
                plain_score = held_out_loss(plain, windows)
                print(f"step {step + 1}: held-out plain {plain_score:.4f}, studio {studio_score:.4f}")
        trainer.save_checkpoint()
        exported = scratch / "exported"
        assert studio_cli(["export", "parity", "--out", str(exported)]) == 0
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
        print(f"exported studio model, held-out {held_out_loss(reloaded, windows):.4f}")


if __name__ == "__main__":
    main()
