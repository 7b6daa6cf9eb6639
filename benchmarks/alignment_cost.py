"""Alignment's cost: seconds per step of every preference objective and GRPO against SFT, and each one's peak memory
against the studio's estimate, on one small model, full fine-tuning and LoRA.

The model is Llama-shaped (hidden 256, 4 layers, 8 heads, 2 key-value heads: 3M parameters with the tokenizer's
458-token head; the BPE asks for 1,024 and the generated rows give it fewer merges), built with transformers' config
class and saved as a Hugging Face folder beside a byte-level BPE with a ChatML template, trained on the generated
rows. The rows are generated too: conversations for SFT (lm on chat rows), the
same prompts with a chosen and a rejected answer for DPO, IPO, ORPO, SimPO and KTO (KTO reads a paired file's chosen
answers as desirable, its rejected ones as not), and the prompts alone with a reference answer for GRPO (one regex
reward, the default group of 4, answers of up to 32 tokens). Every run is the real thing: prepared by
`studio.runs.prepare`, trained by the trainer's own process (`python -m studio.train RUN_DIR`, what `llm-studio
train` launches), one after the other, so that each process's peak resident set is its own.

From each run's events: seconds per step (the trainer's own timing of each step, the steps after the first few
left out as warm-up), for GRPO the part spent generating and scoring (generation_s) apart from the update
(update_s); the peak (`mem_peak`: on a CPU the process's peak resident set), the estimate (`mem_estimate`,
studio.sizing.sizes.run_sizes: what `llm-studio train` prints and the Train tab shows) and the runtime's baseline
(`mem_baseline`: the resident set once the trainer is set up, less the weights). As docs/ARCHITECTURE.md
(*Memory*) says, the peak is held against the estimate plus the baseline; the training's own part (peak less
baseline) against the estimate shows what the estimate leaves out. Timings are printed, never asserted.

The trainers run on one thread by default (`--threads`): on a machine shared with other CPU-bound work, two
threads of a small model wait on each other's spinning (a GRPO step's 128 small decoding forwards took 4 to 7 s on
2 busy cores, 0.13 s on one thread), which measures the neighbours rather than the methods.

    python benchmarks/alignment_cost.py [--steps 20] [--warmup 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {  # the model of the measurement, and a smaller one for --quick
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 8},
    "quick": {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2, "num_attention_heads": 4},
}
VOCAB, CONTEXT, BATCH, ROWS = 1024, 128, 4, 64
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
OBJECTIVES = ("lm", "dpo", "ipo", "orpo", "simpo", "kto", "grpo")  # lm: SFT on the chat rows, the baseline
METHODS = ("full", "lora")
GRPO = {"train.rewards": ["regex:[a-z ]+"], "train.max_completion_tokens": 32}  # the default group of 4
WORDS = "the a model answer question short long kind plain clear right wrong good bad first last".split()


# ---- the model and the data ------------------------------------------------------------------------------------
def rows(count: int) -> list[tuple[str, str, str]]:
    """(question, chosen answer, rejected answer) of a few words each, varied by the row's number."""
    out = []
    for i in range(count):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6 + i % 5)]
        question = f"Question {i}: what is {' '.join(words[:3])}?"
        out.append((question, " ".join(words), " ".join(reversed(words)).upper()))
    return out


def write_data(folder: Path) -> dict[str, Path]:
    """The three files: chat rows, preference pairs (TRL's conversational form) and GRPO's prompts."""

    def user(text: str) -> list[dict]:
        return [{"role": "user", "content": text}]

    def assistant(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    generated = rows(ROWS)
    documents = {
        "chat.jsonl": [{"messages": user(q) + assistant(c)} for q, c, _ in generated],
        "pairs.jsonl": [{"prompt": user(q), "chosen": assistant(c), "rejected": assistant(r)} for q, c, r in generated],
        "prompts.jsonl": [{"prompt": q, "answer": c} for q, c, _ in generated],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in document), encoding="utf-8")
    return {"lm": folder / "chat.jsonl", "pairs": folder / "pairs.jsonl", "grpo": folder / "prompts.jsonl"}


def build_checkpoint(folder: Path, shape: dict) -> tuple[int, int]:
    """The Hugging Face folder every run starts from; returns its parameter count and vocabulary."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [f"{q}\n{c}\n{r}\n" for q, c, r in rows(ROWS)]
    tokenizer.train_from_iterator(corpus * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    fast.save_pretrained(folder)
    ids = {"bos_token_id": 0, "eos_token_id": fast.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": 0}
    config = transformers.LlamaConfig(
        **shape, **ids, vocab_size=len(fast), num_key_value_heads=2, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters()), config.vocab_size


# ---- the runs --------------------------------------------------------------------------------------------------
def run_config(checkpoint: Path, data: dict[str, Path], objective: str, method: str, steps: int):
    from studio.config import RunConfig, set_field

    config = RunConfig()
    changes = {
        "data.source": str(data["lm" if objective == "lm" else "grpo" if objective == "grpo" else "pairs"]),
        "data.val_fraction": 0.0, "train.init_from": str(checkpoint), "train.objective": objective,
        "train.method": method, "model.block_size": CONTEXT, "train.batch_size": BATCH, "train.max_steps": steps,
        "train.log_interval": 1, "train.eval_interval": steps, "train.sample_interval": 0,
        "train.checkpoint_interval": steps, "train.mixed_precision": "no", "train.compile": "false",
        **(GRPO if objective == "grpo" else {}),
    }  # fmt: skip
    for key, value in changes.items():
        set_field(config, key, value)
    return config


@dataclass
class Measured:
    objective: str
    method: str
    step_s: float  # median seconds per step after the warm-up
    generation_s: float | None  # GRPO: of which generating and scoring
    peak: int  # bytes: the process's peak resident set
    estimate: int  # bytes: studio.sizing's estimate
    baseline: int  # bytes: the runtime's resident set once set up, less the weights


def measure(config, name: str, warmup: int, threads: int) -> Measured:
    """Prepare the run, train it in the trainer's own process (on `threads` threads), and read its events."""
    from studio.runs.prepare import prepare_run

    run_dir = prepare_run(config, name)
    command = [sys.executable, "-m", "studio.train", str(run_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    trained = subprocess.run(command, capture_output=True, text=True, env=environment)
    if trained.returncode != 0:
        raise SystemExit(f"{name} failed:\n{trained.stderr[-3000:]}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    running = next(e for e in events if e["kind"] == "status" and e.get("state") == "running")
    steps = [e for e in events if e["kind"] == "train"]
    seconds, generation = [], []
    for before, event in zip([{"tokens_seen": 0}] + steps, steps):  # log_interval 1: each event times one step
        if event["step"] > warmup:
            seconds.append((event["tokens_seen"] - before["tokens_seen"]) / event["tokens_per_s"])
            generation.append(event.get("generation_s"))
    grpo = config.train.objective == "grpo"
    return Measured(
        config.train.objective, config.train.method, statistics.median(seconds),
        statistics.median(generation) if grpo else None, steps[-1]["mem_peak"], running["mem_estimate"],
        running["mem_baseline"],
    )  # fmt: skip


def mib(value: float) -> str:
    return f"{value / 2**20:7.1f}"


def print_table(results: list[Measured]) -> None:
    sft = {m.method: m.step_s for m in results if m.objective == "lm"}
    print(f"{'objective':9} {'method':6} {'s/step':>7} {'vs SFT':>6} {'gen s':>6} {'peak':>7} {'estim.':>7} "
          f"{'base':>7} {'peak/(est+base)':>15} {'(peak-base)/est':>15}   (memory in MiB)")  # fmt: skip
    for m in results:
        generation = f"{m.generation_s:6.3f}" if m.generation_s is not None else f"{'':6}"
        objective = "sft (lm)" if m.objective == "lm" else m.objective
        print(
            f"{objective:9} {m.method:6} {m.step_s:7.3f} {m.step_s / sft[m.method]:6.2f} {generation} {mib(m.peak)} "
            f"{mib(m.estimate)} {mib(m.baseline)} {m.peak / (m.estimate + m.baseline):15.2f} "
            f"{(m.peak - m.baseline) / m.estimate:15.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the time per step")
    parser.add_argument("--threads", type=int, default=1, help="the trainers' threads (OMP_NUM_THREADS)")
    parser.add_argument("--quick", action="store_true", help="a smaller model (128 x 2) and 6 steps: a smoke check")
    args = parser.parse_args()
    steps, warmup = (6, 2) if args.quick else (args.steps, args.warmup)
    if steps <= warmup:
        raise SystemExit(f"--steps must be above --warmup ({warmup})")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # measured on the CPU, whatever the machine has
    work = Path(tempfile.mkdtemp(prefix="llm-studio-alignment-bench-"))
    os.environ["LLM_STUDIO_HOME"] = str(work / "home")
    shape = SHAPES["quick" if args.quick else "small"]
    params, vocab = build_checkpoint(work / "checkpoint", shape)
    data = write_data(work / "data")
    print(f"Llama-shaped {shape['num_hidden_layers']} layers x {shape['hidden_size']}, {params / 1e6:.2f}M "
          f"parameters, vocabulary {vocab:,}; batch {BATCH} (pairs, or prompts x 4 answers for GRPO), context "
          f"{CONTEXT}; {steps} steps, median of the steps after {warmup}; CPU, {args.threads} thread(s), fp32",
          flush=True)  # fmt: skip
    results = []
    for method in METHODS:
        for objective in OBJECTIVES:
            config = run_config(work / "checkpoint", data, objective, method, steps)
            results.append(measure(config, f"{objective}-{method}", warmup, args.threads))
            print(f"  {objective} {method}: {results[-1].step_s:.3f} s/step", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
