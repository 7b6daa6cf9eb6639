"""Quality: nanoGPT's CPU example (the `nanogpt-cpu` preset) on tiny Shakespeare, character level, 90/10 split.

Trains the preset's 2000 iterations (lr 1e-3 cosine to 1e-4, warmup 100, AdamW beta2 0.99, weight decay 0.1,
clip 1.0) through the real CLI and prints the validation curve. nanoGPT's own loop reaches 1.89 on these
machines; the target is a final validation loss of at most 1.93.

    python benchmarks/shakespeare_quality.py [--text ../shared/data/tinyshakespeare.txt] [--steps 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.run_folder.events import read_events  # noqa: E402

DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.93


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llm-studio-quality-"))
    env = dict(os.environ, LLM_STUDIO_HOME=str(home), PYTHONPATH=str(ROOT))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "studio.cli",
            "train",
            "--preset",
            "nanogpt-cpu",
            "--data",
            str(args.text),
            "--name",
            "shakespeare",
            "--max-steps",
            str(args.steps),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    events = read_events(home / "runs" / "shakespeare" / "events.jsonl")
    print(f"{'step':>6} {'train loss':>10} {'val loss':>9} {'val acc':>8}")
    train_loss = {e["step"]: e["loss"] for e in events if e["kind"] == "train"}
    for event in (e for e in events if e["kind"] == "eval"):
        loss = train_loss.get(event["step"])
        print(
            f"{event['step']:>6} {'-' if loss is None else f'{loss:.4f}':>10} {event['val_loss']:>9.4f} "
            f"{100 * event['val_acc']:>7.1f}%"
        )
    final = [e for e in events if e["kind"] == "eval"][-1]["val_loss"]
    speed = [e["tokens_per_s"] for e in events if e["kind"] == "train"]
    print(
        f"final val loss {final:.4f} (target <= {TARGET}: {'met' if final <= TARGET else 'NOT met'}); "
        f"median {sorted(speed)[len(speed) // 2]:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
