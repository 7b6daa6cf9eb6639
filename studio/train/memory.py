"""A trainer's memory: the peak it measures, and the one message for running out of it.

`mem_peak` means the same on every device: the most memory the training itself held, beyond what the runtime
holds anyway (the interpreter, torch's libraries, a GPU's CUDA context). That is what studio.sizes estimates
(weights, gradients, optimizer state, activations), so the two are shown side by side.

- On a GPU: `torch.cuda.max_memory_allocated`, the tensors' peak.
- On a CPU: the process's peak resident set (the kernel's high-water mark, `ru_maxrss`, which catches the peak
  inside a step that a sampled RSS would miss) minus its resident set when the trainer started, after the imports
  and before the data and model (the baseline, reported once in the `running` event). What the estimate leaves
  out counts here too: pages of the dataset read so far, allocator slack, the tokenizer, evaluation and samples.
"""

from __future__ import annotations

import resource
import sys

import psutil
import torch

from studio.config import RunConfig
from studio.formatting import format_bytes


class MemoryMeter:
    """The training's peak memory on one process's device (see the module's docstring). Made once the trainer is
    set up: data, model and optimizer ready, nothing trained yet."""

    def __init__(self, device: torch.device, tensors: list[torch.Tensor]):
        self.device = device
        held = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
        self.baseline = 0 if device.type == "cuda" else psutil.Process().memory_info().rss - held

    @property
    def measure(self) -> str:
        """What mem_peak counts on this device: `cuda_allocated` or `rss` (above the baseline)."""
        return "cuda_allocated" if self.device.type == "cuda" else "rss"

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return max(0, peak_resident_bytes() - self.baseline)


def peak_resident_bytes() -> int:
    """This process's peak resident set so far (Linux counts ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def out_of_memory_message(
    error: BaseException, config: RunConfig, step: int | None, peak: int | None = None, estimate: int | None = None
) -> str:
    """The one line for a run that ran out of memory: where, when, how much, and what makes it fit: batch, gradient
    accumulation, context, activation checkpointing, precision (step None: while the data, model and optimizer
    were set up, before any step; then a smaller model too)."""
    where = "GPU" if isinstance(error, torch.OutOfMemoryError) else "CPU"
    train, model = config.train, config.model
    when = "while setting up" if step is None else f"at step {step}"
    amounts = [f"measured peak {format_bytes(peak)}"] if peak else []
    amounts += [f"estimated {format_bytes(estimate)}"] if estimate else []
    amounts_text = f" ({', '.join(amounts)})" if amounts else ""
    levers = [
        "lower train.batch_size (raise train.grad_accum to keep the tokens per step)",
        "shorten model.block_size",
        "turn on activation checkpointing",
    ]
    half = train.mixed_precision != "no"
    if not half:
        levers.append("train in bf16 (--mixed-precision bf16)")
    if step is None:
        levers.append("choose a smaller model")
    return (
        f"out of {where} memory {when} with batch {train.batch_size} × context {model.block_size}{amounts_text}; "
        f"to fit, {', '.join(levers[:-1])}, or {levers[-1]}"
        f"{f' (the precision is {train.mixed_precision} already)' if half else ''}"
    )
