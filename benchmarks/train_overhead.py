"""Time per iteration: llm-studio's trainer against a bare PyTorch loop, same model, batch and optimizer.

The model is nanoGPT's CPU example (the `nanogpt-cpu` preset: gpt2-style, 4 layers, 4 heads, 128 wide,
context 64, batch 12, character level, no dropout) on tiny Shakespeare. Both loops run in this process,
in alternating rounds, so that load from elsewhere on the machine hits both alike; the figure is the
median time per iteration of each and their ratio. The loops and the timing are `studio.bench`'s (`llm-studio
bench` measures the same on a generated corpus).

    python benchmarks/train_overhead.py [--text ../shared/data/tinyshakespeare.txt] [--rounds 7] [--iters 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.bench import alternate_rounds, bare_step, studio_step  # noqa: E402
from studio.data.prepare import open_dataset  # noqa: E402
from studio.launch import prepare_run  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.train.worker import Trainer  # noqa: E402

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


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
    trainer = Trainer(prepare_run(config, "bench"))
    dataset = open_dataset(trainer.config.data.dataset)
    bare = bare_step(trainer.config, dataset.bin_path("train"), dataset.dtype, trainer.accelerator.device)
    bare_s, studio_s = alternate_rounds([bare, studio_step(trainer)], 10, args.iters, args.rounds)
    print(f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.iters} iterations, median per iteration:")
    print(f"  bare PyTorch loop   {1000 * bare_s:7.2f} ms")
    print(f"  llm-studio trainer  {1000 * studio_s:7.2f} ms")
    print(f"  ratio studio/bare   {studio_s / bare_s:7.3f}")


if __name__ == "__main__":
    main()
