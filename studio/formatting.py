"""Numbers and predictions as people read them: counts, bytes, ages, durations, a model's labels and fills.
Shared by the CLI and the studio."""

from __future__ import annotations

from typing import Any


def format_count(n: float) -> str:
    """123 -> "123", 1_234_567 -> "1.2M", 124_439_808 -> "124.4M"."""
    for limit, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{unit}"
    return str(int(n))


def counted(count: int, noun: str, plural: str = "") -> str:
    """1 -> "1 run", 2 -> "2 runs", 1234 -> "1,234 runs"; `plural` for a noun that does not just add an s."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def teacher_note(params: int) -> str:
    """A distillation teacher beside the model, as a memory line mentions it: with its size when known (not 0)."""
    return f", with a teacher of {format_count(params)} parameters" if params else ", with a teacher"


def format_bytes(n: float) -> str:
    """Powers of 1024 under the usual short names, as nvidia-smi and `free -h` count: 3.4 GB, 512.0 MB."""
    for power, unit in ((4, "TB"), (3, "GB"), (2, "MB"), (1, "KB")):
        if abs(n) >= 1024**power:
            return f"{n / 1024**power:.1f} {unit}"
    return f"{int(n)} B"


def format_memory(estimate: int | None, peak: int | None, measure: str | None, baseline: int | None) -> str:
    """A run's memory per process as its events report it (studio.train.memory): the estimate, plus on a CPU the
    runtime's measured baseline, beside the measured peak (the tensors' on a GPU, the process's RSS on a CPU)."""
    expected = "-" if estimate is None else format_bytes(estimate)
    if baseline and estimate is not None:
        expected = f"{expected} + {format_bytes(baseline)} runtime = {format_bytes(estimate + baseline)}"
    what = {"rss": " (process RSS)", "cuda_allocated": " (allocated tensors)"}.get(measure or "", "")
    return f"memory: estimated {expected} · measured peak {'-' if peak is None else format_bytes(peak)}{what}"


def format_age(seconds: float) -> str:
    """How long ago, in its largest whole unit: 42s, 5m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def format_duration(seconds: float) -> str:
    """A time left or taken: 4m05s, 1h07m."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def format_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_prediction(text: str, prediction: dict[str, Any]) -> str:
    """A prediction of studio.inference.predict as lines: the text, then its labels, or each [MASK]'s fills."""
    if "labels" in prediction:
        return f"{text}\n  " + "  ".join(f"{label} {p:.1%}" for label, p in prediction["labels"])
    lines = [text]
    for number, candidates in enumerate(prediction["fills"], start=1):
        lines.append(f"  [MASK] {number}: " + "  ".join(f"{token!r} {p:.1%}" for token, p in candidates))
    return "\n".join(lines)
