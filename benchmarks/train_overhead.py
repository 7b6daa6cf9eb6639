"""Time per iteration: llm-studio's trainer against a bare PyTorch loop, same model, batch and optimizer.

The model is nanoGPT's CPU example (the `nanogpt-cpu` preset: gpt2-style, 4 layers, 4 heads, 128 wide,
context 64, batch 12, character level, no dropout) on tiny Shakespeare. Both loops run in this process,
in alternating rounds, so that load from elsewhere on the machine hits both alike; the figure is the
median time per iteration of each and their ratio. On a GPU (--device cuda) both run eager in the precision the
trainer chooses there (bf16 autocast), the bare loop copying its batches as nanoGPT does (pinned, non_blocking);
a model this small is bound by the host, so the ratio shows what the trainer's bookkeeping costs per step.

    python benchmarks/train_overhead.py [--text ../shared/data/tinyshakespeare.txt] [--rounds 7] [--iters 50]
                                        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.launch import prepare_run  # noqa: E402
from studio.model import build_model, param_groups  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.train.worker import Trainer  # noqa: E402

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def bare_loop(config, train_bin: Path, dtype: str, device: torch.device, precision: str):
    """nanoGPT's train.py reduced to its loop: get_batch from a memmap, forward, backward, clip, step."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    train = config.train
    optimizer = torch.optim.AdamW(
        param_groups(model, train.weight_decay), lr=train.lr, betas=(train.beta1, train.beta2), fused=True
    )
    block, batch = config.model.block_size, train.batch_size

    def get_batch():
        data = np.memmap(train_bin, dtype=dtype, mode="r")
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y

    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step():
        x, y = get_batch()
        with torch.autocast(device.type, autocast) if autocast else contextlib.nullcontext():
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def studio_loop(trainer: Trainer):
    """The trainer's own step, plus the per-step bookkeeping its loop does (stop and checkpoint polls)."""

    def step():
        result = trainer.train_step(log=False)
        trainer.state.step += 1
        trainer.poll_requests()
        return result.loss_sums[0]

    return step


def time_per_iter(step, iters: int) -> float:
    started = time.perf_counter()
    for _ in range(iters):
        loss = step().detach()
    loss.item()
    return (time.perf_counter() - started) / iters


def compare(text: Path | None, rounds: int, iters: int) -> None:
    """Print the median time per iteration of both loops on the trainer's device, and their ratio. Without tiny
    Shakespeare (a machine without ../shared) the built-in corpus stands in."""
    os.environ.setdefault("LLM_STUDIO_HOME", tempfile.mkdtemp(prefix="llm-studio-bench-"))
    config = load_preset("nanogpt-cpu")
    config.data.source = str(text) if text else "python-stdlib"
    config.train.sample_interval = 0
    config.train.compile = "false"  # eager against eager
    trainer = Trainer(prepare_run(config, "overhead"))
    dataset_dir = Path(os.environ["LLM_STUDIO_HOME"]) / "datasets" / trainer.config.data.dataset
    device = trainer.accelerator.device
    bare = bare_loop(trainer.config, dataset_dir / "train.bin", trainer.dataset.dtype, device, trainer.fast.precision)
    studio = studio_loop(trainer)

    for step in (bare, studio):  # warm up both
        time_per_iter(step, 10)
    bare_times, studio_times = [], []
    for _ in range(rounds):
        bare_times.append(time_per_iter(bare, iters))
        studio_times.append(time_per_iter(studio, iters))
    bare_ms, studio_ms = 1000 * statistics.median(bare_times), 1000 * statistics.median(studio_times)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads {torch.get_num_threads()}"
    print(f"{where}, {trainer.fast.precision}, {rounds} rounds x {iters} iterations, median per iteration:")
    print(f"  bare PyTorch loop   {bare_ms:7.2f} ms")
    print(f"  llm-studio trainer  {studio_ms:7.2f} ms")
    print(f"  ratio studio/bare   {studio_ms / bare_ms:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT if DEFAULT_TEXT.exists() else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer takes the GPU whenever there is one
    compare(args.text, args.rounds, args.iters)


if __name__ == "__main__":
    main()
