"""A trainer's memory: the peak it measures, and the one message for running out of it.

`mem_peak` is the process's peak memory on its device as that device counts it, and `mem_baseline` the part of
it that is the runtime's rather than the run's; studio.sizing.sizes' estimate (weights, gradients, optimizer state,
activations) plus the baseline is what the peak is compared with:

- On a GPU: `torch.cuda.max_memory_allocated`, the tensors' peak; the baseline is 0 (the CUDA context and the
  libraries are not tensors).
- On a CPU: the process's peak resident set (the kernel's high-water mark, studio.hardware.peak_resident_bytes,
  which catches the peak inside a step that a sampled RSS would miss). The baseline is its resident set once the
  trainer is set up (interpreter, torch and its lazily imported parts, data, tokenizer, the FLOP/s probe, model
  and optimizer built, nothing trained), less the weights, which the estimate counts. What the estimate leaves out
  shows in the difference: mostly the freed blocks glibc's malloc keeps for reuse between steps (on the small
  presets, 5 to 85% more than the activations' bytes), then pages of the dataset read so far.
"""

from __future__ import annotations

import psutil
import torch

from studio.config import RunConfig
from studio.hardware import peak_resident_bytes
from studio.sizing import memory_advice


class MemoryMeter:
    """One process's peak memory and runtime baseline (see the module's docstring), made once the trainer is set
    up, given the weights it holds."""

    def __init__(self, device: torch.device, weights: list[torch.Tensor]):
        self.device = device
        held = sum(tensor.numel() * tensor.element_size() for tensor in weights)
        self.baseline = 0 if device.type == "cuda" else psutil.Process().memory_info().rss - held

    @property
    def measure(self) -> str:
        """What mem_peak counts on this device: `cuda_allocated` (tensors) or `rss` (the whole process)."""
        return "cuda_allocated" if self.device.type == "cuda" else "rss"

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return peak_resident_bytes() or psutil.Process().memory_info().rss  # no /proc: the resident set now


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def out_of_memory_message(
    error: BaseException, config: RunConfig, step: int | None, peak: int | None = None, estimate: int | None = None
) -> str:
    """studio.sizing.memory_advice's line for an out-of-memory error, on the device the error names."""
    where = "GPU" if isinstance(error, torch.OutOfMemoryError) else "CPU"
    return memory_advice.out_of_memory_message(where, config, step, peak, estimate)
