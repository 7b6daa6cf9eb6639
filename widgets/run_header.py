"""The dashboard's top lines: the run, its status, progress, ETA; then lr, grad norm, throughput and MFU."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from studio.formatting import format_count, format_duration
from studio.objectives import scores_line
from studio.run_folder.watch import RunView

STATUS_STYLES = {
    "damaged": "bold red",
    "running": "bold green",
    "starting": "yellow",
    "finished": "bold cyan",
    "stopped": "yellow",
    "failed": "bold red",
    "crashed": "bold red",
    "cancelled": "yellow",
    "created": "dim",
}


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def title_line(view: RunView) -> Text:
    percent = 100 * view.step / view.max_steps if view.max_steps else 0
    parts = [f"step {view.step}/{view.max_steps}", f"{percent:.0f}%"]
    if view.length:
        parts.append(view.length)
    if view.tokens_seen is not None:
        parts.append(f"tokens seen {format_count(view.tokens_seen)}")
    if view.eta_seconds is not None:
        parts.append(f"ETA {format_duration(view.eta_seconds)}")
    if view.skipped_lines:
        parts.append(f"{view.skipped_lines} damaged event lines skipped")
    return Text.assemble(
        ("run: ", "dim"),
        (view.name, "bold"),
        " · ",
        (view.status, STATUS_STYLES.get(view.status, "")),
        " · ",
        " · ".join(parts),
    )


def metrics_line(view: RunView) -> str:
    last = {name: series.last() for name, series in view.series.items()}
    tokens_per_s = last["tokens_per_s"]
    mfu = last["mfu"]
    # a CPU has no spec sheet: the trainer measures a matmul's speed and calls that the peak
    peak = " of a measured CPU matmul peak" if view.device == "cpu" and mfu is not None else ""
    return (
        f"lr {_number(last['lr'], '.2e')} ({view.schedule})   grad norm {_number(last['grad_norm'], '.3f')}   "
        f"tokens/s {'-' if tokens_per_s is None else format_count(tokens_per_s)}   "
        f"MFU {'-' if mfu is None else f'{100 * mfu:.1f}%'}{peak}   "
        f"train loss {_number(last['loss'], '.4f')}   val loss {_number(last['val_loss'], '.4f')}"
        + (f"   {scores}" if (scores := scores_line(view.charted, last)) else "")
        + (f"   {view.privacy}" if view.privacy else "")
    )


class RunHeader(Static):
    def show(self, view: RunView) -> None:
        self.update(Text("\n").join([title_line(view), Text(metrics_line(view))]))
