"""What the trainer turns on for speed, decided from the device and the config alone (no torch here, so every
decision is a plain function that tests call with any device type).

On a CUDA GPU: bf16 autocast (where the GPU has bf16), TF32 for the fp32 matmuls left, torch.compile, and batches
in page-locked memory copied without waiting (`non_blocking`). On a CPU the defaults stay fp32 and eager, so a CPU
run computes exactly what it computed before them: compiling costs more time than it saves on the small models
CPUs train, TF32 does not exist and there is nothing to copy; bf16 autocast, faster on CPUs with AVX512-BF16,
changes the numbers and stays one `--mixed-precision bf16` away. `train.mixed_precision` and `train.compile` set to
anything but "auto" are obeyed on any device (docs/ARCHITECTURE.md, "The GPU fast path"). A differentially private
run's "auto" is fp32 and eager on any device: Opacus's per-example gradients are checked there (studio.train.privacy).
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.config import TrainConfig


@dataclass(frozen=True)
class FastPath:
    precision: str  # what Accelerate autocasts to: "no" (fp32), "bf16" or "fp16"
    tf32: bool  # fp32 matmuls on TF32 tensor cores (10-bit mantissa products, fp32 sums)
    compile: bool  # torch.compile the model (it falls back to eager when compiling fails)
    pin_memory: bool  # batches in page-locked host memory, so their copy to the GPU overlaps the work queued


def fast_path(device_type: str, train: TrainConfig, bf16_supported: bool) -> FastPath:
    """The fast path for a device of `device_type` ("cuda", "cpu", "mps"...) whose bf16 support is given."""
    cuda = device_type == "cuda"
    precision = train.mixed_precision
    if precision == "auto":
        precision = "bf16" if cuda and bf16_supported and not train.private else "no"
    compile = cuda and not train.private if train.compile == "auto" else train.compile == "true"
    return FastPath(precision=precision, tf32=cuda, compile=compile, pin_memory=cuda)
