"""Fine-tuning a Hugging Face model: the studio's trainer against a plain transformers loop, on the same batches.

The setting of issue 21: a tiny random Qwen2 (tied embeddings) fully fine-tuned on Python code (25 files of this
Python's standard library), batch 16 x 128, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices only, lr 3e-3
cosine to 2e-4 without warmup, gradient clipping 1.0. The studio prepares the text with the model's tokenizer;
the plain loop then trains a fresh copy of the same checkpoint on exactly the windows the studio's trainer draws
(the same data generator, seeded alike), as anyone would write it: `model(input_ids).logits`, mean
cross-entropy, `clip_grad_norm_`, `optimizer.step()`. Both are scored by transformers on the same 64 fixed
windows of the held-out split; the studio's model is scored from its export (`llm-studio export`), as a user
would read it.

    python benchmarks/hf_parity.py [--steps 60] [--every 20]

Prints each side's training loss per step where they first differ, and the held-out loss every `--every` steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.config import set_field  # noqa: E402
from studio.data.batches import TokenFile, sample_batch  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.train.trainer import Trainer  # noqa: E402

FILES, BATCH, CONTEXT, SCORED_WINDOWS = 25, 16, 128, 64
LR, MIN_LR, BETAS, WEIGHT_DECAY, CLIP, SEED = 3e-3, 2e-4, (0.9, 0.99), 0.1, 1.0, 1337


def code_corpus(out: Path) -> Path:
    """25 mid-sized modules of the standard library, one after the other."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted(p for p in stdlib.glob("*.py") if 20_000 < p.stat().st_size < 60_000)[:FILES]
    out.write_text("\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in modules), encoding="utf-8")
    return out


def tiny_qwen2(folder: Path, text: Path) -> None:
    """A random Qwen2 with tied embeddings and a byte-level BPE of 1024 tokens trained on the corpus."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
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


def scored_windows(val: TokenFile) -> tuple[torch.Tensor, torch.Tensor]:
    return sample_batch(val, SCORED_WINDOWS, CONTEXT, torch.Generator().manual_seed(0))


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
        text, folder = code_corpus(scratch / "code.py.txt"), scratch / "qwen2"
        tiny_qwen2(folder, text)
        trainer = studio_trainer(folder, text, args.steps)
        train = TokenFile(trainer.dataset.bin_path("train"), trainer.dataset.dtype)
        windows = scored_windows(TokenFile(trainer.dataset.bin_path("val"), trainer.dataset.dtype))

        plain = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
        params = [p for p in plain.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
        generator = torch.Generator().manual_seed(SEED)  # the studio's data generator, seeded as the trainer seeds it

        print(f"step 0: held-out plain {held_out_loss(plain, windows):.4f}")
        first_difference = None
        for step in range(args.steps):
            studio_loss = trainer.train_step(log=False)
            studio_loss = (studio_loss.loss_sums[0] / studio_loss.learned).item()
            trainer.state.step += 1
            x, y = sample_batch(train, BATCH, CONTEXT, generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args.steps)
            loss = F.cross_entropy(plain(input_ids=x).logits.flatten(0, 1), y.flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain.parameters(), CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if first_difference is None and abs(loss.item() - studio_loss) > 1e-4:
                first_difference = step
                print(f"step {step}: training losses first differ: plain {loss.item():.6f}, studio {studio_loss:.6f}")
            if (step + 1) % args.every == 0 or step + 1 == args.steps:
                studio_score = held_out_loss(trainer.run_model.inner, windows)
                plain_score = held_out_loss(plain, windows)
                print(f"step {step + 1}: held-out plain {plain_score:.4f}, studio {studio_score:.4f}")
        trainer.save_checkpoint()
        exported = scratch / "exported"
        assert studio_cli(["export", "parity", "--out", str(exported)]) == 0
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
        print(f"exported studio model, held-out {held_out_loss(reloaded, windows):.4f}")
        if first_difference is None:
            print(f"training losses equal to 1e-4 over all {args.steps} steps")


if __name__ == "__main__":
    main()
