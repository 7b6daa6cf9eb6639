"""The trainer's speed and memory on a device: tokens/s, MFU and peak memory against the estimate, compiled and not,
for each decoder preset that fits; then the trainer's overhead over a bare PyTorch loop (train_overhead.py).

Each preset trains in this process through the trainer's own step (`Trainer.train_step`) on the built-in corpus
(or --text), with its model, context and batch and the fast path the device gets by default (on a CUDA GPU: bf16
autocast, TF32, fused AdamW, flash attention through SDPA, pinned batches); only the accumulation is cut
(--grad-accum) so that a step takes seconds. Each configuration is warmed up (compiling, when compiled), then
--steps optimizer steps are timed between two waits for the device. A preset whose estimated memory exceeds the
device's free memory is skipped, said in one line.

    python benchmarks/gpu_train.py --device cuda [--presets gpt2-124m,llama-1b] [--steps 10] [--grad-accum 4]
                                   [--checkpointing] [--no-overhead]
    python benchmarks/gpu_train.py --device cpu --presets tiny   # the same figures on a CPU (MFU: measured peak)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.formatting import format_bytes  # noqa: E402
from studio.presets import load_preset, preset_names, preset_vocab  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.sizing.sizes import estimate_train_memory  # noqa: E402
from studio.train.trainer import Trainer, wait_for_device  # noqa: E402

DECODER_PRESETS = ("tiny", "small", "gpt2-124m", "llama-350m", "llama-1b")


def prepared_run(preset: str, name: str, args: argparse.Namespace, changes: dict[str, object]) -> Path:
    """A run folder of the preset on the benchmark's corpus, with the benchmark's accumulation and `changes`."""
    config = load_preset(preset)
    config.data.source = str(args.text) if args.text else "python-stdlib"
    config.train.grad_accum = args.grad_accum
    config.train.sample_interval = 0
    for key, value in changes.items():
        setattr(config.train, key, value)
    return prepare_run(config, name)


def measure(run_dir: Path, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Warm-up seconds (compiling included), tokens/s, MFU and peak memory of `steps` optimizer steps."""
    trainer = Trainer(run_dir)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(log=False)
    wait_for_device(device)
    warmed = time.perf_counter()
    tokens = 0
    for _ in range(steps):
        tokens += trainer.train_step(log=False).tokens
        trainer.state.step += 1
    wait_for_device(device)
    seconds = time.perf_counter() - warmed
    tokens_per_s = tokens / seconds
    result = {
        "warmup_s": warmed - started,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * trainer.flops_per_token / trainer.peak_flops if trainer.peak_flops else float("nan"),
        "peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan"),
        "estimate": estimate_train_memory(trainer.config.model, trainer.config.train)["total"],
        "precision": trainer.fast.precision,
        "compiled": trainer.trained_model is not trainer.prepared_model,
    }
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def fits(preset: str, device: torch.device, args: argparse.Namespace) -> str | None:
    """Why the preset cannot train here (its estimate over the free memory), or None."""
    if device.type != "cuda":
        return None
    config = load_preset(preset)
    config.train.grad_accum = args.grad_accum
    config.train.activation_checkpointing = args.checkpointing
    needed = estimate_train_memory(config.model, config.train, preset_vocab(config))
    free, _ = torch.cuda.mem_get_info(device)
    if needed["total"] > free:
        return f"estimated {format_bytes(needed['total'])} > {format_bytes(free)} free"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--presets", default=",".join(DECODER_PRESETS), help="comma-separated decoder presets")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps timed per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="optimizer steps before timing (compiling happens here)")
    parser.add_argument("--grad-accum", type=int, default=4, help="micro-steps per optimizer step (presets have more)")
    parser.add_argument("--checkpointing", action="store_true", help="with train.activation_checkpointing on too")
    parser.add_argument("--text", type=Path, help="a corpus to prepare instead of the built-in python-stdlib")
    parser.add_argument("--no-overhead", action="store_true", help="skip the bare-loop comparison")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer takes the GPU whenever there is one
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    os.environ["LLM_STUDIO_HOME"] = tempfile.mkdtemp(prefix="llm-studio-gpu-bench-")
    device = torch.device(args.device)
    known = set(preset_names())
    presets = [name for name in args.presets.split(",") if name]
    unknown = [name for name in presets if name not in known]
    if unknown:
        parser.error(f"unknown presets {unknown}; known: {sorted(known)}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}; {args.steps} steps after {args.warmup}, grad_accum {args.grad_accum}")
    columns = ("preset", 12), ("variant", 22), ("prec", 5), ("warmup", -8), ("tokens/s", -11), ("MFU", -7)
    columns += ("peak", -10), ("estimate", -10)
    print(" ".join(f"{title:<{width}}" if width > 0 else f"{title:>{-width}}" for title, width in columns))
    variants = {"eager": {"compile": "false"}, "compiled": {"compile": "true"}}
    if args.checkpointing:
        variants["compiled + act. ckpt"] = {"compile": "true", "activation_checkpointing": True}
    for preset in presets:
        reason = fits(preset, device, args)
        if reason:
            print(f"{preset:<12} skipped: {reason}")
            continue
        for variant, changes in variants.items():
            run_dir = prepared_run(preset, f"{preset}-{variant.replace(' ', '').replace('+', '-')}", args, changes)
            try:
                r = measure(run_dir, device, args.steps, args.warmup)
            except torch.cuda.OutOfMemoryError:
                print(f"{preset:<12} {variant:<22} out of memory")
                gc.collect()
                torch.cuda.empty_cache()
                continue
            shown = variant if r["compiled"] or variant == "eager" else f"{variant} (fell back)"
            peak = format_bytes(r["peak"]) if r["peak"] == r["peak"] else "-"
            print(
                f"{preset:<12} {shown:<22} {r['precision']:<5} {r['warmup_s']:7.1f}s {r['tokens_per_s']:11,.0f} "
                f"{100 * r['mfu']:6.1f}% {peak:>10} {format_bytes(r['estimate']):>10}",
                flush=True,
            )
    if not args.no_overhead:
        from train_overhead import compare  # this script's folder

        print("\nthe trainer against a bare PyTorch loop (the nanogpt-cpu model, eager, the same precision):")
        compare(args.text, rounds=5, iters=50)


if __name__ == "__main__":
    main()
