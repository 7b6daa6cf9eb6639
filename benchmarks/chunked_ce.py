"""Fine-tuning a real-sized vocabulary on a CPU: the studio's trainer (its loss read from the output head a chunk of
tokens at a time, train.chunked_loss) against a plain transformers + peft loop (whole logits, as people write it).

Cases: LoRA on a Qwen2.5-0.5B-shaped model (24 layers, 896 wide, 14 heads over 2, MLP 4864, 151,936 tokens, tied
head: its config with random weights) and full fine-tuning of a smaller shape with the same vocabulary, each at
context 1024 and 2048, batch 1. Both loops read the same windows of the same token file (finetune_throughput.py's
loops: the same seeded generator) and train with the same optimizer, clipping and precision (fp32 on a CPU). Each
measurement is a child process of its own, so its peak resident set (VmHWM, read at its end) is its own; the two
loops take turns, case by case, so load from elsewhere on the machine hits both alike.

    python benchmarks/chunked_ce.py [--steps 2] [--warmup 1] [--rounds 1] [--cases lora-0.5b,full-small]
                                    [--contexts 1024,2048] [--json FILE] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# its sibling script, by the folder a script runs from (not `benchmarks.`: Opacus installs a package of that name)
from finetune_throughput import DEFAULT_TEXT, build_checkpoint, measure, prepare  # noqa: E402

VOCAB = 151_936
SHAPES = {  # Qwen2Config fields; both tie the head to the embedding, as Qwen2.5-0.5B does
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2},
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 2},
}  # fmt: skip
CASES = {"lora-0.5b": ("lora", "0.5b"), "full-small": ("full", "small")}
LOOPS = {"plain": "transformers + peft loop", "studio": "llm-studio trainer"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--contexts", default="1024,2048")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work", type=Path, help="the folder of the checkpoints and runs (kept; reused when given)")
    args = parser.parse_args()
    contexts = [int(context) for context in args.contexts.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="llm-studio-chunked-ce-"))
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))  # this invocation's runs: a reused folder's names are taken
    rows = []
    for case in args.cases.split(","):
        method, shape_name = CASES[case]
        folder = work / shape_name
        if not folder.exists():
            shape = {**SHAPES[shape_name], "vocab_size": VOCAB, "tie_word_embeddings": True}
            build_checkpoint(folder, args.text, shape, context=max(contexts))
        for context in contexts:
            run_dir = prepare(home, folder, args.text, method, "cpu", batch=1, context=context)
            results: dict[str, list[dict]] = {loop: [] for loop in LOOPS}
            for _ in range(args.rounds):
                for loop in LOOPS:  # plain first, then the studio: taking turns
                    results[loop].append(measure(loop, run_dir, args.steps, args.warmup))
            row = {"case": case, "method": method, "shape": shape_name, "context": context}
            for loop, runs in results.items():
                row[f"{loop}_tokens_per_s"] = statistics.median(run["tokens_per_s"] for run in runs)
                row[f"{loop}_peak_bytes"] = statistics.median(run["peak_bytes"] for run in runs)
            row["speed_ratio"] = row["studio_tokens_per_s"] / row["plain_tokens_per_s"]
            row["peak_ratio"] = row["studio_peak_bytes"] / row["plain_peak_bytes"]
            rows.append(row)
            print_row(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def print_row(row: dict, flush: bool = False) -> None:
    print(
        f"{row['case']:10} context {row['context']:5}   "
        + "   ".join(
            f"{loop} {row[f'{loop}_tokens_per_s']:7.1f} tok/s, peak {row[f'{loop}_peak_bytes'] / 2**30:5.2f} GiB"
            for loop in LOOPS
        )
        + f"   studio/plain: {row['speed_ratio']:.2f}x tokens/s, {row['peak_ratio']:.2f}x peak",
        flush=flush,
    )


if __name__ == "__main__":
    main()
