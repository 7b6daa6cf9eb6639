"""What to change when a run does not fit in memory, as one line: for the trainer's out-of-memory errors
(studio.train.memory) and for a trainer that ended without a word, as the system's out-of-memory killer ends one.

Torch-free: the CLI and the studio explain a crashed run from its events alone.
"""

from __future__ import annotations

from studio.config import RunConfig
from studio.formatting import format_bytes
from studio.objectives import objective_of

NEAR_THE_LIMIT = 0.7  # a killed trainer whose memory had reached this share of the machine's RAM: likely killed for it


def out_of_memory_message(
    where: str, config: RunConfig, step: int | None, peak: int | None = None, estimate: int | None = None
) -> str:
    """The one line for a run that ran out of `where`'s memory ("GPU" or "CPU"): where, when, how much, and what
    makes it fit (step None: while the data, model and optimizer were set up, before any step)."""
    amounts = [f"measured peak {format_bytes(peak)}"] if peak else []
    amounts += [f"estimated {format_bytes(estimate)}"] if estimate else []
    amounts_text = f" ({', '.join(amounts)})" if amounts else ""
    when = "while setting up" if step is None else f"at step {step}"
    return f"out of {where} memory {when} with {_shape(config)}{amounts_text}; {to_fit(config, where, step is None)}"


def killed_message(config: RunConfig, step: int, peak: int | None, expected: int | None, ram: int) -> str:
    """The line for a trainer that ended without an error event or a final status: killed from outside (SIGKILL
    leaves no chance to write one). When its memory, measured or expected, had come near the machine's RAM, the
    system's out-of-memory killer is the likely cause, and the levers follow."""
    reached = max(peak or 0, expected or 0)
    if reached < NEAR_THE_LIMIT * ram:
        return (
            f"the trainer ended at step {step} without a word (no error: killed from outside, or the machine went "
            "down); see trainer.log"
        )
    measured = f"a peak of {format_bytes(peak)}" if peak else f"an expected {format_bytes(expected or 0)}"
    return (
        f"the trainer was killed at step {step} without a word, training {_shape(config)} with {measured} of "
        f"this machine's {format_bytes(ram)} RAM: most likely by the system's out-of-memory killer; "
        f"{to_fit(config, 'CPU', setting_up=False)}"
    )


def _shape(config: RunConfig) -> str:
    return f"batch {config.train.batch_size} × context {config.model.block_size}"


def to_fit(config: RunConfig, where: str, setting_up: bool) -> str:
    """The levers that make a run fit: the chunked loss when it is off, batch, gradient accumulation, context,
    activation checkpointing, precision, and while setting up a smaller model."""
    train = config.train
    levers = []
    # the same loss for less: first (a private run reads whole logits whatever it is set to)
    if not train.chunked_loss and not train.private and not objective_of(config).classifies:
        levers.append("turn on the chunked loss (--set train.chunked_loss=true: the logits never whole)")
    levers += [
        "lower train.batch_size (raise train.grad_accum to keep the tokens per step)",
        "shorten model.block_size",
    ]
    if not train.activation_checkpointing:
        levers.append("turn on activation checkpointing (--set train.activation_checkpointing=true)")
    # "auto" is bf16 on a GPU (train.fast_path) and fp32 on a CPU
    half = train.mixed_precision in ("bf16", "fp16") or (train.mixed_precision == "auto" and where == "GPU")
    if not half:
        levers.append("train in bf16 (--mixed-precision bf16)")
    if setting_up:
        levers.append("choose a smaller model")
    already = " (it trains in half precision already)" if half else ""
    return f"to fit, {', '.join(levers[:-1])}, or {levers[-1]}{already}"
