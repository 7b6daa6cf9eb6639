"""Time per iteration: llm-studio's trainer against a bare PyTorch loop, same model, batch and optimizer.

The model is nanoGPT's CPU example (the `nanogpt-cpu` preset: gpt2-style, 4 layers, 4 heads, 128 wide,
context 64, batch 12, character level, no dropout) on tiny Shakespeare. Both loops run in this process,
in alternating rounds, so that load from elsewhere on the machine hits both alike; the figure is the
median time per iteration of each and their ratio. The loops and the timing are `studio.reports.bench`'s (`llm-studio
bench` measures the same on a generated corpus). On a GPU (--device cuda) both run eager in the precision the
trainer chooses there (bf16 autocast), the bare loop copying its batches as nanoGPT does (pinned, non_blocking);
a model this small is bound by the host, so the ratio shows what the trainer's bookkeeping costs per step.

    python benchmarks/train_overhead.py [--text ../shared/data/tinyshakespeare.txt] [--rounds 7] [--iters 50]
                                        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.data.prepare import open_dataset  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.reports.bench import alternate_rounds, bare_step, studio_step  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.train.trainer import Trainer  # noqa: E402

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def compare(text: Path | None, rounds: int, iters: int) -> None:
    """Print the median time per iteration of both loops on the trainer's device, and their ratio. Without tiny
    Shakespeare (a machine without ../shared) the built-in corpus stands in."""
    os.environ.setdefault("LLM_STUDIO_HOME", tempfile.mkdtemp(prefix="llm-studio-bench-"))
    config = load_preset("nanogpt-cpu")
    config.data.source = str(text) if text else "python-stdlib"
    config.train.sample_interval = 0
    config.train.compile = "false"  # eager against eager
    trainer = Trainer(prepare_run(config, "overhead"))
    dataset = open_dataset(trainer.config.data.dataset)
    device, precision = trainer.accelerator.device, trainer.fast.precision
    bare = bare_step(trainer.config, dataset.bin_path("train"), dataset.dtype, device, precision)
    bare_s, studio_s = alternate_rounds([bare, studio_step(trainer)], 10, iters, rounds)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads {torch.get_num_threads()}"
    print(f"{where}, {precision}, {rounds} rounds x {iters} iterations, median per iteration:")
    print(f"  bare PyTorch loop   {1000 * bare_s:7.2f} ms")
    print(f"  llm-studio trainer  {1000 * studio_s:7.2f} ms")
    print(f"  ratio studio/bare   {studio_s / bare_s:7.3f}")


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
