"""DP-SGD's cost: seconds per step of a private run (Opacus's per-example gradients, clipping and noise, Poisson
batches) against the same run without privacy, on the studio's `small` preset (12M parameters, full training on
plain text) and on a tiny Hugging Face Llama with LoRA (tests/hf_models.py's, on chat-free text).

Each case trains its plain and its private run in turn, `--rounds` times, in this process (the trainer's own loop,
as `llm-studio train` runs it, without the process start). Seconds per step come from each run's train events
(one per step): the tokens a step read over its tokens per second, the first `--warmup` steps left out and a step
whose Poisson draw was empty too; a private batch holds train.batch_size examples on average, so the figures
compare like with like on average. The ratio is the median private step over the median plain one. Timings are
printed, never asserted. One thread by default: on a busy shared machine two threads wait on each other.

    python benchmarks/privacy_cost.py [--steps 8] [--warmup 2] [--rounds 2] [--batch 8] [--threads 1]

On this project's 2-core CPU, shared (load average about 12), 2026-12-05, `--steps 6 --rounds 2`, noise 1.0:
the small preset (full, context 256) 6.41 s plain, 10.20 s private per step (1.59x); the tiny Llama with LoRA
(context 128) 0.089 s plain, 0.102 s private (1.14x).
"""

from __future__ import annotations

import argparse
import json
import json.decoder
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def seconds_per_step(run_dir: Path, warmup: int) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    train = [event for event in events if event["kind"] == "train"]
    seconds, seen = [], 0
    for event in train:
        tokens, seen = event["tokens_seen"] - seen, event["tokens_seen"]
        if event["step"] > warmup and tokens:
            seconds.append(tokens / event["tokens_per_s"])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="privacy-cost-"))
    os.environ["LLM_STUDIO_HOME"] = str(home)
    warnings.filterwarnings("ignore")

    import torch

    from studio.config import set_field
    from studio.presets import load_preset
    from studio.runs.prepare import prepare_run
    from studio.train.trainer import Trainer
    from tests.hf_models import make_hf_model

    torch.set_num_threads(args.threads)
    folder = home / "tiny-llama"
    make_hf_model(folder, "llama")
    corpus = home / "corpus.txt"  # about 300 KB of Python: a few standard-library modules
    corpus.write_text(
        "\n\n".join(Path(module.__file__).read_text() for module in (argparse, json.decoder, os, tempfile))
    )
    common = {"data.source": str(corpus), "train.max_steps": args.steps + args.warmup, "train.batch_size": args.batch,
              "train.log_interval": 1, "train.eval_interval": 10_000, "train.sample_interval": 0,
              "train.checkpoint_interval": 10_000, "train.warmup_steps": 0}  # fmt: skip
    cases = {
        "small preset, full, plain text": ("small", {}),
        "tiny HF Llama, LoRA": ("tiny", {"train.init_from": str(folder), "train.method": "lora"}),
    }
    private = {"train.privacy_noise_multiplier": 1.0}
    print(f"seconds per step, median of {args.steps} steps x {args.rounds} rounds, batch {args.batch} "
          f"(private: {args.batch} on average), {args.threads} thread(s)")  # fmt: skip
    for case, (preset, changes) in cases.items():
        timings: dict[str, list[float]] = {"plain": [], "private": []}
        for round_ in range(args.rounds):
            for kind in timings:
                config = load_preset(preset)
                for key, value in {**common, **changes, **(private if kind == "private" else {})}.items():
                    set_field(config, key, value)
                run_dir = prepare_run(config, f"{preset}-{kind}-{round_}")
                Trainer(run_dir).run()
                timings[kind] += seconds_per_step(run_dir, args.warmup)
        plain, dp = statistics.median(timings["plain"]), statistics.median(timings["private"])
        print(f"{case:32} plain {plain:.3f} s   private {dp:.3f} s   ratio {dp / plain:.2f}")


if __name__ == "__main__":
    main()
