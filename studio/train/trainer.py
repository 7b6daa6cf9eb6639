"""The trainer (started as `python -m studio.train RUN_DIR [--resume STEP]`, alone or under `accelerate launch`).

It reads the run's config.toml, trains with Accelerate, and reports only through the run folder: events
(rank 0), checkpoints, trainer.log. On several machines each has its own run folder, written by its first
process (`is_local_main_process`: rank 0 on one machine), so every machine's folder is a whole run. It stops
cleanly (checkpoint, `stopped` event, exit 0) when the run folder holds a `STOP` file or the process gets
SIGTERM/SIGINT; every rank agrees on that before saving.
A `CHECKPOINT` file asks for a checkpoint now.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env, set_seed

from studio.checkpoints import files as checkpoint
from studio.checkpoints.files import read_weights
from studio.checkpoints.training_state import TrainingState
from studio.config import TrainConfig, flat_config
from studio.data.batches import Batch
from studio.data.prepare import open_dataset
from studio.data.tokenizer import load_tokenizer
from studio.errors import StudioError, os_error_line
from studio.hardware import gpu_peak_flops
from studio.hf.folder import run_facts
from studio.hf.inspection import inspect_folder
from studio.inference.generate import run_generator
from studio.model.readout import cross_entropy_backend
from studio.model.trainable import build_run_model, teacher_module
from studio.model.weights import check_fit
from studio.objectives import objective_of
from studio.run_folder.checkpoint_meta import CheckpointMeta
from studio.run_folder.events import EventWriter
from studio.run_folder.history import SUMMARY_AT_CHECKPOINT_BYTES, update_summary
from studio.run_folder.layout import (
    CHECKPOINT_REQUEST,
    EVENTS,
    STOP,
    TRACKER_LOGS,
    WEIGHTS,
    checkpoint_step,
    counted,
    find_checkpoint,
    read_config,
    temporary_checkpoint_dir,
)
from studio.run_folder.lock import hold_lock_for_life
from studio.sizing.sizes import flops_per_token, run_sizes
from studio.tasks.rows import read_task
from studio.tasks.score import task_scores
from studio.train import sharding, stop_signal
from studio.train.fast_path import FastPath, fast_path
from studio.train.memory import MemoryMeter, is_out_of_memory, out_of_memory_message
from studio.train.objectives import Distilled, TrainingContext, training_objective
from studio.train.optimizer import build_optimizer, set_lr
from studio.train.schedule import lr_at

if TYPE_CHECKING:  # Opacus, an optional extra, is imported by private runs alone
    from studio.train.privacy import PrivateTraining


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
        self.fast = device_fast_path(process_device(), train)  # the device first: the precision depends on it
        # Accumulation is the loop's own (no_sync on the micro-steps but the last): the loss of a step is
        # normalised by the tokens learned in all its micro-batches, which Accelerate's accumulate() cannot do.
        self.accelerator = Accelerator(mixed_precision=self.fast.precision, **trackers)
        if train.report_to:  # events.jsonl stays the source of truth; trackers get a copy (Accelerate's integration)
            self.accelerator.init_trackers(run_dir.name, config=flat_config(self.config))
        self.rank = self.accelerator.process_index
        main = self.accelerator.is_local_main_process  # its stderr is trainer.log: the events echo there as lines
        self.events = EventWriter(run_dir / EVENTS, echo=sys.stderr) if main else NullWriter()

        self.dataset = open_dataset(self.config.data.dataset)
        self.tokenizer = load_tokenizer(self.dataset.tokenizer_path)
        self.tokenizer_hash = self.dataset.meta.tokenizer_hash
        context = TrainingContext(self.run_dir, self.config, self.dataset, self.tokenizer, self.accelerator)
        self.objective = training_objective(objective_of(self.config), context)
        self.privacy: PrivateTraining | None = None  # DP-SGD (studio.train.privacy), with Poisson-sampled batches
        if train.private:
            from studio.train.privacy import PrivateTraining

            self.train_stream = self.objective.private_batches()
            self.privacy = PrivateTraining(self.config, self.train_stream.rate)
        else:
            self.train_stream = self.objective.batches("train", shuffle=True)
        self.tasks = [read_task(file) for file in train.eval_tasks]  # scored at each evaluation (every process)

        set_seed(train.seed)  # the same initial weights (and adapters) on every rank
        self.run_model = build_run_model(self.config)
        self.model = self.run_model.module  # the plain module: checkpoints and samples use it
        self.saved_names = list(self.run_model.state_to_save())  # what a checkpoint holds, named before sharding
        self.frozen_weights = self.objective.attach(self.run_model)  # a preference objective's reference
        resumed_from = None if resume_step is None else self._load_weights(resume_step)
        self.sharded = train.sharding == "fsdp"
        if self.sharded:  # the whole weights first (resume included), then each process keeps its slices; the
            # module called is the root unit, so that its forward gathers what no block holds (embeddings, head) for
            # whatever it calls: a transformers model's readout runs its decoder and head apart
            sharding.shard(self.model, self.fast.precision)
        self.optimizer = build_optimizer(self.run_model.inner, train)  # over the sharded parameters, if sharded
        if resumed_from is not None:
            self._load_optimizer(resumed_from)
        self.teacher = self._teacher()
        if self.teacher is not None:
            self.objective = Distilled(self.objective, self.teacher, self.config.distill)
        trained_module = self.model
        if self.privacy is not None:  # per-example gradients, clipped and noised before the optimizer steps
            trained_module, self.optimizer = self.privacy.wrap(self.model, self.optimizer)
        if self.sharded:  # FSDP reduces the gradients itself: Accelerate adds autocast, and no DDP around it
            self.prepared_model = self.accelerator.prepare_model(self.model, evaluation_mode=True)
            self.optimizer = self.accelerator.prepare_optimizer(self.optimizer)
        else:
            self.prepared_model, self.optimizer = self.accelerator.prepare(trained_module, self.optimizer)
        # Compiled after prepare (DDP and autocast inside the graph). The prepared model is kept: the first step
        # falls back to it if compiling fails (compile_failed), and evaluation runs it (an eval-mode graph would
        # be a second compile, for a few batches now and then).
        self.trained_model = torch.compile(self.prepared_model) if self.fast.compile else self.prepared_model
        self.compile_pending = self.fast.compile  # until the compiled model's first step succeeds
        self.flops_per_token = self._flops_per_token()
        self.memory_estimate = self._memory_estimate()
        self.peak_flops = self._peak_flops()
        self.memory = MemoryMeter(self.accelerator.device, self._weights())
        self.state = TrainingState()  # last, so nothing above consumes random numbers of the training streams
        self._start_state(resumed_from)
        if self.privacy is not None:  # the noise planned for a fresh run (or its budget refused), a resumed run's own
            self.privacy.start(self.state)

    # ---- setup --------------------------------------------------------------------------------------
    def _teacher(self) -> torch.nn.Module | None:
        """distill.teacher (resolved at launch to a folder) on this process's device, frozen."""
        teacher = self.config.distill.teacher
        return teacher_module(Path(teacher)).to(self.accelerator.device) if teacher else None

    @property
    def block_size(self) -> int:
        return self.config.model.block_size

    def _load_weights(self, step: int) -> Path:
        """The weights of the checkpoint of `step` (checked, and chosen, by the launcher); returns that checkpoint."""
        found = find_checkpoint(self.run_dir, step)
        if counted(self.config):
            check_fit(self.config.model, found / WEIGHTS)  # names, shapes and memory, before reading
        weights, _ = read_weights(found)
        self.run_model.load_state(weights)
        return found

    def _load_optimizer(self, found: Path) -> None:
        """The optimizer's state from a checkpoint, which holds it whole: under FSDP each process takes its slices."""
        state = checkpoint.read_optimizer_state(found)
        if self.sharded:
            state = sharding.sharded_optimizer_state(state, self.optimizer)
        self.optimizer.load_state_dict(state)

    def _start_state(self, resumed_from: Path | None) -> None:
        """The training state restored whole from the checkpoint on resume, else fresh streams seeded per rank.
        A checkpoint saved by fewer processes has no torch stream for this rank: it starts a fresh one (the data
        stream is every rank's)."""
        if resumed_from is None:
            self.state.seed(self.config.train.seed, self.rank)
            return
        if not checkpoint.read_training_state(resumed_from, self.rank, self.state):
            torch.manual_seed(self.config.train.seed + self.rank + self.state.step)
        if self.state.step != checkpoint_step(resumed_from):  # never restart from another step than the folder's
            raise StudioError(f"checkpoint {resumed_from.name} holds the state of step {self.state.step}; "
                              "resume from another with `llm-studio resume RUN --checkpoint STEP`")  # fmt: skip
        self.events.write("status", self.state.step, state="resumed", checkpoint=resumed_from.name)

    def _flops_per_token(self) -> float:
        """Training FLOPs per token: the studio's count for its own models; 6 per weight for a Hugging Face model
        (2 forward, 4 backward), 4 when only adapters train (no gradient for the frozen weights)."""
        model = self.config.model
        if not model.pretrained and not self.run_model.adapters:
            return flops_per_token(model, model.vocab_size)
        return (4.0 if self.run_model.adapters else 6.0) * self.run_model.total_params()

    def _memory_estimate(self) -> int:
        """The bytes this process should need, as estimated before launch (studio.sizing.sizes.run_sizes), with the
        teacher's weights when there is one."""
        config = self.config
        num_labels = len(self.dataset.meta.labels)
        teacher = 0 if self.teacher is None else sum(p.numel() for p in self.teacher.parameters())
        sizes = run_sizes(config, run_facts(config, inspect_folder), num_labels, teacher)
        return sizes.memory["total"]

    def cross_entropy(self) -> str | None:
        """How the loss reads the output head (studio.model.readout): whole logits, the chunked PyTorch path, or a
        fused kernel; None for a classifier, whose logits are one row per text."""
        if objective_of(self.config).classifies:
            return None
        return cross_entropy_backend(self.accelerator.device.type, self.config.train.chunked_readout)

    def _weights(self) -> list[torch.Tensor]:
        """The parameters of the models this process holds (its slices, under FSDP): the trained one's, a
        teacher's, and a reference's frozen copy."""
        modules = [self.model] if self.teacher is None else [self.model, self.teacher]
        trained = [sharding.local(parameter) for module in modules for parameter in module.parameters()]
        return trained + self.frozen_weights

    def _peak_flops(self) -> float:
        """Peak FLOP/s of all processes together, for MFU: a table for GPUs, a quick matmul on CPUs."""
        half = self.fast.precision != "no"
        device = self.accelerator.device
        if device.type == "cuda":
            per_device = gpu_peak_flops(torch.cuda.get_device_name(device), half) or 0.0
        else:
            per_device = _measured_matmul_flops(torch.bfloat16 if half else torch.float32)
        return per_device * self.accelerator.num_processes

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        train = self.config.train
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
            params=self.run_model.total_params(),
            trainable_params=self.run_model.trainable_params(),
            mem_estimate=self.memory_estimate,
            mem_measure=self.memory.measure,
            mem_baseline=self.memory.baseline,
            **(self.privacy.facts() if self.privacy is not None else {}),
            cross_entropy=self.cross_entropy(),
        )
        if self.state.step == 0:
            if not self.dataset.has_validation:
                self.note("no validation split (data.val_fraction 0, or too few examples to hold any out): "
                          "evaluation skipped")  # fmt: skip
            self.evaluate()
            self.write_samples()
        window = Window(self.accelerator.device)
        while self.state.step < train.max_steps:
            started = time.perf_counter()
            log = (self.state.step + 1) % train.log_interval == 0
            step = self.train_step(log)
            if log:  # the steps queued on the device finish in the window that timed them
                wait_for_device(self.accelerator.device)
            elapsed = time.perf_counter() - started
            self.state.train_seconds += elapsed  # every step, so a stop between two log lines counts it too
            window.add(step, elapsed)
            self.state.step += 1
            self.state.tokens_seen += step.tokens
            if self._due(train.log_interval):
                self.log_train(window)
                window = Window(self.accelerator.device)
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

    def train_step(self, log: bool) -> StepResult:
        """One optimizer step over accum_steps micro-batches. The loss is the sum over every target learned in
        them, on every process, divided by their number: a token counts the same in a short example as in a
        long one, whatever the batch size and accumulation (DDP averages over processes, hence the world size)."""
        train, accelerator = self.config.train, self.accelerator
        set_lr(self.optimizer, lr_at(self.state.step, train))
        batches = [self.train_stream.next(self.state) for _ in range(train.accum_steps)]
        learned, tokens = self._global_counts(batches)
        scale = accelerator.num_processes / max(learned, 1)
        if self.privacy is not None:  # each example's loss its own, not a share of the batch's (studio.train.privacy)
            scale = 1 / self.privacy.loss_divisor
        try:
            sums = self.accumulate_gradients(batches, scale)
        except torch._dynamo.exc.TorchDynamoException as error:  # compiling failed (no compiler, say)
            if not self.compile_pending:
                raise
            self.compile_failed(error)
            sums = self.accumulate_gradients(batches, scale)
        self.compile_pending = False
        grad_norm = None
        if self.privacy is None and (train.grad_clip or log):  # DP-SGD clips each example's gradient instead
            norm = accelerator.clip_grad_norm_(self.run_model.inner.parameters(), train.grad_clip or math.inf)
            grad_norm = float(sharding.whole(norm)) if log else None
        self.optimizer.step()
        if self.privacy is not None:
            self.privacy.step()
        self.optimizer.zero_grad(set_to_none=True)
        local_learned = sum(batch.supervised for batch in batches)
        return StepResult(sums, local_learned, tokens, grad_norm)

    def accumulate_gradients(self, batches: list[Batch], scale: float) -> torch.Tensor:
        """Forward and backward of each micro-batch, gradients scaled by `scale` and summed (synchronised between
        processes on the last one only); returns the summed loss and its two parts, left on the device."""
        accelerator = self.accelerator
        sums = torch.zeros(3, device=accelerator.device)  # the loss, and its cross-entropy and distillation parts
        for index, batch in enumerate(batches):
            # DDP's micro-steps but the last keep their gradients to themselves; FSDP reduce-scatters them after
            # every micro-step, so that no process ever holds them whole (studio.train.sharding)
            sync = index == len(batches) - 1 or self.sharded
            with nullcontext() if sync else accelerator.no_sync(self.trained_model):
                parts = self.objective.loss_sums(
                    self.trained_model, batch.to(accelerator.device, pin=self.fast.pin_memory)
                )
                accelerator.backward(parts[0] * scale)
            sums += parts.detach()
        return sums

    def compile_failed(self, error: Exception) -> None:
        """The compiled model failed its first step: train the prepared model as it is, and say so in one line.
        Nothing was learned from the failed attempt (the compiled backward never ran), so the step starts over."""
        self.optimizer.zero_grad(set_to_none=True)
        self.trained_model = self.prepared_model
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.note(
            f"torch.compile failed ({first_line[:200]}); training uncompiled (set train.compile=false to skip it)"
        )

    def note(self, message: str) -> None:
        """One line the run goes on after, as a `note` event (the writer echoes it to trainer.log)."""
        self.events.write("note", self.state.step, message=message)

    def _global_counts(self, batches: list[Batch]) -> tuple[int, int]:
        """Targets learned and tokens read in a step, over every process (one small all-reduce when several)."""
        counts = [sum(batch.supervised for batch in batches), sum(batch.tokens for batch in batches)]
        if self.accelerator.num_processes == 1:
            return counts[0], counts[1]
        total = self.accelerator.reduce(torch.tensor(counts, device=self.accelerator.device), "sum")
        learned, tokens = total.tolist()
        return int(learned), int(tokens)

    # ---- reporting ----------------------------------------------------------------------------------
    def log_train(self, window: Window) -> None:
        learned = torch.tensor([float(window.learned)], device=self.accelerator.device)
        sums = self.accelerator.reduce(torch.cat([window.loss_sums, learned]), "sum").tolist()
        loss, cross_entropy, divergence = (value / max(sums[3], 1) for value in sums[:3])
        tokens_per_s = window.tokens / max(window.seconds, 1e-9)
        fields = {
            "loss": round(loss, 6),
            "lr": lr_at(self.state.step - 1, self.config.train),
            "grad_norm": None if window.grad_norm is None else round(window.grad_norm, 5),
            "tokens_per_s": round(tokens_per_s, 1),
            "tokens_seen": self.state.tokens_seen,
            "mfu": round(tokens_per_s * self.flops_per_token / self.peak_flops, 5) if self.peak_flops else None,
        }
        fields.update(self.objective.train_fields(window.seconds))
        if self.privacy is not None:
            fields["epsilon"] = round(self.privacy.epsilon(), 6)
        if self.teacher is not None:
            fields.update(ce_loss=round(cross_entropy, 6), kd_loss=round(divergence, 6))
        if self.accelerator.device.type == "cuda":
            device = self.accelerator.device
            fields.update(
                mem_allocated=torch.cuda.memory_allocated(device),
                mem_reserved=torch.cuda.memory_reserved(device),
            )
        fields["mem_peak"] = self.memory.peak()
        self.report("train", **fields)

    def evaluate(self) -> None:
        """The objective's evaluation of the prepared model (uncompiled: an eval-mode graph would be a second
        compile) and the eval tasks' scores, as an `eval` event; nothing without a validation split or tasks."""
        if not (self.dataset.has_validation or self.tasks):
            return
        self.prepared_model.eval()
        fields = {}
        if self.dataset.has_validation:
            fields = self.objective.evaluate(self.prepared_model, self.config.train.eval_steps)
        if self.tasks:
            generator = run_generator(
                self.prepared_model, self.tokenizer, self.dataset, self.block_size, self.run_dir.name
            )
            fields |= task_scores(generator, self.tasks)
        self.prepared_model.train()
        self.report("eval", **fields)

    def write_samples(self) -> None:
        """Rank 0's samples with the same seed, for step-by-step comparison: the run's fixed prompts continued, or on
        chat data the first held-out user turns (rendered with the chat template) answered."""
        if not self.config.train.sample_interval:
            return
        with sharding.whole_everywhere(self.model) if self.sharded else nullcontext():
            if self.accelerator.is_local_main_process:
                self.report("sample", samples=self._samples())

    def _samples(self) -> list[dict[str, str]]:
        """Rank 0's samples (continuations, answers, labels or fills: the objective's), drawn from one generator
        seeded alike every time, for step-by-step comparison."""
        generator = torch.Generator().manual_seed(self.config.train.seed)
        self.model.eval()
        samples = self.objective.samples(self.model, generator)
        self.model.train()
        return samples

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
        if self.accelerator.is_local_main_process:
            for path, asked in zip(files, seen):
                if asked:
                    path.unlink(missing_ok=True)
        return seen[0], seen[1]

    def save_checkpoint(self) -> None:
        accelerator = self.accelerator
        tmp = temporary_checkpoint_dir(self.run_dir, self.state.step)
        if accelerator.is_local_main_process:
            checkpoint.begin(self.run_dir, self.state.step)
        accelerator.wait_for_everyone()
        try:
            writes_folder = accelerator.is_local_main_process
            checkpoint.write_training_state(tmp, self.rank, self.state, accelerator.num_processes, writes_folder)
            # one after the other: under FSDP the writer holds each whole only while it writes it
            weights = self._whole_weights(writes_folder)
            if writes_folder:
                metadata = CheckpointMeta.of_run(self.config, self.state.step, self.tokenizer_hash)
                checkpoint.write_weights(tmp, weights, metadata)
            del weights
            optimizer_state = self._whole_optimizer_state(writes_folder)
            if writes_folder:
                checkpoint.write_optimizer(tmp, optimizer_state)
        except BaseException:  # a full disk, say: the half-written folder goes, the previous checkpoint stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_local_main_process:
            final = checkpoint.commit(self.run_dir, tmp, self.state.step, self.config.train.keep_checkpoints)
            self.events.write("checkpoint", self.state.step, path=str(final.relative_to(self.run_dir)))
            update_summary(self.run_dir, at_least=SUMMARY_AT_CHECKPOINT_BYTES)

    def _whole_weights(self, keep: bool) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds, whole, where `keep` (else none). Under FSDP every process takes part in
        gathering each tensor."""
        if self.sharded:
            state = self.run_model.inner.state_dict()
            return sharding.gathered({name: state[name] for name in self.saved_names}, keep)
        return self.run_model.state_to_save() if keep else {}

    def _whole_optimizer_state(self, keep: bool) -> dict[str, Any]:
        """The optimizer's state dict as one process holds it, where `keep` (else empty); gathered under FSDP."""
        optimizer = self.optimizer.optimizer
        if self.sharded:
            return sharding.gathered_optimizer_state(optimizer, keep)
        return optimizer.state_dict() if keep else {}


@dataclass
class StepResult:
    loss_sums: torch.Tensor  # this process's summed loss over its learned targets, and its two parts (loss_sums)
    learned: int  # this process's learned targets
    tokens: int  # tokens read by every process together
    grad_norm: float | None


class Window:
    """The steps since the last train event, added up for it."""

    def __init__(self, device: torch.device):
        self.loss_sums = torch.zeros(3, device=device)  # kept on the device: read back only when logged
        self.learned = 0
        self.tokens = 0
        self.seconds = 0.0
        self.grad_norm: float | None = None

    def add(self, step: StepResult, seconds: float) -> None:
        self.loss_sums += step.loss_sums
        self.learned += step.learned
        self.tokens += step.tokens
        self.seconds += seconds
        self.grad_norm = step.grad_norm


def process_device() -> torch.device:
    """The device Accelerator will give this process, known before it exists: ACCELERATE_USE_CPU (a CPU-only
    multi-process launch) is read as AcceleratorState reads it, else the state would be set up for GPUs."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device


def device_fast_path(device: torch.device, train: TrainConfig) -> FastPath:
    """The fast path on this process's device (fast_path's decisions), with TF32 turned on where it is chosen."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    path = fast_path(device.type, train, bf16_supported=bf16)
    if path.tf32:
        torch.set_float32_matmul_precision("high")  # the API inductor reads too; TF32 convolutions are cuDNN's default
    return path


def wait_for_device(device: torch.device) -> None:
    """Block until the work queued on a GPU is done (a CPU runs each operation as it is called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    except StudioError as error:
        _report_failure(trainer, run_dir, str(error))
    except OSError as error:
        traceback.print_exc()
        _report_failure(trainer, run_dir, os_error_line(error))
    except Exception as error:  # running out of memory (a GPU's or a CPU's) included
        traceback.print_exc()
        message = _oom_message(error, trainer, run_dir) or f"{type(error).__name__}: {error}"
        _report_failure(trainer, run_dir, f"{message}; the traceback is in trainer.log")
    finally:
        if events is not None:
            events.close()
        if trainer is not None and trainer.accelerator.is_local_main_process:
            update_summary(run_dir)  # the finished history, summed up once for every later reader
        if trainer is not None and trainer.config.train.report_to:
            trainer.accelerator.end_training()  # the trackers flush and close
    return 1


def _report_failure(trainer: Trainer | None, run_dir: Path, message: str) -> None:
    if trainer is not None and not trainer.accelerator.is_local_main_process:
        return
    writer = trainer.events if trainer is not None else EventWriter(run_dir / EVENTS, echo=sys.stderr)
    step = trainer.state.step if trainer is not None else 0
    writer.write("error", step, message=message)
    writer.write("status", step, state="failed")


def _oom_message(error: BaseException, trainer: Trainer | None, run_dir: Path) -> str | None:
    """studio.train.memory's line when the error is running out of memory, else None."""
    if not is_out_of_memory(error):
        return None
    if trainer is None:  # the data, model or optimizer did not fit
        return out_of_memory_message(error, read_config(run_dir), step=None)
    step, peak, estimate = trainer.state.step, trainer.memory.peak(), trainer.memory_estimate
    return out_of_memory_message(error, trainer.config, step, peak, estimate)
