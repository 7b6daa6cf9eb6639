"""Generation speed on the CPU: llm-studio's cached decoder against transformers' generate(), same weights.

The model is the `small` preset's architecture (Llama layout, 6 layers, 6 heads, 384 wide, vocabulary 4096,
context raised to 512 so that prompt + 256 new tokens fit) with random weights, saved as a run checkpoint
and exported with `studio.export.huggingface` so both sides hold identical weights. Greedy decoding, 256 new tokens
(no early stop), the same prompt; both run in this process, alternating rounds so that load from elsewhere
on the machine hits both alike. Reported: the best and median tokens/s of each (prefill included) and
the ratio of the medians.

    python benchmarks/generation_speed.py [--rounds 5] [--new-tokens 256] [--threads 2] [--arch llama|gpt2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "def fibonacci(n):\n    "


def make_run(arch: str, preset: str) -> str:
    """A run folder with a dataset (tokenizer) and a step-0 checkpoint of random weights."""
    import argparse as a  # some real text
    import collections
    import dataclasses
    import json.decoder
    import pathlib

    from studio.checkpoints import files as checkpoint
    from studio.config import RunConfig
    from studio.data.prepare import prepare_dataset
    from studio.model import build_model
    from studio.model.weights import weights_to_save
    from studio.presets import load_preset
    from studio.run_folder.checkpoint_meta import CheckpointMeta
    from studio.runs.control import create_run

    corpus = Path(os.environ["LLM_STUDIO_HOME"]) / "corpus.txt"
    corpus.write_text(
        "\n".join(Path(m.__file__).read_text() for m in (a, collections, dataclasses, json.decoder, pathlib)),
        encoding="utf-8",
    )
    config: RunConfig = load_preset(preset)
    config.data.source = str(corpus)
    dataset = prepare_dataset(config.data)
    config.data.dataset = dataset.name
    config.model.arch, config.model.block_size, config.model.vocab_size = arch, 512, config.data.vocab_size
    run_dir = create_run(config, "bench")
    torch.manual_seed(0)
    model = build_model(config.model)
    tmp = checkpoint.begin(run_dir, 0)
    weights = weights_to_save(model, config.model.tie_embeddings)
    checkpoint.write_weights(tmp, weights, CheckpointMeta.of_run(config, 0, dataset.meta.tokenizer_hash))
    checkpoint.commit(run_dir, tmp, 0, 1)
    return "bench"


def time_studio(generator, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    from studio.inference.generate import SamplingConfig, decode_steps

    sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=0)
    started = time.perf_counter()
    tokens = [int(t) for t in decode_steps(generator.model, ids, generator.block_size, sampling)]
    return new_tokens / (time.perf_counter() - started), tokens


def time_transformers(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            attention_mask=torch.ones_like(ids),
        )
    return new_tokens / (time.perf_counter() - started), out[0, ids.size(1) :].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", default="llama", choices=["llama", "gpt2"])
    parser.add_argument("--preset", default="small", help="whose architecture (vocabulary included) to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as home:
        os.environ["LLM_STUDIO_HOME"] = home
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from studio.export.huggingface import export_run
        from studio.inference.generate import load_generator

        hf_logging.disable_progress_bar()
        run = make_run(args.arch, args.preset)
        exported = export_run(run, Path(home) / "export")
        generator = load_generator(run)
        hf_model = AutoModelForCausalLM.from_pretrained(exported.out, dtype=torch.float32).eval()
        ids = torch.tensor([generator.encode(PROMPT)])
        params = sum(p.numel() for p in generator.model.parameters())
        time_studio(generator, ids, 16), time_transformers(hf_model, ids, 16)  # warm up both
        studio_rates, hf_rates = [], []
        for _ in range(args.rounds):
            rate, studio_tokens = time_studio(generator, ids, args.new_tokens)
            studio_rates.append(rate)
            rate, hf_tokens = time_transformers(hf_model, ids, args.new_tokens)
            hf_rates.append(rate)
        same = studio_tokens == hf_tokens
    result = {
        "model": f"{args.arch}, {args.preset} preset architecture, {params / 1e6:.1f}M parameters, context 512",
        "prompt_tokens": ids.size(1),
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "studio_tokens_per_s": {
            "best": round(max(studio_rates), 1),
            "median": round(statistics.median(studio_rates), 1),
        },
        "transformers_tokens_per_s": {"best": round(max(hf_rates), 1), "median": round(statistics.median(hf_rates), 1)},
        "ratio_of_medians": round(statistics.median(studio_rates) / statistics.median(hf_rates), 2),
        "export_logit_diff": exported.max_logit_diff,
        "same_greedy_tokens": same,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
