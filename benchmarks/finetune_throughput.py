"""Fine-tuning throughput: llm-studio's trainer against a plain transformers + peft loop, same model, batch and data.

The model is a Qwen2-shaped checkpoint, small or Qwen2.5-0.5B's shape (grouped-query attention, biases on q/k/v),
built with transformers' config class and saved as a Hugging Face folder, with a byte-level BPE trained on the text;
the data are random windows of tiny Shakespeare, the same windows for both loops (the same token file, the same
seeded generator).
Each loop runs in a child process of its own, so its peak memory is its own (the resident set's high-water mark
on a CPU; torch.cuda.max_memory_allocated on a GPU), in alternating rounds so that load from elsewhere on the
machine hits both alike. The figures are the median tokens per second of each, their ratio, and the peaks.

    python benchmarks/finetune_throughput.py [--method lora|full|dora] [--rounds 3] [--steps 20] [--device cpu|cuda]
                                          [--shape small|qwen2.5-0.5b]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.hardware import peak_resident_bytes  # noqa: E402

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
# The model shapes to time: a small one for CPUs, and Qwen2.5-0.5B's (random weights, its 151,936-token head) for GPUs.
SHAPES = {
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 2, "vocab_size": 2048},
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "vocab_size": 151936},
}  # fmt: skip
BATCH, CONTEXT, LR, WARMUP_STEPS = 8, 256, 1e-4, 3


def build_checkpoint(folder: Path, text: Path, shape: dict, context: int = CONTEXT) -> None:
    """The Hugging Face folder both loops start from (the tokenizer's 2,048 tokens are the head's first rows)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([text.read_text(encoding="utf-8")], trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(folder)
    config = transformers.Qwen2Config(**shape, max_position_embeddings=context, eos_token_id=0)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)


def prepare(
    home: Path, folder: Path, text: Path, method: str, device: str, batch: int = BATCH, context: int = CONTEXT
) -> Path:
    """The studio's run folder (its dataset: the text encoded with the checkpoint's tokenizer)."""
    from studio.config import RunConfig
    from studio.runs.prepare import prepare_run

    os.environ["LLM_STUDIO_HOME"] = str(home)
    config = RunConfig()
    config.data.source = str(text)
    config.model.block_size = context
    train = config.train
    train.init_from, train.method, train.batch_size, train.lr = str(folder), method, batch, LR
    train.grad_clip, train.sample_interval, train.weight_decay = 1.0, 0, 0.0
    train.mixed_precision = "bf16" if device == "cuda" else "no"
    return prepare_run(config, f"bench-{method}-{context}")


# ---- the two loops, each run in a child process ------------------------------------------------------------
def studio_steps(run_dir: Path):
    """The trainer's own step (with its per-step bookkeeping): returns a function doing one step."""
    from studio.train.trainer import Trainer

    trainer = Trainer(run_dir)

    def step() -> int:
        result = trainer.train_step(log=False)
        trainer.state.step += 1
        trainer.poll_requests()
        return result.tokens

    return step, trainer.accelerator.device


def plain_steps(run_dir: Path):
    """What people write by hand: AutoModelForCausalLM, peft's get_peft_model, AdamW, autocast, clip, step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.data.batches import TokenFile, sample_batch
    from studio.data.prepare import open_dataset
    from studio.run_folder.layout import read_config

    config = read_config(run_dir)
    train = config.train
    device = torch.device("cuda" if train.mixed_precision == "bf16" else "cpu")
    torch.manual_seed(train.seed)
    model = AutoModelForCausalLM.from_pretrained(train.init_from, dtype=torch.float32).to(device)
    if train.method != "full":
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoraConfig(
            r=train.lora_rank,
            lora_alpha=train.lora_alpha,
            lora_dropout=train.lora_dropout,
            target_modules=targets,
            use_dora=train.method == "dora",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, betas=(train.beta1, train.beta2), weight_decay=0.0)
    dataset = open_dataset(config.data.dataset)
    tokens = TokenFile(dataset.bin_path("train"), dataset.dtype)
    generator = torch.Generator().manual_seed(train.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> int:
        x, y = sample_batch(tokens, train.batch_size, config.model.block_size, generator)
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return x.numel()

    return step, device


def child(loop: str, run_dir: Path, steps: int, warmup: int = WARMUP_STEPS) -> None:
    """One measurement: `warmup` steps, then `steps` timed ones; prints tokens/s and the peak memory as JSON (on a
    CPU the process's VmHWM: getrusage's ru_maxrss would carry its parent's over fork and exec)."""
    import torch

    step, device = (studio_steps if loop == "studio" else plain_steps)(run_dir)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_resident_bytes()
    print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - started), "peak_bytes": peak}))


def measure(loop: str, run_dir: Path, steps: int, warmup: int = WARMUP_STEPS) -> dict:
    """`child` in a process of its own (its peak memory is its own), through this script's --child."""
    command = [sys.executable, __file__, "--child", loop, "--run-dir", str(run_dir), "--steps", str(steps),
               "--warmup", str(warmup)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if output.returncode != 0:
        raise SystemExit(f"{loop} loop failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--method", default="lora", choices=["full", "lora", "dora"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--child", choices=["studio", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.run_dir, args.steps, args.warmup)
        return
    work = Path(tempfile.mkdtemp(prefix="llm-studio-finetune-bench-"))
    shape = SHAPES[args.shape]
    build_checkpoint(work / "checkpoint", args.text, shape)
    run_dir = prepare(work / "home", work / "checkpoint", args.text, args.method, args.device)
    results: dict[str, list[dict]] = {"plain": [], "studio": []}
    for _ in range(args.rounds):
        for loop in results:
            results[loop].append(measure(loop, run_dir, args.steps))
    print(
        f"{args.method} on {args.device}, Qwen2-shaped {shape['num_hidden_layers']} layers x {shape['hidden_size']}, "
        f"vocabulary {shape['vocab_size']:,}, "
        f"batch {BATCH} x context {CONTEXT}, {args.rounds} rounds x {args.steps} steps (medians):"
    )
    rates = {loop: statistics.median(r["tokens_per_s"] for r in runs) for loop, runs in results.items()}
    peaks = {loop: statistics.median(r["peak_bytes"] for r in runs) for loop, runs in results.items()}
    for loop, label in (("plain", "transformers + peft loop"), ("studio", "llm-studio trainer")):
        print(f"  {label:26} {rates[loop]:9.0f} tokens/s   peak {peaks[loop] / 2**20:8.1f} MiB")
    print(f"  ratio studio/plain         {rates['studio'] / rates['plain']:9.3f} (tokens/s)   "
          f"{peaks['studio'] / peaks['plain']:.3f} (peak memory)")  # fmt: skip


if __name__ == "__main__":
    main()
