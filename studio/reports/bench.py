"""`llm-studio bench`: what the studio does on this machine, as figures; never a pass/fail.

Everything runs on the device at hand (the first GPU, else the CPU), in one precision (bf16 autocast on a GPU,
fp32 on a CPU: Accelerate allows one per process), inside a temporary studio home removed afterwards, on text
generated here from the built-in corpus: no network, no files of the user's, nothing left in their home.

- presets: training tokens/s and MFU of each decoder preset that fits, through the studio's own Trainer; the
  others are listed with the reason (memory, or the time one step would take, estimated from what the smaller
  presets reached);
- overhead: the Trainer's step against a bare PyTorch loop of the same model, batch and precision, in alternating
  rounds in this process, so that load from elsewhere on the machine hits both alike;
- data: `llm-studio prepare` as a child process (MB/s of text, its peak RSS), the studio's encoder, and the
  tokenizers library's own `encode_batch` on the same text;
- loss: the Trainer's step with its loss read from the output head a chunk of tokens at a time (train.chunked_loss)
  against whole logits, the base preset with a 32K-token head, in alternating rounds: tokens/s and the estimate
  (`benchmarks/chunked_ce.py` measures peak RSS against a plain transformers + peft loop on a 0.5B model);
- generation: tokens/s with and without the KV cache (alternating rounds);
- scaling: the training and generation figures along batch size, context length and model width.

Each measurement is a `Table` whose columns carry their units: printed as markdown, written whole by `--json`.
`benchmarks/train_overhead.py` measures the overhead with these same functions, on a text of one's choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from studio.config import DataConfig, RunConfig
from studio.data.prepare import open_dataset
from studio.data.sources import BUILTIN_CORPORA, open_source
from studio.data.tokenizer import PIECE_CHARS, BpeEncoder, load_tokenizer, split_before_newlines
from studio.formatting import format_count
from studio.hardware import cpu_name, gpu_peak_flops, peak_resident_bytes
from studio.inference.generate import SamplingConfig, decode_steps
from studio.model import build_model, param_groups
from studio.paths import child_process_env
from studio.presets import load_preset, preset_table, preset_vocab
from studio.runs.prepare import prepare_run
from studio.sizing.sizes import estimate_train_memory, flops_per_token, param_count
from studio.train.trainer import Trainer

PREPARED_NAME = "bench-prepare"
LOSS_VOCAB = 32_768  # the loss table's head: a vocabulary whose logits outweigh a small model's activations
NEEDS_GPU = "needs a GPU"
GPU_ONLY = (  # what a CPU-only machine measures otherwise, whatever the plan
    "bf16 mixed precision (a CPU trains in fp32 here: bf16 autocast is slower on CPUs)",
    "MFU against a spec-sheet peak (a CPU's MFU is against the best of a few timed fp32 matmuls)",
)


@dataclass(frozen=True)
class Plan:
    """How much to measure: --quick, the full bench, or (tests) less still."""

    name: str
    corpus_chars: int  # text generated for preparing and training
    warmup_steps: int
    steps: int  # timed steps of each training figure (per round for the overhead)
    rounds: int  # alternating rounds: overhead, generation
    step_budget_s: float  # a preset whose training step would take longer here is listed, not run
    base_preset: str  # the model of the overhead, generation and scaling figures
    new_tokens: int  # generated per generation figure
    batches: tuple[int, ...]  # the scaling axes, each around the base preset's value
    contexts: tuple[int, ...]
    widths: tuple[int, ...]
    presets: tuple[str, ...] = ()  # the decoder presets to try; () for all


QUICK = Plan("quick", 1_500_000, 1, 3, 2, 1.0, "tiny", 16, (1, 4, 16), (64, 128, 256), (64, 128, 256))
# meant for a GPU (tens of minutes on a CPU): the `small` preset at the middle of each axis
FULL = Plan("full", 8_000_000, 3, 10, 5, 10.0, "small", 64, (1, 8, 32, 128), (64, 256, 1024), (192, 384, 768))


@dataclass(frozen=True)
class Column:
    name: str
    unit: str = ""  # "" for text; else what the numbers count
    label: str = ""  # the printed header, when the name and unit together read badly

    @property
    def header(self) -> str:
        return self.label or (f"{self.name} ({self.unit})" if self.unit else self.name)


@dataclass
class Table:
    key: str  # its name in the JSON
    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)  # values in column order; None where not measured
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        names = [column.name for column in self.columns]
        return {
            "title": self.title,
            "columns": [dataclasses.asdict(column) for column in self.columns],
            "rows": [dict(zip(names, (_rounded(value) for value in row))) for row in self.rows],
            "notes": self.notes,
        }


PARAMS = Column("params", "parameters", "params")
BATCH = Column("batch", "sequences", "batch")
CONTEXT = Column("context", "tokens", "context")
WIDTH = Column("width", "n_embd", "width (n_embd)")
TRAIN = Column("train", "tokens/s", "train tokens/s")
MFU = Column("MFU", "fraction", "MFU")


# ---- the bench -----------------------------------------------------------------------------------------
def run_bench(plan: Plan, progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every figure of `plan` on this machine's device, as the JSON report (`format_report` prints it); `progress`
    hears of each table as it is done."""
    started, date = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0]  # a busy machine slows every figure: say how busy it was
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with _temporary_home() as home:
        corpus = write_corpus(home / "corpus.txt", plan.corpus_chars)
        bench = Bench(plan, device, corpus)
        measures = [bench.presets_table, bench.overhead_table, bench.loss_table, bench.data_table,
                    bench.generation_table, *bench.scaling_measures()]  # fmt: skip
        tables = []
        for index, measure in enumerate(measures, 1):
            tables.append(measure())
            progress(f"[{index}/{len(measures)}] {tables[-1].key} ({time.perf_counter() - started:.0f} s)")
    return {
        "device": device_facts(device),
        "plan": plan.name,
        "date": date,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average_at_start": round(load, 2),
        "needs_gpu": bench.needs_gpu + list(GPU_ONLY) if device.type == "cpu" else [],
        "tables": {table.key: table.to_json() for table in tables},
    }


@contextlib.contextmanager
def _temporary_home() -> Iterator[Path]:
    """LLM_STUDIO_HOME pointed at a new temporary folder for the block, then restored, and the folder removed."""
    before = os.environ.get("LLM_STUDIO_HOME")
    with tempfile.TemporaryDirectory(prefix="llm-studio-bench-") as home:
        os.environ["LLM_STUDIO_HOME"] = home
        try:
            yield Path(home)
        finally:
            if before is None:
                del os.environ["LLM_STUDIO_HOME"]
            else:
                os.environ["LLM_STUDIO_HOME"] = before


def write_corpus(path: Path, chars: int) -> Path:
    """About `chars` characters of the built-in corpus (Python's own sources), whole files in a fixed order."""
    source = open_source(BUILTIN_CORPORA[0], DataConfig())
    texts, total = [], 0
    for file in source.files:
        if total >= chars:
            break
        text = file.path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
    path.write_text("\n".join(texts), encoding="utf-8")
    return path


def device_facts(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name, memory = torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory
    else:
        name, memory = cpu_name(), psutil.virtual_memory().total
    return {
        "type": device.type,
        "name": name,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": memory,
        "precision": _precision(device),
        "torch": torch.__version__,
    }


def _precision(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "no"


@dataclass
class TrainFigures:
    params: int
    tokens_per_s: float
    mfu: float | None
    flops_per_s: float  # what the step reached: tokens/s times training FLOPs per token


class Bench:
    def __init__(self, plan: Plan, device: torch.device, corpus: Path):
        self.plan, self.device, self.corpus = plan, device, corpus
        self.needs_gpu: list[str] = []  # what a CPU-only machine did not measure, for the report's last line
        self.memory = device_facts(device)["memory_bytes"]
        self._trained: dict[str, TrainFigures] = {}  # by config: the scaling axes share their middle point

    # ---- configs --------------------------------------------------------------------------------------
    def config(self, preset: str, batch: int | None = None, context: int | None = None, width: int | None = None):
        """The preset as the bench trains it: its model (its vocabulary too), on the generated corpus in characters
        (one dataset for every figure), one micro-batch per step, the device's precision; optionally resized."""
        config = load_preset(preset)
        config.model.vocab_size = preset_vocab(config)
        config.data = DataConfig(source=str(self.corpus), tokenizer="char")
        train = config.train
        train.grad_accum, train.global_batch, train.sample_interval, train.compile = 1, 0, 0, "false"
        train.mixed_precision = _precision(self.device)
        train.batch_size = batch or train.batch_size
        config.model.block_size = context or config.model.block_size
        config.model.n_embd = width or config.model.n_embd
        return config

    def train(self, config: RunConfig) -> TrainFigures:
        key = config.to_json()
        if key not in self._trained:
            self._trained[key] = self._measure_training(config)
        return self._trained[key]

    def _measure_training(self, config: RunConfig) -> TrainFigures:
        trainer = Trainer(prepare_run(config, f"train-{len(self._trained)}"))
        step = studio_step(trainer)
        seconds_per_step(step, self.plan.warmup_steps)
        tokens_per_s = config.train.batch_size * config.model.block_size / seconds_per_step(step, self.plan.steps)
        trainer.events.close()
        # MFU as the trainer reports it: its FLOPs per token over its peak (a table for GPUs, a matmul on CPUs)
        flops_per_s = tokens_per_s * trainer.flops_per_token
        model = config.model
        mfu = flops_per_s / trainer.peak_flops if trainer.peak_flops else None  # a GPU missing from the table
        return TrainFigures(param_count(model, model.vocab_size), tokens_per_s, mfu, flops_per_s)

    # ---- presets --------------------------------------------------------------------------------------
    def decoder_presets(self) -> list[RunConfig]:
        """The presets that train a decoder of their own (not an encoder, a recurrent model or a checkpoint's),
        cheapest step first."""
        own_model = [row["name"] for row in preset_table() if row["sets_model"]]
        configs = [self.config(name) for name in own_model if name in (self.plan.presets or own_model)]
        decoders = [c for c in configs if not (c.model.encoder or c.model.recurrent or c.model.pretrained)]
        return sorted(decoders, key=_flops_per_step)

    def presets_table(self) -> Table:
        table = Table(
            "presets",
            f"Training, each decoder preset (its batch and context, {_precision_name(self.device)})",
            [Column("preset"), PARAMS, BATCH, CONTEXT, TRAIN, MFU, Column("note")],
        )
        # the FLOP/s the next preset's step is estimated at: the best one reached so far, or on a GPU what a well-sized
        # model reaches there (small presets, overhead-bound on a GPU, would make big ones look far too slow)
        reached = likely_gpu_flops(torch.cuda.get_device_name(self.device)) if self.device.type == "cuda" else 0.0
        for config in self.decoder_presets():
            model, train = config.model, config.train
            row = [config.preset, param_count(model, model.vocab_size), train.batch_size, model.block_size]
            reason = skip_reason(config, self.plan, self.device.type == "cuda", self.memory, reached)
            if reason:
                if reason.startswith(NEEDS_GPU):
                    self.needs_gpu.append(f"training {config.preset}")
                table.rows.append([*row, None, None, reason])
                continue
            figures = self.train(config)
            reached = max(reached, figures.flops_per_s)
            table.rows.append([*row, figures.tokens_per_s, figures.mfu, ""])
        return table

    # ---- overhead -------------------------------------------------------------------------------------
    def overhead_table(self) -> Table:
        config = self.config(self.plan.base_preset)
        trainer = Trainer(prepare_run(config, "overhead"))
        config = trainer.config
        dataset = open_dataset(config.data.dataset)
        device, precision = trainer.accelerator.device, trainer.fast.precision
        bare = bare_step(config, dataset.bin_path("train"), dataset.dtype, device, precision)
        studio = studio_step(trainer)
        bare_s, studio_s = alternate_rounds([bare, studio], self.plan.warmup_steps, self.plan.steps, self.plan.rounds)
        trainer.events.close()
        tokens = config.train.batch_size * config.model.block_size
        return Table(
            "overhead",
            f"The trainer against a bare PyTorch loop ({config.preset}, batch {config.train.batch_size} x "
            f"{config.model.block_size}, {_precision_name(self.device)}; median of {self.plan.rounds} alternating "
            f"rounds of {self.plan.steps} steps)",
            [Column("loop"), Column("step", "ms"), TRAIN, Column("vs bare", "x", "vs bare")],
            [
                ["bare PyTorch loop", 1000 * bare_s, tokens / bare_s, 1.0],
                ["llm-studio Trainer", 1000 * studio_s, tokens / studio_s, studio_s / bare_s],
            ],
        )

    # ---- the loss's head ------------------------------------------------------------------------------
    def loss_table(self) -> Table:
        """The trainer's step with the loss read a chunk of tokens at a time against whole logits, alternated, on the
        base preset with a LOSS_VOCAB-token head (today's checkpoints have larger ones still): tokens/s, and the
        estimate, whose activations differ by the logits (studio.sizing.sizes)."""
        trainers = []
        for chunked in (False, True):
            config = self.config(self.plan.base_preset)
            config.model.vocab_size, config.train.chunked_loss = LOSS_VOCAB, chunked
            trainers.append(Trainer(prepare_run(config, f"loss-{'chunked' if chunked else 'whole'}")))
        plan = self.plan
        seconds = alternate_rounds([studio_step(t) for t in trainers], plan.warmup_steps, plan.steps, plan.rounds)
        config = trainers[0].config
        tokens = config.train.batch_size * config.model.block_size
        table = Table(
            "loss",
            f"The loss without whole logits ({config.preset} with a {LOSS_VOCAB:,}-token head, batch "
            f"{config.train.batch_size} x {config.model.block_size}, {_precision_name(self.device)}; median of "
            f"{plan.rounds} alternating rounds of {plan.steps} steps)",
            [Column("loss"), TRAIN, Column("estimate", "MiB", "memory estimate (MiB)"), Column("vs whole", "x")],
        )
        for trainer, step_seconds in zip(trainers, seconds):
            trainer.events.close()
            row = [trainer.cross_entropy(), tokens / step_seconds, trainer.memory_estimate / 2**20]
            table.rows.append([*row, seconds[0] / step_seconds])
        return table

    # ---- data -----------------------------------------------------------------------------------------
    def data_table(self) -> Table:
        """`llm-studio prepare` whole (a child process: start, hash, clean, BPE training, encode, write), then the
        encoding alone: the studio's encoder and the tokenizers library's encode_batch on the same pieces."""
        vocab = load_preset(self.plan.base_preset).data.vocab_size
        command = [sys.executable, "-m", "studio.cli", "prepare", str(self.corpus), "--vocab-size", str(vocab),
                   "--name", PREPARED_NAME]  # fmt: skip
        prepare_s, peak_rss = run_measured(command)
        text = self.corpus.read_text(encoding="utf-8")
        megabytes = len(text.encode("utf-8")) / 1e6
        tokenizer = load_tokenizer(open_dataset(PREPARED_NAME).tokenizer_path)
        encoder, pieces = BpeEncoder(tokenizer), split_before_newlines(text, PIECE_CHARS)
        encode_s = _seconds(lambda: encoder.encode(text))
        raw_s = _seconds(lambda: tokenizer.encode_batch(pieces, add_special_tokens=False))
        return Table(
            "data",
            f"Data preparation: {megabytes:.1f} MB of Python sources, byte-level BPE of {vocab} tokens",
            [Column("what"), Column("speed", "MB/s"), Column("time", "s"), Column("peak RSS", "MiB")],
            [
                [
                    "llm-studio prepare (the whole command)",
                    megabytes / prepare_s,
                    prepare_s,
                    peak_rss and peak_rss / 2**20,
                ],
                ["  its encoder alone (encode_batch_fast)", megabytes / encode_s, encode_s, None],
                ["tokenizers encode_batch (raw, same pieces)", megabytes / raw_s, raw_s, None],
            ],
            ["the whole command includes starting Python, hashing, cleaning, training the BPE and writing the files"],
        )

    # ---- generation -----------------------------------------------------------------------------------
    def generation_table(self) -> Table:
        config = self.config(self.plan.base_preset)
        cached, uncached = self.generate(config, batch=1)
        return Table(
            "generation",
            f"Generation ({config.preset}, one sequence, {self.plan.new_tokens} new tokens filling the context of "
            f"{config.model.block_size}, greedy, fp32; median of {self.plan.rounds} alternating rounds)",
            [Column("decoding"), Column("generate", "tokens/s", "tokens/s"), Column("vs no cache", "x", "vs no cache")],
            [["KV cache", cached, cached / uncached], ["no cache (the window again each step)", uncached, 1.0]],
        )

    def generate(self, config: RunConfig, batch: int) -> tuple[float, float]:
        """Tokens/s with and without the KV cache: `batch` prompts of random tokens, long enough that the new
        tokens end where the context does."""
        torch.manual_seed(0)
        model = build_model(config.model).to(self.device).eval()
        context, new = config.model.block_size, min(self.plan.new_tokens, config.model.block_size - 1)
        ids = torch.randint(config.model.vocab_size, (batch, context - new), device=self.device)
        runs = [lambda cache=cache: generation_step(model, ids, context, new, cache) for cache in (True, False)]
        seconds = alternate_rounds(runs, 1, 1, self.plan.rounds)
        return batch * new / seconds[0], batch * new / seconds[1]

    # ---- scaling --------------------------------------------------------------------------------------
    def scaling_measures(self) -> list[Callable[[], Table]]:
        plan = self.plan
        axes = [(BATCH, plan.batches), (CONTEXT, plan.contexts), (WIDTH, plan.widths)]
        return [functools.partial(self.scaling_table, axis, values) for axis, values in axes]

    def scaling_table(self, axis: Column, values: tuple[int, ...]) -> Table:
        """Training and generation figures of the base preset with one of its sizes set to each of `values`."""
        base = self.config(self.plan.base_preset)
        table = Table(
            f"scaling_{axis.name}",
            f"Scaling with {axis.name} ({base.preset} otherwise: batch {base.train.batch_size}, context "
            f"{base.model.block_size}, width {base.model.n_embd}; generation: {self.plan.new_tokens} new tokens "
            "ending at the context, one sequence but on the batch axis)",
            [axis, PARAMS, TRAIN, MFU, Column("generate cached", "tokens/s", "generate tokens/s, cached"),
             Column("generate uncached", "tokens/s", "uncached")],
        )  # fmt: skip
        for value in values:
            config = self.config(self.plan.base_preset, **{axis.name: value})
            figures = self.train(config)
            cached, uncached = self.generate(config, value if axis is BATCH else 1)
            table.rows.append([value, figures.params, figures.tokens_per_s, figures.mfu, cached, uncached])
        return table


def skip_reason(config: RunConfig, plan: Plan, on_gpu: bool, memory: int, flops_per_s: float) -> str:
    """Why a preset is listed rather than trained here ("" to train it): its training memory over the device's, or
    its step at `flops_per_s` over the plan's time budget. On a CPU, a step over the full bench's budget needs a GPU."""
    needed = estimate_train_memory(config.model, config.train, config.model.vocab_size)["total"]
    if needed > memory:
        why = f"needs about {needed / 2**30:.0f} GiB to train, the device has {memory / 2**30:.0f} GiB"
        return why if on_gpu else f"{NEEDS_GPU}: {why}"
    seconds = _flops_per_step(config) / flops_per_s if flops_per_s else 0.0
    if seconds <= plan.step_budget_s:
        return ""
    if not on_gpu and seconds > FULL.step_budget_s:
        return f"{NEEDS_GPU}: about {seconds:.0f} s per step here"
    return f"skipped for time: about {seconds:.1f} s per step here ({plan.name} allows {plan.step_budget_s:g})"


def likely_gpu_flops(gpu_name: str) -> float:
    """What a well-sized model reaches on this GPU in bf16: about 30% of its spec-sheet peak (0 when unknown)."""
    return 0.3 * (gpu_peak_flops(gpu_name, half_precision=True) or 0.0)


def _flops_per_step(config: RunConfig) -> float:
    return flops_per_token(config.model, config.model.vocab_size) * config.train.batch_size * config.model.block_size


def _precision_name(device: torch.device) -> str:
    return "bf16 autocast" if _precision(device) == "bf16" else "fp32"


# ---- measuring -------------------------------------------------------------------------------------------
Step = Callable[[], torch.Tensor]  # one training step; returns its loss (a tensor, maybe still on the device)


def studio_step(trainer: Trainer) -> Step:
    """The trainer's own step, plus the per-step bookkeeping its loop does (stop and checkpoint polls)."""

    def step() -> torch.Tensor:
        result = trainer.train_step(log=False)
        trainer.state.step += 1
        trainer.poll_requests()
        return result.loss_sums[0]

    return step


def bare_step(config: RunConfig, train_bin: Path, dtype: str, device: torch.device, precision: str) -> Step:
    """nanoGPT's train.py reduced to its loop: get_batch from a memmap (copied from pinned memory without waiting,
    to a GPU), forward (under bf16 autocast when `precision`, the trainer's choice, says so), backward, clip, step.
    The same model, batch, optimizer and precision as the trainer's."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    train = config.train
    optimizer = torch.optim.AdamW(
        param_groups(model, train.weight_decay), lr=train.lr, betas=(train.beta1, train.beta2), fused=True
    )
    block, batch = config.model.block_size, train.batch_size
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(train_bin, dtype=dtype, mode="r")
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y

    def step() -> torch.Tensor:
        x, y = get_batch()
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def seconds_per_step(step: Step, steps: int) -> float:
    """Wall seconds per step over `steps` steps; reading the last loss waits for a GPU to finish them."""
    if steps == 0:
        return 0.0
    started = time.perf_counter()
    for _ in range(steps):
        loss = step().detach()
    loss.item()
    return (time.perf_counter() - started) / steps


def alternate_rounds(steps: list[Step], warmup: int, per_round: int, rounds: int) -> list[float]:
    """The median seconds per step of each, over `rounds` rounds that take turns, after warming each up."""
    for step in steps:
        seconds_per_step(step, warmup)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for step, measured in zip(steps, times):
            measured.append(seconds_per_step(step, per_round))
    return [statistics.median(measured) for measured in times]


def generation_step(model: torch.nn.Module, ids: torch.Tensor, context: int, new: int, cache: bool) -> torch.Tensor:
    """Decode `new` tokens greedily after `ids`, with or without the KV cache; returns the first row's last token
    (timed as a Step: one generation)."""
    sampling = SamplingConfig(max_new_tokens=new, temperature=0)
    *_, last = decode_steps(model, ids, context, sampling, use_cache=cache)
    return last[0]


def run_measured(command: list[str]) -> tuple[float, int | None]:
    """Run a child process to its end: its wall seconds and its peak resident memory in bytes (None where there is
    no /proc). The peak is the child's VmHWM, read every 10 ms while it runs: its rusage's ru_maxrss would be this
    process's (Linux keeps a process's high-water mark across exec, and the child starts as a copy of this one).
    A failure is the child's last lines."""
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=child_process_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        peak = None  # Popen returns once the child has exec'd, so its high-water mark is its program's own
        while child.poll() is None:
            now = peak_resident_bytes(child.pid)
            peak = peak if now is None else max(peak or 0, now)
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command[1:4])} failed: {stderr.read().decode(errors='replace')[-1000:]}")
    return seconds, peak


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# ---- the report ----------------------------------------------------------------------------------------------
def _rounded(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


FORMATS: dict[str, Callable[[float], str]] = {
    "tokens/s": lambda v: f"{v:,.0f}",
    "fraction": lambda v: f"{100 * v:.1f}%",
    "parameters": format_count,
    "ms": lambda v: f"{v:.1f}",
    "s": lambda v: f"{v:.2f}",
    "MB/s": lambda v: f"{v:.2f}",
    "MiB": lambda v: f"{v:,.0f}",
    "x": lambda v: f"{v:.2f}x",
}


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and unit in FORMATS:
        return FORMATS[unit](value)
    return str(value)


def format_report(report: dict[str, Any]) -> str:
    """The report as markdown tables: readable in a terminal, and pasted as is into a README."""
    device = report["device"]
    lines = [
        f"llm-studio bench ({report['plan']}) on {device['type']}: {device['name']}, {device['cpu_cores']} CPU cores, "
        f"torch threads {device['torch_threads']}, {device['memory_bytes'] / 2**30:.0f} GiB; torch {device['torch']}",
        f"{report['date']}, {report['wall_seconds']:.0f} s; load average at the start "
        f"{report['load_average_at_start']:.1f}",
    ]
    for table in report["tables"].values():
        lines += ["", f"**{table['title']}**", ""]
        columns = table["columns"]
        header = [Column(**column).header for column in columns]
        body = [[_cell(row[c["name"]], c["unit"]) for c in columns] for row in table["rows"]]
        widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
        for index, cells in enumerate([header, *body]):
            lines.append("| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
        if table["notes"]:
            lines += ["", *table["notes"]]
    if report["needs_gpu"]:
        lines += ["", "Needs a GPU (not measured on this CPU-only machine): " + "; ".join(report["needs_gpu"]) + "."]
    return "\n".join(lines)
