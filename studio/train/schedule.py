"""Learning-rate schedules as a pure function of the step, so the studio can draw the curve without torch.

The trainer sets every parameter group's lr from `lr_at(step)` before each optimizer step. That keeps the
schedule independent of how many processes run (no scheduler object that Accelerate might step once per
process) and makes resume exact: the step alone fixes the learning rate.
"""

import math

from studio.config import TrainConfig


def lr_at(step: int, train: TrainConfig) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    if step < train.warmup_steps:  # linear warmup, never exactly 0 (nanoGPT's form)
        return train.lr * (step + 1) / (train.warmup_steps + 1)
    if train.schedule == "constant":
        return train.lr
    if train.schedule == "inverse_time":  # lr0 / (1 + k t), t counted from the end of warmup
        return train.lr / (1.0 + train.inverse_time_k * (step - train.warmup_steps))
    if train.schedule == "wsd":  # warmup, stable, then a linear decay over the last decay_fraction of steps
        decay_start = train.max_steps - int(train.decay_fraction * train.max_steps)
        if step < decay_start:
            return train.lr
        progress = (step - decay_start) / max(1, train.max_steps - decay_start)
        return train.lr - min(1.0, progress) * (train.lr - train.min_lr)
    progress = min(1.0, (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps))
    if train.schedule == "linear":
        return train.lr - progress * (train.lr - train.min_lr)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine: 1 -> 0
    return train.min_lr + coefficient * (train.lr - train.min_lr)


def lr_curve(train: TrainConfig, points: int = 200) -> list[tuple[int, float]]:
    """(step, lr) pairs spread over the run, for previews."""
    stride = max(1, train.max_steps // points)
    return [(step, lr_at(step, train)) for step in range(0, train.max_steps, stride)]
