"""Time to quality: the `speedrun-cpu` preset against nanoGPT's own CPU example, on tiny Shakespeare.

The baseline is nanoGPT's train.py and model.py reduced to what its CPU example runs (char level, 90/10 split,
4 layers x 4 heads x 128, context 64, batch 12, AdamW lr 1e-3 with 100 warmup steps and cosine decay to 1e-4 over
2000 iterations, beta2 0.99, weight decay 0.1, clip 1.0, no dropout): its wall time for 2000 iterations and its
validation loss after them. The contender is llm-studio's own trainer (`studio.train.trainer.Trainer`, in this
process) on the `speedrun-cpu` preset: the wall time until its validation loss first reaches the target (1.8857,
nanoGPT's 2000-iteration loss on these machines; the baseline's loss of this run is reported too).

Both are judged by one estimate: the mean loss of the same 20 batches of 12 windows of 64 characters of the
validation text (nanoGPT's eval_iters 20 at its batch and context, drawn once, so every estimate reads the same
windows). The baseline is estimated after its 2000 iterations, the contender every `--eval-every` steps.
What is timed: training steps only (batches, forward, backward, clipping, optimizer), for both; the estimates are
timed apart and printed, never counted. The two alternate, `--rounds` times each, in this one process, so that
load from elsewhere hits both alike.

    python benchmarks/time_to_quality.py [--text ../shared/data/tinyshakespeare.txt] [--rounds 2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.config import RunConfig, parse_override, set_field  # noqa: E402
from studio.presets import load_preset  # noqa: E402
from studio.runs.prepare import prepare_run  # noqa: E402
from studio.train.trainer import Trainer  # noqa: E402

DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.8857  # nanoGPT's validation loss after its 2000 iterations, on these machines
EVAL_BATCHES, EVAL_BATCH, EVAL_CONTEXT = 20, 12, 64  # nanoGPT's CPU example: eval_iters, batch_size, block_size


# ---- nanoGPT's CPU example (model.py and train.py, what that example runs) ------------------------------------
N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, ITERS, WEIGHT_DECAY, BETAS, CLIP = 1e-3, 1e-4, 100, 2000, 0.1, (0.9, 0.99), 1.0


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias (its CPU example has none)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = LayerNorm(N_EMBD), LayerNorm(N_EMBD)
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.attn_proj = nn.Linear(N_EMBD, N_EMBD, bias=False)
        self.c_fc = nn.Linear(N_EMBD, 4 * N_EMBD, bias=False)
        self.mlp_proj = nn.Linear(4 * N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, N_HEAD, width // N_HEAD).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(attended.transpose(1, 2).contiguous().view(batch, length, width))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, N_EMBD), nn.Embedding(BLOCK, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = LayerNorm(N_EMBD)
        self.lm_head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # the residual projections, scaled as GPT-2 does
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * N_LAYER))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def nanogpt_lr(it: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (ITERS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def nanogpt_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS)  # fused only on CUDA in nanoGPT


def random_windows(data: np.ndarray, batch: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch: `batch` windows at random offsets and the same shifted by one."""
    ix = torch.randint(len(data) - context, (batch,))
    x = torch.stack([torch.from_numpy(data[i : i + context].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + context].astype(np.int64)) for i in ix])
    return x, y


def run_nanogpt(train: np.ndarray, val: np.ndarray, vocab_size: int, estimate: ValEstimate) -> tuple[float, float]:
    """nanoGPT's loop for its 2000 iterations: (training seconds, validation loss after them)."""
    torch.manual_seed(1337)
    model = NanoGPT(vocab_size)
    optimizer = nanogpt_optimizer(model)
    seconds = 0.0
    for it in range(ITERS):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(it)
        x, y = random_windows(train, BATCH, BLOCK)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
    return seconds, estimate.loss(model, val)


# ---- the one estimate both are judged by ------------------------------------------------------------------------
@dataclass
class ValEstimate:
    offsets: torch.Tensor  # (EVAL_BATCHES, EVAL_BATCH) window starts in the validation text
    seconds: float = 0.0  # time spent estimating, reported and never counted

    @classmethod
    def drawn(cls, val_length: int) -> ValEstimate:
        generator = torch.Generator().manual_seed(2000)
        return cls(torch.randint(val_length - EVAL_CONTEXT, (EVAL_BATCHES, EVAL_BATCH), generator=generator))

    @torch.no_grad()
    def loss(self, logits_of, val: np.ndarray) -> float:
        """The mean over the batches of each batch's mean cross-entropy (nanoGPT's estimate_loss)."""
        started = time.perf_counter()
        losses = []
        for row in self.offsets.tolist():
            x = torch.stack([torch.from_numpy(val[i : i + EVAL_CONTEXT].astype(np.int64)) for i in row])
            y = torch.stack([torch.from_numpy(val[i + 1 : i + 1 + EVAL_CONTEXT].astype(np.int64)) for i in row])
            logits = logits_of(x)
            losses.append(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).item())
        self.seconds += time.perf_counter() - started
        return statistics.fmean(losses)


# ---- the contender: llm-studio's trainer on the speedrun-cpu preset -------------------------------------------
@dataclass
class Reached:
    seconds: float | None  # training seconds when the estimate first reached the target; None: never
    step: int | None
    curve: list[tuple[int, float, float]]  # (step, training seconds, estimated validation loss)


def run_speedrun(config: RunConfig, val_text: str, estimate: ValEstimate, target: float, eval_every: int) -> Reached:
    """The trainer's own steps (`Trainer.train_step`, what `Trainer.run` repeats), with the estimate every
    `eval_every` steps in place of the trainer's evaluations, samples and checkpoints, until the target."""
    trainer = Trainer(prepare_run(config.copy(), None))
    val = studio_ids(trainer.tokenizer, val_text)
    model, seconds, curve = trainer.trained_model, 0.0, []
    while trainer.state.step < config.train.max_steps:
        started = time.perf_counter()
        trainer.train_step(log=False)
        seconds += time.perf_counter() - started
        trainer.state.step += 1
        if trainer.state.step % eval_every == 0 or trainer.state.step == config.train.max_steps:
            model.eval()
            loss = estimate.loss(lambda x: model(x)[0], val)
            model.train()
            curve.append((trainer.state.step, seconds, loss))
            if loss <= target:
                return Reached(seconds, trainer.state.step, curve)
    return Reached(None, None, curve)


def speedrun_config(text: Path, overrides: list[str]) -> RunConfig:
    config = load_preset("speedrun-cpu")
    config.data.source = str(text)
    config.train.sample_interval = 0
    for override in overrides:
        set_field(config, *parse_override(override))
    return config


# ---- the data, as each side reads it --------------------------------------------------------------------------
def nanogpt_splits(text: str) -> tuple[np.ndarray, np.ndarray, int]:
    """nanoGPT's shakespeare_char prepare.py: the sorted characters as ids, the first 90% to train on."""
    index = {char: i for i, char in enumerate(sorted(set(text)))}
    ids = np.fromiter((index[char] for char in text), dtype=np.uint16, count=len(text))
    split = int(0.9 * len(ids))
    return ids[:split], ids[split:], len(index)


def studio_ids(tokenizer, text: str) -> np.ndarray:
    """nanoGPT's validation text in the studio's character ids: the same windows for both estimates. (The studio's
    own split is cut from its cleaned corpus, a few characters off nanoGPT's.)"""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) != len(text):
        raise SystemExit("the studio's tokenizer is not one id per character here: the estimates would not compare")
    return np.array(ids, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--eval-every", type=int, default=50, help="the contender's estimate every this many steps")
    parser.add_argument("--set", action="append", default=[], help="section.key=value on top of speedrun-cpu")
    parser.add_argument("--speedrun-only", action="store_true", help="skip the baseline (to tune the preset)")
    args = parser.parse_args()
    os.environ["LLM_STUDIO_HOME"] = tempfile.mkdtemp(prefix="llm-studio-time-to-quality-")
    text = args.text.read_text(encoding="utf-8")
    train, val, vocab_size = nanogpt_splits(text)
    config = speedrun_config(args.text, args.set)
    estimate = ValEstimate.drawn(len(val))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; target {args.target}; training seconds")
    ratios = []
    for round_number in range(1, args.rounds + 1):
        baseline = None if args.speedrun_only else run_nanogpt(train, val, vocab_size, estimate)
        if baseline:
            print(
                f"round {round_number} nanoGPT: {ITERS} iterations in {baseline[0]:.1f} s, val loss {baseline[1]:.4f}"
            )
        reached = run_speedrun(config, text[len(train) :], estimate, args.target, args.eval_every)
        print(f"round {round_number} speedrun-cpu: " + ", ".join(f"{s}:{t:.1f}s:{v:.4f}" for s, t, v in reached.curve))
        if reached.seconds is None:
            print(f"round {round_number} speedrun-cpu never reached {args.target}")
            continue
        line = f"round {round_number} speedrun-cpu: {args.target} at step {reached.step} in {reached.seconds:.1f} s"
        if baseline:
            ratios.append(reached.seconds / baseline[0])
            line += f", {100 * ratios[-1]:.0f}% of nanoGPT's time"
        print(line)
    if ratios:
        print(f"ratios {', '.join(f'{100 * r:.0f}%' for r in ratios)}; median {100 * statistics.median(ratios):.0f}%")
    print(f"estimates took {estimate.seconds:.1f} s in all (not counted)")


if __name__ == "__main__":
    main()
