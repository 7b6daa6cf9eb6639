"""The trainer (started as `python -m studio.train RUN_DIR [--resume STEP]`, alone or under `accelerate launch`).

It reads the run's config.toml, trains with Accelerate, and reports only through the run folder: events
(rank 0), checkpoints, trainer.log. It stops cleanly (checkpoint, `stopped` event, exit 0) when the run
folder holds a `STOP` file or the process gets SIGTERM/SIGINT; every rank agrees on that before saving.
A `CHECKPOINT` file asks for a checkpoint now.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from studio.config import flat_config
from studio.data.batches import TokenFile, sample_batch
from studio.data.prepare import open_dataset
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError, os_error_line
from studio.generate import SamplingConfig, sample
from studio.hardware import gpu_peak_flops
from studio.model import build_model, param_groups
from studio.run_folder.events import EventWriter
from studio.run_folder.layout import (
    CHECKPOINT_REQUEST,
    EVENTS,
    STOP,
    TRACKER_LOGS,
    WEIGHTS,
    checkpoint_step,
    find_checkpoint,
    read_config,
    temporary_checkpoint_dir,
)
from studio.run_folder.lock import hold_lock_for_life
from studio.sizes import flops_per_token
from studio.train import checkpoint, stop_signal
from studio.train.schedule import lr_at
from studio.train.state import TrainingState
from studio.weights import check_fit, load_initial_weights, load_weights, read_weights, weights_to_save


class NullWriter:
    """What ranks other than 0 get instead of an EventWriter: they report nothing."""

    def write(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.run_dir = run_dir
        self.config = read_config(run_dir)
        train = self.config.train
        trackers = {"log_with": train.report_to, "project_dir": run_dir / TRACKER_LOGS} if train.report_to else {}
        self.accelerator = Accelerator(
            mixed_precision=train.mixed_precision, gradient_accumulation_steps=train.grad_accum, **trackers
        )
        if train.report_to:  # events.jsonl stays the source of truth; trackers get a copy (Accelerate's integration)
            self.accelerator.init_trackers(run_dir.name, config=flat_config(self.config))
        self.rank = self.accelerator.process_index
        self.events = EventWriter(run_dir / EVENTS) if self.accelerator.is_main_process else NullWriter()

        dataset = open_dataset(self.config.data.dataset)
        self.tokenizer = load_tokenizer(dataset.tokenizer_path)
        self.tokenizer_hash = dataset.meta["tokenizer_hash"]
        self.eot_id = dataset.eot_id
        self.train_tokens = TokenFile(dataset.bin_path("train"), dataset.dtype)
        self.val_tokens = TokenFile(dataset.bin_path("val"), dataset.dtype)

        set_seed(train.seed)  # the same initial weights on every rank
        self.model = build_model(self.config.model)  # the plain module: checkpoints and samples use it
        if train.init_from and resume_step is None:  # resolved at launch to a folder of weights
            load_initial_weights(self.model, Path(train.init_from))
        self.optimizer = self._build_optimizer()
        resumed_from = None if resume_step is None else self._load_model_and_optimizer(resume_step)
        trained = torch.compile(self.model) if train.compile else self.model
        self.trained_model, self.optimizer = self.accelerator.prepare(trained, self.optimizer)
        self.flops_per_token = flops_per_token(self.config.model, self.config.model.vocab_size)
        self.peak_flops = self._peak_flops()
        self.state = TrainingState()  # last, so nothing above consumes random numbers of the training streams
        self._start_state(resumed_from)

    # ---- setup --------------------------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        train = self.config.train
        groups = param_groups(self.model, train.weight_decay)
        if train.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
        try:  # the fused kernel is fastest wherever the device has one
            return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2))

    def _load_model_and_optimizer(self, step: int) -> Path:
        """Weights and optimizer state from the checkpoint of `step` (checked, and chosen, by the launcher);
        returns that checkpoint."""
        found = find_checkpoint(self.run_dir, step)
        check_fit(self.config.model, found / WEIGHTS)
        weights, _ = read_weights(found)
        load_weights(self.model, weights, self.config.model.tie_embeddings)
        self.optimizer.load_state_dict(checkpoint.read_optimizer_state(found))
        return found

    def _start_state(self, resumed_from: Path | None) -> None:
        """The training state restored whole from the checkpoint on resume, else fresh streams seeded per rank.
        A checkpoint saved by fewer processes has no streams for this rank: it starts fresh ones."""
        if resumed_from is None:
            self.state.seed(self.config.train.seed + self.rank)
            return
        if not checkpoint.read_training_state(resumed_from, self.rank, self.state):
            self.state.seed(self.config.train.seed + self.rank + self.state.step)
        if self.state.step != checkpoint_step(resumed_from):  # never restart from another step than the folder's
            raise StudioError(f"checkpoint {resumed_from.name} holds the state of step {self.state.step}; "
                              "resume from another with `llm-studio resume RUN --checkpoint STEP`")  # fmt: skip
        self.events.write("status", self.state.step, state="resumed", checkpoint=resumed_from.name)

    def _peak_flops(self) -> float:
        """Peak FLOP/s of all processes together, for MFU: a table for GPUs, a quick matmul on CPUs."""
        half = self.config.train.mixed_precision != "no"
        device = self.accelerator.device
        if device.type == "cuda":
            per_device = gpu_peak_flops(torch.cuda.get_device_name(device), half) or 0.0
        else:
            per_device = _measured_matmul_flops(torch.bfloat16 if half else torch.float32)
        return per_device * self.accelerator.num_processes

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        train, model_cfg = self.config.train, self.config.model
        if stop_signal.received:  # while the trainer started: nothing trained yet, nothing to save
            self.events.write("status", self.state.step, state="stopped")
            return
        self.events.write(
            "status",
            self.state.step,
            state="running",
            max_steps=train.max_steps,
            world_size=self.accelerator.num_processes,
            device=str(self.accelerator.device),
            params=self.model.num_params(),
        )
        if self.state.step == 0:
            self.evaluate()
            self.write_samples()
        tokens_per_step = train.batch_size * model_cfg.block_size * train.grad_accum * self.accelerator.num_processes
        window_loss = torch.zeros((), device=self.accelerator.device)
        window_steps, window_seconds = 0, 0.0
        while self.state.step < train.max_steps:
            started = time.perf_counter()
            loss, grad_norm = self.train_step(log=(self.state.step + 1) % train.log_interval == 0)
            elapsed = time.perf_counter() - started
            window_seconds += elapsed
            self.state.train_seconds += elapsed  # every step, so a stop between two log lines counts it too
            window_loss += loss
            window_steps += 1
            self.state.step += 1
            self.state.tokens_seen += tokens_per_step
            if self._due(train.log_interval):
                self.log_train(window_loss, window_steps, window_seconds, grad_norm, tokens_per_step)
                window_loss.zero_()
                window_steps, window_seconds = 0, 0.0
            if self._due(train.eval_interval):
                self.evaluate()
            if train.sample_interval and self._due(train.sample_interval):
                self.write_samples()
            stop, checkpoint_now = self.poll_requests()
            if stop or checkpoint_now or self._due(train.checkpoint_interval):
                self.save_checkpoint()
            if stop:
                self.events.write("status", self.state.step, state="stopped")
                return
        self.events.write(
            "status",
            self.state.step,
            state="finished",
            tokens_seen=self.state.tokens_seen,
            train_seconds=round(self.state.train_seconds, 2),
        )

    def _due(self, interval: int) -> bool:
        """Whether something done every `interval` steps (and at the last step) is due now."""
        return self.state.step % interval == 0 or self.state.step == self.config.train.max_steps

    def train_step(self, log: bool) -> tuple[torch.Tensor, float | None]:
        """One optimizer step over grad_accum micro-batches; the mean loss, and the grad norm when asked."""
        train = self.config.train
        lr = lr_at(self.state.step, train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total_loss = torch.zeros((), device=self.accelerator.device)
        grad_norm = None
        for _ in range(train.grad_accum):
            x, y = sample_batch(
                self.train_tokens, train.batch_size, self.config.model.block_size, self.state.data_generator
            )
            x, y = x.to(self.accelerator.device), y.to(self.accelerator.device)
            with self.accelerator.accumulate(self.trained_model):
                _, loss = self.trained_model(x, y)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients and (train.grad_clip or log):
                    norm = self.accelerator.clip_grad_norm_(self.model.parameters(), train.grad_clip or math.inf)
                    grad_norm = float(norm) if log else None
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total_loss += loss.detach()
        return total_loss / train.grad_accum, grad_norm

    # ---- reporting ----------------------------------------------------------------------------------
    def log_train(
        self, window_loss: torch.Tensor, steps: int, seconds: float, grad_norm: float | None, tokens_per_step: int
    ) -> None:
        loss = self.accelerator.reduce(window_loss, "mean").item() / steps
        tokens_per_s = tokens_per_step * steps / max(seconds, 1e-9)
        fields = {
            "loss": round(loss, 6),
            "lr": lr_at(self.state.step - 1, self.config.train),
            "grad_norm": None if grad_norm is None else round(grad_norm, 5),
            "tokens_per_s": round(tokens_per_s, 1),
            "tokens_seen": self.state.tokens_seen,
            "mfu": round(tokens_per_s * self.flops_per_token / self.peak_flops, 5) if self.peak_flops else None,
        }
        if self.accelerator.device.type == "cuda":
            device = self.accelerator.device
            fields.update(
                mem_allocated=torch.cuda.memory_allocated(device),
                mem_reserved=torch.cuda.memory_reserved(device),
                mem_peak=torch.cuda.max_memory_allocated(device),
            )
        self.report("train", **fields)

    @torch.no_grad()
    def evaluate(self) -> None:
        """Validation loss, perplexity and next-token accuracy on eval_steps fixed batches per process."""
        train = self.config.train
        generator = torch.Generator().manual_seed(train.seed + 10_000 + self.rank)  # the same batches each time
        self.trained_model.eval()
        totals = torch.zeros(3, device=self.accelerator.device)  # loss sum, correct, tokens
        for _ in range(train.eval_steps):
            x, y = sample_batch(self.val_tokens, train.batch_size, self.config.model.block_size, generator)
            x, y = x.to(self.accelerator.device), y.to(self.accelerator.device)
            with self.accelerator.autocast():
                logits, loss = self.trained_model(x, y)
            totals[0] += loss.float() * y.numel()
            totals[1] += (logits.argmax(-1) == y).sum()
            totals[2] += y.numel()
        self.trained_model.train()
        loss_sum, correct, count = self.accelerator.reduce(totals, "sum").tolist()
        val_loss = loss_sum / count
        self.report(
            "eval",
            val_loss=round(val_loss, 6),
            val_ppl=round(math.exp(min(val_loss, 50.0)), 4),
            val_acc=round(correct / count, 6),
        )

    def write_samples(self) -> None:
        """Rank 0 continues each of the run's fixed prompts with the same seed, for step-by-step comparison."""
        train = self.config.train
        if not (train.sample_interval and self.accelerator.is_main_process):
            return
        generator = torch.Generator().manual_seed(train.seed)
        sampling = SamplingConfig(max_new_tokens=train.sample_tokens)
        self.model.eval()
        texts = []
        for prompt in train.sample_prompts:
            ids = torch.tensor([self.tokenizer.encode(prompt).ids or [self.eot_id]], device=self.accelerator.device)
            with self.accelerator.autocast():
                new = sample(self.model, ids, self.config.model.block_size, sampling, generator, self.eot_id)
            texts.append({"prompt": prompt, "text": self.tokenizer.decode(new[0].tolist())})
        self.model.train()
        self.report("sample", samples=texts)

    def report(self, kind: str, **fields: Any) -> None:
        """An event in events.jsonl (the source of truth) and, when asked, its numbers and samples in the trackers."""
        self.events.write(kind, self.state.step, **fields)
        if self.config.train.report_to:
            self.accelerator.log(tracker_values(kind, fields), step=self.state.step)

    # ---- stopping and checkpoints -----------------------------------------------------------------------
    def poll_requests(self) -> tuple[bool, bool]:
        """(stop, checkpoint now), from a signal or the run folder's request files, agreed by every rank in a
        single all-reduce per step; rank 0 removes the files it acted on. Every rank calls this each step."""
        files = (self.run_dir / STOP, self.run_dir / CHECKPOINT_REQUEST)
        seen = [stop_signal.received is not None or files[0].exists(), files[1].exists()]
        if self.accelerator.num_processes > 1:
            flags = torch.tensor(seen, dtype=torch.float32, device=self.accelerator.device)
            seen = (self.accelerator.reduce(flags, "sum") > 0).tolist()
        if self.accelerator.is_main_process:
            for path, asked in zip(files, seen):
                if asked:
                    path.unlink(missing_ok=True)
        return seen[0], seen[1]

    def save_checkpoint(self) -> None:
        accelerator = self.accelerator
        tmp = temporary_checkpoint_dir(self.run_dir, self.state.step)
        if accelerator.is_main_process:
            checkpoint.begin(self.run_dir, self.state.step)
        accelerator.wait_for_everyone()
        try:
            checkpoint.write_training_state(tmp, self.rank, self.state, accelerator.num_processes)
            if accelerator.is_main_process:
                metadata = {
                    "config": self.config.to_json(),
                    "step": str(self.state.step),
                    "tokenizer_hash": self.tokenizer_hash,
                }
                weights = weights_to_save(self.model, self.config.model.tie_embeddings)
                checkpoint.write_model(tmp, weights, self.optimizer.optimizer, metadata)
        except BaseException:  # a full disk, say: the half-written folder goes, the previous checkpoint stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            final = checkpoint.commit(self.run_dir, tmp, self.state.step, self.config.train.keep_checkpoints)
            self.events.write("checkpoint", self.state.step, path=str(final.relative_to(self.run_dir)))


def tracker_values(kind: str, fields: dict[str, Any]) -> dict[str, float | str]:
    """An event's numbers as `kind/name` scalars, and a sample event's texts as one text."""
    if kind == "sample":
        return {"samples": "\n\n".join(item["prompt"] + item["text"] for item in fields["samples"])}
    return {f"{kind}/{name}": value for name, value in fields.items() if isinstance(value, (int, float))}


def _measured_matmul_flops(dtype: torch.dtype, size: int = 1024, trials: int = 5) -> float:
    """A CPU has no spec sheet here: the best of a few timed square matmuls stands for the peak."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    best = math.inf
    for _ in range(trials):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0])
    try:
        hold_lock_for_life(run_dir)
    except StudioError as error:  # another trainer owns this run: leave its folder alone
        print(error, file=sys.stderr)
        return 1
    events = None
    trainer = None
    try:
        trainer = Trainer(run_dir, int(argv[argv.index("--resume") + 1]) if "--resume" in argv else None)
        events = trainer.events
        trainer.run()
        return 0
    except torch.cuda.OutOfMemoryError:
        traceback.print_exc()
        _report_failure(trainer, run_dir, _oom_message(trainer))
    except StudioError as error:
        _report_failure(trainer, run_dir, str(error))
    except OSError as error:
        traceback.print_exc()
        _report_failure(trainer, run_dir, os_error_line(error))
    except Exception as error:
        traceback.print_exc()
        _report_failure(trainer, run_dir, f"{type(error).__name__}: {error}; the traceback is in trainer.log")
    finally:
        if events is not None:
            events.close()
        if trainer is not None and trainer.config.train.report_to:
            trainer.accelerator.end_training()  # the trackers flush and close
    return 1


def _report_failure(trainer: Trainer | None, run_dir: Path, message: str) -> None:
    if trainer is not None and not trainer.accelerator.is_main_process:
        return
    print(message, file=sys.stderr)
    writer = trainer.events if trainer is not None else EventWriter(run_dir / EVENTS)
    step = trainer.state.step if trainer is not None else 0
    writer.write("error", step, message=message)
    writer.write("status", step, state="failed")


def _oom_message(trainer: Trainer | None) -> str:
    if trainer is None:
        return "out of GPU memory while setting up; pick a smaller preset"
    train, model = trainer.config.train, trainer.config.model
    peak = torch.cuda.max_memory_allocated() / 2**30
    return (
        f"out of GPU memory at step {trainer.state.step} with batch {train.batch_size}x{model.block_size} tokens "
        f"(peak {peak:.1f} GiB); lower train.batch_size (raise train.grad_accum to keep the tokens per step), "
        "model.block_size, or the model size, or use --mixed-precision bf16"
    )
