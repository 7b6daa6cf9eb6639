"""Time per iteration: llm-studio's trainer against a bare PyTorch loop, same model, batch and optimizer.

The model is nanoGPT's CPU example (the `nanogpt-cpu` preset: gpt2-style, 4 layers, 4 heads, 128 wide,
context 64, batch 12, character level, no dropout) on tiny Shakespeare. Both loops run in this process,
in alternating rounds, so that load from elsewhere on the machine hits both alike; the figure is the
median time per iteration of each and their ratio.

    python benchmarks/train_overhead.py [--text ../shared/data/tinyshakespeare.txt] [--rounds 7] [--iters 50]
"""

from __future__ import annotations

import argparse
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


def bare_loop(config, train_bin: Path, dtype: str):
    """nanoGPT's train.py reduced to its loop: get_batch from a memmap, forward, backward, clip, step."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
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
        return x, y

    def step():
        x, y = get_batch()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    os.environ["LLM_STUDIO_HOME"] = tempfile.mkdtemp(prefix="llm-studio-bench-")

    config = load_preset("nanogpt-cpu")
    config.data.source = str(args.text)
    config.train.sample_interval = 0
    run_dir = prepare_run(config, "bench")
    trainer = Trainer(run_dir)
    dataset_dir = Path(os.environ["LLM_STUDIO_HOME"]) / "datasets" / trainer.config.data.dataset
    bare = bare_loop(trainer.config, dataset_dir / "train.bin", trainer.dataset.dtype)
    studio = studio_loop(trainer)

    for step in (bare, studio):  # warm up both
        time_per_iter(step, 10)
    bare_times, studio_times = [], []
    for _ in range(args.rounds):
        bare_times.append(time_per_iter(bare, args.iters))
        studio_times.append(time_per_iter(studio, args.iters))
    bare_ms, studio_ms = 1000 * statistics.median(bare_times), 1000 * statistics.median(studio_times)
    print(f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.iters} iterations, median per iteration:")
    print(f"  bare PyTorch loop   {bare_ms:7.2f} ms")
    print(f"  llm-studio trainer  {studio_ms:7.2f} ms")
    print(f"  ratio studio/bare   {studio_ms / bare_ms:7.3f}")


if __name__ == "__main__":
    main()
